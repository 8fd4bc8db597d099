"""The exact bias/variance profile: REINFORCE is unbiased on-policy, a correct variant equals its
spec row, a loss that cannot run on one sequence gets a note, not a crash."""

from __future__ import annotations

import math

import pytest

from sims.check.profile import COLUMNS, ProfileConfig, bias_variance_profile, estimator_profile
from sims.check.specs import make_spec
from tests.sims.check import correct

CFG = ProfileConfig(horizons=(2, 3))


def test_reinforce_is_unbiased_on_policy_and_seq_is_off_policy():
    for row in estimator_profile(correct.reinforce, "reinforce", CFG):
        assert row["bias_on"] < 1e-12 and row["cos_on"] == pytest.approx(1.0, abs=1e-12) and row["var_on"] > 0
        assert row["bias_off"] > 1e-3  # no importance weight: biased off-policy
    for row in estimator_profile(correct.seq_is, "seq_is", CFG):
        assert row["bias_off"] < 1e-12


def test_a_correct_variant_has_its_spec_rows():
    r = bias_variance_profile(correct.cispo, spec=make_spec("cispo", group_size=4), cfg=CFG)
    rows = r.data["rows"]
    variant = [x for x in rows if x["estimator"] == "variant"]
    spec = [x for x in rows if x["estimator"] == "spec: cispo"]
    assert len(variant) == len(spec) == 2
    for a, b in zip(variant, spec):
        for c in COLUMNS[2:]:
            assert a[c] == pytest.approx(b[c], rel=1e-9, abs=1e-15)
    assert {x["estimator"] for x in rows} >= {"reinforce (default)", "cispo (default)", "gspo (default)"}
    assert "| estimator" in r.detail


def test_a_loss_that_needs_a_group_gets_a_note():
    def needs_two_rows(logp, old_logp, adv, mask):
        if logp.shape[0] < 2:
            raise ValueError("needs B >= 2")
        return correct.reinforce(logp, old_logp, adv, mask)

    rows = estimator_profile(needs_two_rows, "variant", CFG)
    assert all(math.isnan(r["bias_on"]) and "needs B >= 2" in r["note"] for r in rows)


def test_profile_config_rejects_bad_fields():
    with pytest.raises(ValueError, match="horizons=\\(\\) is invalid"):
        ProfileConfig(horizons=())
    with pytest.raises(ValueError, match="vocab=9 is invalid"):
        ProfileConfig(vocab=9)
    with pytest.raises(ValueError, match="kl=2.0 is invalid"):
        ProfileConfig(kl=2.0)


def test_the_registry_rows_are_computed_once_and_then_read_from_the_disk_cache(tmp_path, monkeypatch):
    import sims.check.profile as profile

    cfg = ProfileConfig(horizons=(2,))
    cache = profile.ProfileCache(tmp_path / "cache")
    assert cache.get(cfg) is None
    first = profile.registry_rows(cfg, cache)
    files = list((tmp_path / "cache").glob("profile-*.json"))
    assert len(files) == 1 and not list((tmp_path / "cache").glob(".*"))  # renamed into place

    def must_not_run(_cfg):
        raise AssertionError("recomputed although cached")

    monkeypatch.setattr(profile, "_compute_registry_rows", must_not_run)
    again = profile.registry_rows(cfg, cache)
    assert [r["estimator"] for r in again] == [r["estimator"] for r in first]
    assert all(math.isclose(a["bias_on"], b["bias_on"], rel_tol=1e-15) or (math.isnan(a["bias_on"]) and
               math.isnan(b["bias_on"])) for a, b in zip(again, first))
    # another config (or another code version: the key hashes the sources) is a miss, never a stale table
    assert cache.key(ProfileConfig(horizons=(3,))) != cache.key(cfg)
    with pytest.raises(AssertionError, match="recomputed"):
        profile.registry_rows(ProfileConfig(horizons=(3,)), cache)
    assert profile.ProfileCache(tmp_path / "off", enabled=False).get(cfg) is None
