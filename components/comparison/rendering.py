"""The comparison report as files: report.md, report.html, PNG figures, results.json and
summary.txt.

Pure: a `Comparison` and settings in, file contents out (see `report_files`). The report is
written once as a list of blocks (headings, paragraphs, lists, tables, figures) and
rendered to Markdown, which links the PNGs beside it, and to self-contained HTML, which
embeds them as data URIs and refers to nothing outside itself. The runs' further measures
(`RunResult.extra_metrics`, e.g. sharpness) get a table of their own, and so does what the
seeds can tell apart (`power_table`). The sentences on each gain and on the winner's lead follow
from the test and its power (`gain_line`): a difference that is not significant is never called
a tie or a match; it says how large a difference the seeds could have told apart and how many
seeds the target difference needs. `terminal_summary` (also summary.txt) is the plain-text
tables and sentences for a terminal.

Example (`runs`: a list of `comparison_stats.RunResult`):

    comparison = comparison_stats.compare(runs)
    files = report_files(comparison, {"budget": "equal-epochs", "epochs": 10})
    open("report.html", "wb").write(files["report.html"])
    print(terminal_summary(comparison))
"""

from __future__ import annotations

import base64
import html
import json
from typing import Any

from components.comparison import figures
from components.comparison.power import POWER, SIGNIFICANCE_LEVEL
from components.comparison.stats import Comparison, Estimate, MethodSummary, PairedGain

MISSING = "—"
MEASURES_TITLE = "Measures of the trained models (mean ± std over seeds)"
POWER_TITLE = "What the seeds can tell apart"
FIGURE_CAPTIONS = {
    "eval_accuracy.png": (
        "Validation accuracy per epoch (the Trainers' val_accuracy: on the eval split, or on the "
        "validation split held out of the training examples with --validation-split)"
    ),
    "training_loss.png": "Training loss per epoch",
    "surrogate_gap.png": "Surrogate gap per epoch (SAM and GSAM)",
    "rho_and_learning_rate.png": "rho and learning rate over training",
}
WINNER_RULE = (
    "Rule: the highest mean eval accuracy over seeds wins. Means equal to 4 decimals are a "
    "tie; a tie goes to the cheaper method (fewer forward-backward passes), then to the "
    "method listed first. The model passed on as best_model is the winner's best seed by "
    "eval accuracy (the lowest seed among equals). A lead that is not significant, or a tie, "
    "is no evidence that the methods differ or match: the winner's paired gains below say "
    "how large a difference its seeds could tell apart."
)


def report_files(comparison: Comparison, settings: dict[str, Any]) -> dict[str, bytes]:
    """Every file of the report: report.md, report.html, results.json, summary.txt, PNGs."""
    pngs = figures.figures(comparison.runs)
    blocks = report_blocks(comparison, settings)
    results = {"settings": settings, **comparison.to_dict()}
    return {
        "summary.txt": (terminal_summary(comparison) + "\n").encode(),
        "report.md": markdown(blocks).encode(),
        "report.html": html_page(blocks, pngs).encode(),
        "results.json": json.dumps(results, indent=1, ensure_ascii=False).encode(),
        **pngs,
    }


def results_table(comparison: Comparison) -> tuple[list[str], list[list[str]]]:
    """The header and one row per method of the results table."""
    header = [
        "method",
        "eval accuracy (mean ± std)",
        "n",
        "95% CI",
        f"gain over {comparison.reference} [95% CI]",
        "p (paired t)",
        "final surrogate gap",
        "training time",
        "forward-backward passes",
        "perturbed steps",
    ]
    rows = []
    for summary in comparison.methods:
        gain = summary.gain
        rows.append(
            [
                summary.method,
                _mean_std(summary.accuracy, ".4f"),
                str(summary.accuracy.n),
                _interval(summary.accuracy.interval, ".4f"),
                _gain(summary),
                MISSING if gain is None or gain.p_value is None else _p_value(gain.p_value),
                MISSING if summary.surrogate_gap is None else f"{summary.surrogate_gap:.4g}",
                f"{summary.training_seconds:.1f} s",
                f"{summary.passes:,.0f}",
                _percent(summary.perturbed_fraction),
            ]
        )
    return header, rows


def measures_table(comparison: Comparison) -> tuple[list[str], list[list[str]]] | None:
    """The runs' further measures (`RunResult.extra_metrics`, e.g. sharpness), mean ± std over
    seeds: one row per method, one column per measure; `None` when no run has any."""
    names = comparison.extra_metric_names
    if not names:
        return None
    rows = [
        [
            summary.method,
            *[
                _mean_std(summary.extra_metrics[name], ".4g")
                if name in summary.extra_metrics
                else MISSING
                for name in names
            ],
        ]
        for summary in comparison.methods
    ]
    return ["method", *names], rows


def power_table(comparison: Comparison) -> tuple[list[str], list[list[str]]]:
    """Per method against the reference: the paired seeds, the spread of their differences,
    the difference they detect with 80% power, and the seeds the target difference needs;
    in accuracy points."""
    target = _points(comparison.target_difference)
    header = [
        "method",
        f"paired seeds with {comparison.reference}",
        "std of paired differences (points)",
        f"detectable difference (points, {POWER:.0%} power)",
        f"seeds to tell apart {target} points",
    ]
    rows = []
    for summary in comparison.methods:
        if summary.method == comparison.reference:
            continue
        if summary.gain is None:
            rows.append([summary.method, "0", MISSING, MISSING, MISSING])
            continue
        power = summary.gain.power
        rows.append(
            [
                summary.method,
                str(power.seeds),
                MISSING if power.std is None else _points(power.std),
                MISSING
                if power.detectable_difference is None
                else _points(power.detectable_difference),
                MISSING if power.seeds_needed is None else str(power.seeds_needed),
            ]
        )
    return header, rows


def gain_line(method: str, gain: PairedGain) -> str:
    """`method`'s gain over `gain.reference`, its test, and what its seeds can tell apart.

    The verdict is one of: significant; not significant, and the seeds could not tell apart
    the target difference (how many would); not significant, though they could.
    """
    head = f"{method} vs {gain.reference}: {_signed(gain.gain.mean)}"
    if gain.p_value is None:
        return (
            f"{head} on one seed (seed {gain.seeds[0]}); no significance can be claimed from a "
            f"single seed, and no detectable difference can be computed: one seed has no "
            f"spread."
        )
    head += (
        f" (95% CI {_interval(gain.gain.interval, '+.4f')}) over {gain.gain.n} paired seeds; "
        f"paired t-test {_p_phrase(gain.p_value)}"
    )
    power = gain.power
    if gain.significant:
        return f"{head}: significant at {SIGNIFICANCE_LEVEL:.0%}; {_told_apart(power)}."
    if not power.powered:
        return f"{head}: not significant at {SIGNIFICANCE_LEVEL:.0%}, and {_lack_of_power(power)}."
    return (
        f"{head}: not significant at {SIGNIFICANCE_LEVEL:.0%}; {_told_apart(power)}, so a true "
        f"difference of {_points(power.target_difference)} points would most likely have shown."
    )


def _told_apart(power) -> str:
    """The differences that seeds with a detectable difference can tell apart."""
    if power.detectable_difference == 0:
        return f"the {power.seeds} paired differences are equal: any difference is told apart"
    return (
        f"with {power.seeds} seeds, differences of {_points(power.detectable_difference)} points "
        f"or more are told apart ({POWER:.0%} power)"
    )


def _lack_of_power(power) -> str:
    """What seeds that cannot tell apart the target difference can tell apart, and how many
    would."""
    return (
        f"differences below {_points(power.detectable_difference)} points cannot be told "
        f"apart with {power.seeds} seeds; about {power.seeds_needed} seeds would tell apart "
        f"{_points(power.target_difference)} points"
    )


def significance_lines(comparison: Comparison) -> list[str]:
    """One sentence per method on its gain over the reference (see `gain_line`)."""
    reference = comparison.reference
    return [
        f"{summary.method}: no seed in common with {reference}, no paired gain."
        if summary.gain is None
        else gain_line(summary.method, summary.gain)
        for summary in comparison.methods
        if summary.method != reference
    ]


def margin_lines(comparison: Comparison) -> list[str]:
    """The winner's paired gain over each other method, in the words of `gain_line`."""
    winner = comparison.winner.method
    return [
        f"{winner}: no seed in common with {method}, no paired gain."
        if margin is None
        else gain_line(winner, margin)
        for method, margin in comparison.margins.items()
    ]


def _tie_power_line(comparison: Comparison, method: str) -> str | None:
    """Whether the winner's tie with `method` is only a lack of power."""
    margin = comparison.margins[method]
    if margin is None:
        return None
    power = margin.power
    if power.powered is None:
        return (
            f"The tie with {method} is only a lack of power: with one seed no detectable "
            f"difference can be computed."
        )
    if not power.powered:
        return f"The tie with {method} is only a lack of power: {_lack_of_power(power)}."
    return f"The tie with {method} is not only a lack of power: {_told_apart(power)}."


def winner_lines(comparison: Comparison) -> list[str]:
    """Who won, why (including a tie, and whether it is only a lack of power), and which model
    is passed on."""
    winner = comparison.winner
    lines = [f"Winner: {winner.method}, mean eval accuracy {winner.accuracy.mean:.4f}."]
    others = comparison.tied[1:]
    if others:
        names = ", ".join(summary.method for summary in others)
        if all(summary.passes > winner.passes for summary in others):
            why = f"it needs fewer forward-backward passes ({winner.passes:,.0f} against " + (
                ", ".join(f"{s.method} {s.passes:,.0f}" for s in others) + ")"
            )
        else:
            why = "it is listed first among methods with as few forward-backward passes"
        lines.append(
            f"It ties with {names} at {winner.accuracy.mean:.4f} to 4 decimals and wins the "
            f"tie because {why}."
        )
        lines += filter(None, (_tie_power_line(comparison, s.method) for s in others))
    best = winner.best_run
    lines += [
        WINNER_RULE,
        f"best_model: {winner.method} seed {best.seed} (eval accuracy {best.eval_accuracy:.4f}).",
    ]
    return lines


TRAINED_HYPERPARAMETERS = (
    "epochs",
    "base_optimizer",
    "learning_rate",
    "rho_max",
    "rho_min",
    "alpha",
)


def hyperparameter_table(comparison: Comparison) -> tuple[list[str], list[list[str]]]:
    """What each method trained with, from its runs' recorded configs (tuned values too).

    A value that differs between a method's seeds is listed with every distinct value.
    """
    header = ["method", *TRAINED_HYPERPARAMETERS]
    rows = []
    for summary in comparison.methods:
        configs = [run.history.get("config", {}) for run in summary.runs]
        cells = []
        for name in TRAINED_HYPERPARAMETERS:
            values = list(dict.fromkeys(_trained_value(config, name) for config in configs))
            cells.append(" / ".join(values))
        rows.append([summary.method, *cells])
    return header, rows


def _trained_value(config: dict[str, Any], name: str) -> str:
    value = config.get(name)
    if name == "alpha" and config.get("optimizer") in ("plain", "sam"):
        return MISSING if config.get("optimizer") == "plain" else "0"
    if name.startswith("rho") and config.get("optimizer") == "plain":
        return MISSING
    return MISSING if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)


def per_class_table(comparison: Comparison) -> tuple[list[str], list[list[str]]]:
    """Mean per-class eval accuracy over seeds: one row per class, one column per method."""
    labels = {}
    for summary in comparison.methods:
        labels.update(dict.fromkeys(summary.per_class_accuracy))
    header = ["class", *[summary.method for summary in comparison.methods]]
    rows = [
        [
            label,
            *[
                f"{s.per_class_accuracy[label]:.4f}" if label in s.per_class_accuracy else MISSING
                for s in comparison.methods
            ],
        ]
        for label in labels
    ]
    return header, rows


def terminal_summary(comparison: Comparison) -> str:
    """The results table, the measures table (if any) and what the seeds can tell apart,
    with aligned columns; the significance sentences; the winner and its paired gains."""
    measures = measures_table(comparison)
    tables = _aligned(*results_table(comparison))
    if measures is not None:
        tables += ["", MEASURES_TITLE, *_aligned(*measures)]
    tables += ["", POWER_TITLE, *_aligned(*power_table(comparison))]
    winner, best = comparison.winner, comparison.winner.best_run
    return "\n".join(
        [
            *tables,
            "",
            *significance_lines(comparison),
            f"Winner: {winner.method} (mean eval accuracy {winner.accuracy.mean:.4f}); "
            f"best_model: seed {best.seed} ({best.eval_accuracy:.4f}).",
            *[f"  {line}" for line in margin_lines(comparison)],
        ]
    )


def _aligned(header: list[str], rows: list[list[str]]) -> list[str]:
    """A table as text lines: left-aligned columns two spaces apart, a rule under the header."""
    widths = [max(len(line[column]) for line in [header, *rows]) for column in range(len(header))]
    rule = ["-" * width for width in widths]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip()
        for line in [header, rule, *rows]
    ]


def report_blocks(comparison: Comparison, settings: dict[str, Any]) -> list[tuple]:
    """The report's content, for `markdown` and `html_page`."""
    methods = ", ".join(summary.method for summary in comparison.methods)
    seeds = sorted({run.seed for run in comparison.runs})
    return [
        ("h1", f"Comparison of {methods}"),
        (
            "p",
            f"{len(comparison.runs)} runs: seeds {', '.join(map(str, seeds))}. Eval accuracy "
            f"is the Evaluator's overall accuracy on the eval split.",
        ),
        ("h2", "Settings"),
        ("list", [f"{name}: {_setting(value)}" for name, value in settings.items()]),
        ("h2", "Results"),
        ("table", *results_table(comparison)),
        (
            "p",
            f"n: seeds per method. 95% CI: Student t interval of the mean over seeds. Gain: "
            f"eval accuracy minus {comparison.reference}'s on the same seed, mean [95% CI], "
            f"with a two-sided paired t-test. Final surrogate gap: last epoch, mean over seeds "
            f"({MISSING} for plain training, which has none). Training time: wall seconds of "
            f"the training epochs and forward-backward passes: whole training, both mean over "
            f"seeds. Perturbed steps: the share of training steps that ran the perturbed pass "
            f"(below 100% with perturb_every > 1 or auto; {MISSING} for plain training).",
        ),
        ("list", significance_lines(comparison)),
        ("h3", POWER_TITLE),
        ("table", *power_table(comparison)),
        ("p", POWER_NOTE),
        *_measures_blocks(comparison),
        ("h2", "Hyperparameters as trained"),
        ("table", *hyperparameter_table(comparison)),
        ("h2", "Winner"),
        *[("p", line) for line in winner_lines(comparison)],
        ("p", f"{comparison.winner.method}'s paired gain over each other method:"),
        ("list", margin_lines(comparison)),
        ("h2", "Per-class eval accuracy (mean over seeds)"),
        ("table", *per_class_table(comparison)),
        ("h2", "Figures"),
        *[("figure", name, caption) for name, caption in FIGURE_CAPTIONS.items()],
    ]


POWER_NOTE = (
    "Told apart: detected by the two-sided paired t-test at 5% with 80% power. The detectable "
    "difference is the true mean paired difference that these seeds detect with 80% power if "
    "the paired differences spread as much as they did here; the seeds needed are the fewest "
    "that detect the target difference so (set with --target-difference). Both come from the "
    "noncentral t distribution (scipy.stats.nct), exact for normally distributed "
    "differences, and take the observed spread as the true one: with few seeds that spread is "
    "itself uncertain (with 3 seeds its 95% interval runs from 0.52 to 6.3 times the "
    "observed), so read them as estimates. One seed has no spread, and neither number can be "
    "computed."
)


def _measures_blocks(comparison: Comparison) -> list[tuple]:
    """The measures section, or nothing when no run has further measures."""
    measures = measures_table(comparison)
    if measures is None:
        return []
    return [
        ("h2", MEASURES_TITLE),
        ("table", *measures),
        (
            "p",
            "Each run's model, measured once trained; mean ± std (ddof=1) over the seeds that "
            "have the measure, the mean alone for one seed. The measurement's settings are "
            "listed under Settings.",
        ),
    ]


HEADINGS = {"h1": 1, "h2": 2, "h3": 3}


def markdown(blocks: list[tuple]) -> str:
    """The blocks as Markdown; figures are links to the PNG files beside the report."""
    out = []
    for kind, *content in blocks:
        if kind in HEADINGS:
            out.append(f"{'#' * HEADINGS[kind]} {content[0]}")
        elif kind == "p":
            out.append(content[0])
        elif kind == "list":
            out.append("\n".join(f"- {item}" for item in content[0]))
        elif kind == "table":
            header, rows = content
            lines = [header, ["---"] * len(header), *rows]
            out.append("\n".join(f"| {' | '.join(line)} |" for line in lines))
        elif kind == "figure":
            name, caption = content
            out.append(f"![{caption}]({name})")
    return "\n\n".join(out) + "\n"


def html_page(blocks: list[tuple], pngs: dict[str, bytes]) -> str:
    """The blocks as one HTML page with the figures embedded: no external reference."""
    title = next(content[0] for kind, *content in blocks if kind == "h1")
    body = []
    for kind, *content in blocks:
        if kind in (*HEADINGS, "p"):
            body.append(f"<{kind}>{html.escape(content[0])}</{kind}>")
        elif kind == "list":
            items = "".join(f"<li>{html.escape(item)}</li>" for item in content[0])
            body.append(f"<ul>{items}</ul>")
        elif kind == "table":
            header, rows = content
            head = "".join(f"<th>{html.escape(cell)}</th>" for cell in header)
            cells = "".join(
                "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>"
                for row in rows
            )
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{cells}</tbody></table>")
        elif kind == "figure":
            name, caption = content
            data = base64.b64encode(pngs[name]).decode("ascii")
            body.append(
                f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(caption)}">'
                f"<figcaption>{html.escape(caption)}</figcaption></figure>"
            )
    style = (
        "body{font-family:sans-serif;max-width:70em;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;margin:1em 0}"
        "th,td{border:1px solid #bbb;padding:.3em .6em;text-align:right}"
        "th:first-child,td:first-child{text-align:left}img{max-width:100%}"
    )
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{style}</style></head>\n"
        f"<body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def _mean_std(estimate: Estimate, spec: str) -> str:
    if estimate.std is None:
        return format(estimate.mean, spec)
    return f"{estimate.mean:{spec}} ± {estimate.std:{spec}}"


def _interval(interval: tuple[float, float] | None, spec: str) -> str:
    return MISSING if interval is None else f"[{interval[0]:{spec}}, {interval[1]:{spec}}]"


def _gain(summary: MethodSummary) -> str:
    gain = summary.gain
    if gain is None:
        return MISSING
    if gain.gain.interval is None:
        return _signed(gain.gain.mean)
    return f"{_signed(gain.gain.mean)} {_interval(gain.gain.interval, '+.4f')}"


def _signed(difference: float) -> str:
    """A difference to 4 decimals with its sign; +0.0000 for float noise around 0."""
    return f"{round(difference, 4) + 0.0:+.4f}"


def _points(fraction: float) -> str:
    """An accuracy difference in points, e.g. 0.0155 as 1.55."""
    return f"{fraction * 100:.2f}"


def _percent(fraction: float | None) -> str:
    return MISSING if fraction is None else f"{100 * fraction:.1f}%"


def _p_value(p_value: float) -> str:
    return "< 0.001" if p_value < 0.001 else f"{p_value:.3f}"


def _p_phrase(p_value: float) -> str:
    return f"p {_p_value(p_value)}" if p_value < 0.001 else f"p = {_p_value(p_value)}"


def _setting(value) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value))
    return str(value)
