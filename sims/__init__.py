"""pgverify simulators: torch objectives, advantage estimators, aggregations, group filters,
KL estimators, named algorithms and their registries (later: engines, experiments, report, CLI)."""
