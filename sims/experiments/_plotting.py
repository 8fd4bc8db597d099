"""Shared figure style for every experiment: one look, one series cycle, one way to save.

* ``STYLE`` (matplotlib rcParams) — serif-free 8–9 pt text, light grid, no top/right spines,
  constrained layout, 200 dpi PNG output; ``new_figure`` applies it in a ``rc_context``.
* ``series(i)`` — the i-th series' colour, line style and marker. Colours are a colour-blind-safe
  qualitative palette (Okabe & Ito 2008, then Tol's "muted" scheme): ``N_SERIES`` colours, none
  repeated; each series also gets its own (line style, marker) pair, so a figure reads in
  greyscale too.
* ``Figure`` — a figure with its file stem and its caption (what to look at, what it shows). An
  experiment's ``figures(result)`` returns a list of them; the first is ``<experiment>.png``, the
  others ``<experiment>_<suffix>.png``. ``write(figures, directory)`` saves them all.

No hand-tuned offsets: layout is matplotlib's constrained layout; legends go where
``loc="best"`` finds no data, or outside the axes (``legend_outside``).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

DPI = 200  # PNG resolution: sharp in a PDF at column width

# Okabe-Ito (without yellow, too pale on white) followed by Tol "muted"; all distinct
PALETTE = (
    "#0072B2",  # blue
    "#D55E00",  # vermillion
    "#009E73",  # bluish green
    "#CC79A7",  # reddish purple
    "#E69F00",  # orange
    "#56B4E9",  # sky blue
    "#000000",  # black
    "#882255",  # wine
    "#999933",  # olive
    "#332288",  # indigo
    "#44AA99",  # teal
    "#AA4499",  # purple
)
LINESTYLES = ("-", "--", "-.", ":", (0, (5, 1)), (0, (3, 1, 1, 1, 1, 1)),
              (0, (1, 1)), (0, (5, 2, 1, 2)), (0, (8, 2)), (0, (2, 2)), (0, (4, 1, 1, 1)), (0, (6, 3, 2, 3)))
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h", "*", "p")
N_SERIES = len(PALETTE)

STYLE: dict[str, Any] = {
    "figure.constrained_layout.use": True,
    "figure.dpi": 100,
    "savefig.dpi": DPI,
    "font.size": 8.5,
    "axes.titlesize": 9,
    "axes.labelsize": 8.5,
    "xtick.labelsize": 7.5,
    "ytick.labelsize": 7.5,
    "legend.fontsize": 7,
    "legend.framealpha": 0.85,
    "legend.edgecolor": "0.8",
    "axes.grid": True,
    "grid.color": "0.9",
    "grid.linewidth": 0.6,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.axisbelow": True,
    "lines.linewidth": 1.5,
    "lines.markersize": 4,
    "errorbar.capsize": 2,
}


def _cycle():
    from cycler import cycler

    return cycler(color=list(PALETTE)) + cycler(linestyle=list(LINESTYLES)) + cycler(marker=list(MARKERS))


def series(i: int) -> dict[str, Any]:
    """Colour, line style and marker of series ``i`` (0-based; raises past ``N_SERIES``, since a
    figure with more series than distinct colours must be split)."""
    if not 0 <= i < N_SERIES:
        raise ValueError(f"series index {i} out of range: at most {N_SERIES} series per axes")
    return {"color": PALETTE[i], "linestyle": LINESTYLES[i], "marker": MARKERS[i]}


def line_kw(i: int, *, marker: bool = True, markevery=None) -> dict[str, Any]:
    """``ax.plot`` keywords of series ``i``."""
    kw = series(i)
    if not marker:
        kw["marker"] = "None"
    elif markevery is not None:
        kw["markevery"] = markevery
    return kw


@dataclass
class Figure:
    """A finished matplotlib figure, the stem of its file, and its caption."""

    stem: str
    figure: Any
    caption: str


@contextlib.contextmanager
def style() -> Iterator[None]:
    """The project style (``STYLE``) for the figures made inside the block."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rc = dict(STYLE, **{"axes.prop_cycle": _cycle()})  # colour, line style and marker in step
    with plt.rc_context(rc):
        yield


def new_figure(nrows: int = 1, ncols: int = 1, *, width: float = 6.5, height: float = 2.8, **kwargs):
    """``plt.subplots`` with constrained layout; ``width``/``height`` in inches for the whole
    figure (6.5 in is a paper's text width). Call inside ``style()``."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(nrows, ncols, figsize=(width, height), squeeze=False, layout="constrained", **kwargs)
    return fig, axes


def legend_outside(fig, axes, *, ncol: int | None = None, **kwargs):
    """One legend for the whole figure, below the axes (handles from the first axes that has
    them, deduplicated by label)."""
    handles, labels = [], []
    for ax in (axes if isinstance(axes, (list, tuple)) else list(getattr(axes, "flat", [axes]))):
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels and not lab.startswith("_"):
                handles.append(h)
                labels.append(lab)
    return fig.legend(handles, labels, loc="outside lower center", ncol=ncol or min(len(labels), 4), **kwargs)


def write(figures: list[Figure], directory: str | Path) -> dict[str, str]:
    """Save every figure as ``<directory>/<stem>.png`` and close it; returns {file name: caption}."""
    import matplotlib.pyplot as plt

    out = {}
    directory = Path(directory)
    for f in figures:
        name = f"{f.stem}.png"
        f.figure.savefig(directory / name, dpi=DPI)
        plt.close(f.figure)
        out[name] = f.caption
    return out


def plot_to(figures: list[Figure], path: str | Path) -> dict[str, str]:
    """The ``plot(result, path)`` convention: the first figure at ``path``, the others beside it
    as ``<path stem>_<suffix>.png`` (suffix = the part of the stem after the experiment's name)."""
    import matplotlib.pyplot as plt

    path = Path(path)
    first = figures[0].stem
    out = {}
    for f in figures:
        target = path if f.stem == first else path.with_name(f"{path.stem}{f.stem[len(first):]}.png")
        f.figure.savefig(target, dpi=DPI)
        plt.close(f.figure)
        out[target.name] = f.caption
    return out


def fmt(x: float, digits: int = 3) -> str:
    """A number for a caption: ``digits`` significant figures, no trailing noise."""
    return f"{x:.{digits}g}"


def join(items) -> str:
    """'a', 'a and b', 'a, b and c'."""
    items = [str(i) for i in items]
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]
