"""Every experiment's figures are fit for a paper: labelled axes, one style per series, no symlog
on a magnitude, readable ticks, legends off the data, a caption each (``_plotting`` conventions).

The checks read the matplotlib objects each ``figures(result)`` returns on the tiny sweep, so a
figure that breaks a rule fails here, not in review.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.collections import PolyCollection  # noqa: E402
from matplotlib.colors import to_hex  # noqa: E402
from matplotlib.container import BarContainer, ErrorbarContainer  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from sims.experiments import EXPERIMENTS  # noqa: E402
from sims.experiments import _plotting  # noqa: E402

pytestmark = pytest.mark.slow

MIN_TICK_PT = 6.0  # smallest readable tick label in a printed figure


@pytest.fixture(scope="module")
def all_figures(tiny_experiments):
    out = {name: EXPERIMENTS[name].figures(res) for name, res in tiny_experiments.items()}
    yield out
    plt.close("all")


def _axes(fig):
    return [ax for ax in fig.axes if ax.get_visible()]


def _series(ax):
    """(kind, style) of every legend entry of ``ax``: lines by (colour, line style, marker),
    patches by (colour, hatch)."""
    out = []
    handles, labels = ax.get_legend_handles_labels()
    for h, lab in zip(handles, labels):
        if isinstance(h, ErrorbarContainer):
            h = h.lines[0]
        if isinstance(h, Line2D):
            out.append((lab, "line", (to_hex(h.get_color()), str(h.get_linestyle()), str(h.get_marker()))))
        elif isinstance(h, BarContainer):
            p = h.patches[0]
            out.append((lab, "patch", (to_hex(p.get_facecolor()), str(p.get_hatch()))))
        elif isinstance(h, PolyCollection):
            out.append((lab, "patch", (to_hex(h.get_facecolor()[0]), str(h.get_hatch()))))
    return out


def _labelled(ax, which: str) -> bool:
    """The axis has a label, or categorical tick labels, or shares the axis with an axes in the
    same column (x) / row (y) that has a label."""
    axis = ax.xaxis if which == "x" else ax.yaxis
    if axis.get_label_text().strip():
        return True
    ticks = [t.get_text() for t in axis.get_ticklabels() if t.get_text()]
    if ticks and not all(_numeric(t) for t in ticks):
        return True
    shared = ax.get_shared_x_axes() if which == "x" else ax.get_shared_y_axes()
    return any(other is not ax and shared.joined(ax, other) and
               (other.xaxis if which == "x" else other.yaxis).get_label_text().strip()
               for other in ax.figure.axes)


def _numeric(text: str) -> bool:
    t = text.replace("−", "-").replace("$", "").replace("\\mathdefault", "").replace("{", "").replace("}", "")
    t = t.replace("^", "e").replace("10e", "1e")
    try:
        float(t)
        return True
    except ValueError:
        return False


def test_palette_has_no_repeated_colour_or_style():
    styles = [_plotting.series(i) for i in range(_plotting.N_SERIES)]
    assert len({s["color"] for s in styles}) == _plotting.N_SERIES
    assert len({(str(s["linestyle"]), s["marker"]) for s in styles}) == _plotting.N_SERIES
    with pytest.raises(ValueError):
        _plotting.series(_plotting.N_SERIES)


@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_figures_have_stems_and_captions(all_figures, name):
    figs = all_figures[name]
    assert figs and figs[0].stem == name
    stems = [f.stem for f in figs]
    assert len(set(stems)) == len(stems) and all(s == name or s.startswith(name + "_") for s in stems)
    for f in figs:
        assert len(f.caption) > 80, f.stem
        assert "['" not in f.caption and "{'" not in f.caption and "nan" not in f.caption.split(), f.stem


@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_every_axes_has_labelled_x_and_y(all_figures, name):
    for f in all_figures[name]:
        for ax in _axes(f.figure):
            assert _labelled(ax, "x"), (f.stem, ax.get_title(), "x")
            assert _labelled(ax, "y"), (f.stem, ax.get_title(), "y")


@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_no_two_series_share_a_style(all_figures, name):
    for f in all_figures[name]:
        for ax in _axes(f.figure):
            series = _series(ax)
            for kind in ("line", "patch"):
                styles = [s for _, k, s in series if k == kind]
                assert len(set(styles)) == len(styles), (f.stem, ax.get_title(), series)
                colours = [s[0] for s in styles]
                assert len(set(colours)) == len(colours), (f.stem, ax.get_title(), "reused colour", series)


@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_no_symlog_axes(all_figures, name):
    for f in all_figures[name]:
        for ax in _axes(f.figure):
            assert "symlog" not in (ax.get_xscale(), ax.get_yscale()), f.stem


@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_tick_labels_are_readable_and_do_not_overlap(all_figures, name):
    for f in all_figures[name]:
        f.figure.canvas.draw()
        renderer = f.figure.canvas.get_renderer()
        for ax in _axes(f.figure):
            for axis in (ax.xaxis, ax.yaxis):
                labels = [t for t in axis.get_ticklabels() if t.get_visible() and t.get_text()]
                assert all(t.get_fontsize() >= MIN_TICK_PT for t in labels), f.stem
                boxes = [t.get_window_extent(renderer) for t in labels]
                for a, b in zip(boxes, boxes[1:]):
                    overlap = a.overlaps(b) and (a.intersection(a, b) is not None)
                    if overlap:
                        inter = a.intersection(a, b)
                        assert inter.width * inter.height < 0.05 * min(a.width * a.height, b.width * b.height), (
                            f.stem, ax.get_title(), [t.get_text() for t in labels])


@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_legends_inside_axes_do_not_cover_data(all_figures, name):
    for f in all_figures[name]:
        f.figure.canvas.draw()
        renderer = f.figure.canvas.get_renderer()
        for ax in _axes(f.figure):
            legend = ax.get_legend()
            if legend is None:
                continue
            box = legend.get_window_extent(renderer)
            for line in ax.get_lines():
                xy = line.get_xydata()
                if not len(xy):
                    continue
                xy = np.asarray(xy, dtype=float)
                xy = xy[np.isfinite(xy).all(1)]
                pts = ax.transData.transform(xy)
                inside = ((pts[:, 0] > box.x0) & (pts[:, 0] < box.x1) & (pts[:, 1] > box.y0) & (pts[:, 1] < box.y1))
                assert not inside.any(), (f.stem, ax.get_title(), line.get_label())


def test_plot_writes_every_figure(tiny_experiments, tmp_path):
    res = tiny_experiments["bias_variance"]
    written = EXPERIMENTS["bias_variance"].plot(res, tmp_path / "bv.png")
    assert set(written) == {"bv.png", "bv_ratio.png", "bv_long.png", "bv_long_ratio.png"}
    assert all((tmp_path / n).stat().st_size > 1000 for n in written)
