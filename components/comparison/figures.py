"""The comparison report's figures: PNG bytes from the runs' training histories.

One line per method: the mean over seeds at each epoch, with a band from the lowest to the
highest seed. Methods that do not log a quantity (plain training has no surrogate gap or
rho) are left out of its plot. Figures are drawn on matplotlib's Agg canvas through
`matplotlib.figure.Figure`, so nothing touches pyplot's global state or a display, and
the PNGs carry no software-version metadata.

Example (`runs`: a list of `comparison_stats.RunResult`):

    pngs = figures(runs)
    open("eval_accuracy.png", "wb").write(pngs["eval_accuracy.png"])
"""

from __future__ import annotations

import io
from typing import Sequence

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from components.comparison.stats import RunResult

WIDTH_INCHES, HEIGHT_INCHES, DPI = 8.0, 4.5, 100
# File name -> (title, [(history field, axis label), ...]): one panel per field.
FIGURES = {
    "eval_accuracy.png": ("Eval accuracy per epoch", [("val_accuracy", "eval accuracy")]),
    "training_loss.png": ("Training loss per epoch", [("loss", "training loss")]),
    "surrogate_gap.png": ("Surrogate gap per epoch", [("surrogate_gap", "surrogate gap")]),
    "rho_and_learning_rate.png": (
        "rho and learning rate at the end of each epoch",
        [("rho", "rho"), ("learning_rate", "learning rate")],
    ),
}


def figures(runs: Sequence[RunResult]) -> dict[str, bytes]:
    """Every figure of `FIGURES` as PNG bytes, `WIDTH_INCHES` x `HEIGHT_INCHES` at `DPI`."""
    methods: dict[str, list[RunResult]] = {}
    for run in runs:
        methods.setdefault(run.method, []).append(run)
    return {name: _figure(title, panels, methods) for name, (title, panels) in FIGURES.items()}


def _figure(title: str, panels, methods: dict[str, list[RunResult]]) -> bytes:
    figure = Figure(figsize=(WIDTH_INCHES, HEIGHT_INCHES), dpi=DPI, layout="constrained")
    figure.suptitle(f"{title} (mean over seeds; band: min to max)")
    for axes, (field, label) in zip(figure.subplots(1, len(panels), squeeze=False)[0], panels):
        drawn = False
        for color, (method, method_runs) in enumerate(methods.items()):
            series = _series(method_runs, field)
            if not series:
                continue
            epochs, means, lows, highs = zip(*series)
            axes.plot(epochs, means, color=f"C{color}", label=f"{method} (n={len(method_runs)})")
            axes.fill_between(epochs, lows, highs, color=f"C{color}", alpha=0.2, linewidth=0)
            drawn = True
        axes.set_xlabel("epoch")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_ylabel(label)
        if drawn:
            axes.legend()
        else:
            axes.text(0.5, 0.5, f"no run logged {field}", ha="center", transform=axes.transAxes)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def _series(runs: Sequence[RunResult], field: str) -> list[tuple[int, float, float, float]]:
    """(epoch, mean, min, max) over the runs, at the epochs where every run logged `field`."""
    by_run = [{e["epoch"]: e[field] for e in run.epochs if field in e} for run in runs]
    common = sorted(set.intersection(*(set(values) for values in by_run)))
    series = []
    for epoch in common:
        values = [values_by_epoch[epoch] for values_by_epoch in by_run]
        series.append((epoch, sum(values) / len(values), min(values), max(values)))
    return series
