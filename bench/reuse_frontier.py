"""The reuse frontier: forward-backward passes against accuracy, for perturb_every k and "auto".

Reads what a comparison's Trainers left in its output folder (`--output-dir` of
`pipelines.local_runner --compare`), one setting per folder, so an interrupted comparison
still counts its finished runs: for each `Trainer.<method>.seed<N>`, the `history.json` of its
newest execution that trained all its epochs. Per method it prints and writes:

- passes: forward-backward passes over the run (the history counts them), the mean over seeds;
- perturbed: the share of steps that ran the perturbed pass;
- step time / plain: from a `bench.step_time` JSON (`--step-time`), its ResNet-20 row without
  jit: the ratio measured side by side with plain in that run;
- eval accuracy: the last epoch's `val_accuracy` (the whole eval split, the number the
  Evaluator reports), mean ± std over seeds;
- the difference against exact GSAM (`--reference`) and against plain, paired by seed: mean,
  95% t interval and p of a paired t-test (`components.comparison.stats.PairedGain`).

Usage:

```
python -m pipelines.local_runner --compare --methods plain,gsam,gsam-k5,gsam-k10,gsam-auto \\
    --output-dir /tmp/frontier --enable-cache
python -m bench.reuse_frontier /tmp/frontier --step-time bench/results/step_time.json
```
"""

import argparse
import json
import os
import re

from bench import report
from components.comparison import stats
from trainer.training import history

TRAINER = re.compile(r"^Trainer\.(?P<method>[\w-]+)\.seed(?P<seed>\d+)$")
SETTING_FIELDS = ("input_size", "alpha", "rho_max", "rho_min", "epochs", "learning_rate")
DEFAULT_OUTPUT = os.path.join("bench", "results", "reuse_frontier.json")


def finished_runs(output_dir: str) -> list[stats.RunResult]:
    """Each method × seed's newest finished Trainer run in a comparison's output folder."""
    pipeline_root = os.path.join(output_dir, "pipeline")
    if not os.path.isdir(pipeline_root):
        raise FileNotFoundError(f"{output_dir} holds no pipeline/ folder of a comparison.")
    runs = []
    for name in sorted(os.listdir(pipeline_root)):
        match = TRAINER.match(name)
        if match is None:
            continue
        document = _newest_finished_history(os.path.join(pipeline_root, name))
        if document is None:
            continue
        runs.append(
            stats.RunResult(
                method=match["method"],
                seed=int(match["seed"]),
                eval_accuracy=document["epochs"][-1]["val_accuracy"],
                per_class_accuracy={},
                history=document,
            )
        )
    if not runs:
        raise ValueError(f"{output_dir} holds no finished Trainer run.")
    return runs


def _newest_finished_history(trainer_dir: str) -> dict | None:
    """The history of the newest execution that trained all its epochs (an interrupted one
    did not), or `None`."""
    runs_dir = os.path.join(trainer_dir, "model_run")
    executions = (
        [int(e) for e in os.listdir(runs_dir) if e.isdigit()] if os.path.isdir(runs_dir) else []
    )
    for execution in sorted(executions, reverse=True):
        path = os.path.join(runs_dir, str(execution), history.HISTORY_FILE)
        if not os.path.exists(path):
            continue
        document = history.read_history(path)
        if len(document["epochs"]) == document["config"]["epochs"]:
            return document
    return None


def step_time_ratios(path: str | None) -> dict[str, float]:
    """Each method's step time over plain's, from a `bench.step_time` JSON (ResNet-20, jit off)."""
    if path is None:
        return {}
    with open(path) as f:
        rows = json.load(f)["rows"]
    for row in rows:
        if row["model"] == "resnet20" and not row["jit_compile"]:
            return {
                name.removesuffix("/plain"): ratio
                for name, ratio in row["ratios"].items()
                if name.endswith("/plain")
            } | {"plain": 1.0}
    raise ValueError(f"{path} has no ResNet-20 row without jit.")


def frontier(runs, reference: str, ratios: dict[str, float]) -> list[dict]:
    """One row per method, the most forward-backward passes first."""
    by_method = {}
    for run in runs:
        by_method.setdefault(run.method, []).append(run)
    rows = []
    for method, method_runs in by_method.items():
        fractions = [run.perturbed_fraction for run in method_runs]
        rows.append({
            "method": method,
            "seeds": [run.seed for run in method_runs],
            "passes": sum(run.passes for run in method_runs) / len(method_runs),
            "perturbed_fraction": (
                None if None in fractions else sum(fractions) / len(fractions)
            ),
            "step_time_to_plain": ratios.get(method),
            "training_seconds": [run.training_seconds for run in method_runs],
            "eval_accuracy": stats.Estimate.of([r.eval_accuracy for r in method_runs]).to_dict(),
            **{
                f"minus_{other}": _paired(method_runs, by_method.get(other), method == other)
                for other in (reference, stats.REFERENCE_METHOD)
            },
        })  # fmt: skip
    return sorted(rows, key=lambda row: -row["passes"])


def _paired(runs, reference_runs, same) -> dict | None:
    if same or not reference_runs:
        return None
    gain = stats.PairedGain.between(runs, reference_runs)
    return None if gain is None else gain.to_dict()


def markdown(rows: list[dict], reference: str) -> str:
    """The frontier as the README's tables show it."""
    header = [
        "method", "passes", "perturbed", "step time / plain", "eval accuracy",
        f"− {reference}, paired [95% CI], p", "− plain, paired",
    ]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for row in rows:
        accuracy = row["eval_accuracy"]
        spread = "" if accuracy["std"] is None else f" ± {accuracy['std']:.4f}"
        fraction = row["perturbed_fraction"]
        ratio = row["step_time_to_plain"]
        lines.append("| " + " | ".join([
            row["method"],
            f"{row['passes']:,.0f}",
            "—" if fraction is None else f"{fraction:.1%}",
            "—" if ratio is None else f"{ratio:.2f}",
            f"{accuracy['mean']:.4f}{spread} (n {accuracy['n']})",
            _gain_text(row[f"minus_{reference}"]),
            _gain_text(row[f"minus_{stats.REFERENCE_METHOD}"]),
        ]) + " |")  # fmt: skip
    return "\n".join(lines)


def _gain_text(gain: dict | None) -> str:
    if gain is None:
        return "—"
    estimate = gain["gain"]
    text = f"{estimate['mean']:+.4f}"
    if estimate["interval"] is not None:
        low, high = estimate["interval"]
        text += f" [{low:+.4f}, {high:+.4f}], {gain['p_value']:.2f}"
    return text + ("" if len(gain["seeds"]) > 1 else " (1 seed)")


def setting(runs) -> dict:
    """The training settings the runs share (from their histories' configs)."""
    configs = [run.history["config"] for run in runs]
    return {
        field: configs[0].get(field)
        for field in SETTING_FIELDS
        if all(c.get(field) == configs[0].get(field) for c in configs)
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output_dir", help="a comparison's --output-dir")
    parser.add_argument("--reference", default="gsam", help="the method the others pair with")
    parser.add_argument("--step-time", help="a bench.step_time JSON for the step-time column")
    parser.add_argument("--output", default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    runs = finished_runs(args.output_dir)
    rows = frontier(runs, args.reference, step_time_ratios(args.step_time))
    print(setting(runs))
    print(markdown(rows, args.reference))
    report.write(
        {**report.machine(), "output_dir": args.output_dir, "setting": setting(runs),
         "reference": args.reference, "rows": rows},
        args.output,
    )  # fmt: skip


if __name__ == "__main__":
    main()
