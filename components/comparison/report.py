"""ComparisonReport: one report over every run of a comparison, and the winner's model.

The component takes, for each run (method, seed), the Trainer's `model` and `model_run`, the
run's Evaluator `evaluation` and, optionally, its SharpnessProbe's `sharpness`. The number of
runs is known when the pipeline is built, so `comparison_report` builds a component spec with
one named input per run and kind, e.g. `model__gsam__seed1`, `model_run__gsam__seed1`,
`evaluation__gsam__seed1` and `sharpness__gsam__seed1`. These are
plain single channels, which every orchestrator compiles (Kubeflow V2 / Vertex reject union
channels), and the runs stay independent: the report is their only common consumer.

Outputs:

* `report` (`ComparisonReportArtifact`): report.md, report.html (self-contained), the PNG
  figures and results.json (see `comparison_rendering`);
* `best_model` (Model): a copy of the winning method's best seed's model, for an Evaluator
  against the last blessed model and a Pusher;
* `best_model_run` (ModelRun): that run's `history.json`, which says how it trained (the
  VertexPusher labels the registry version with it).

All three carry the winner as custom properties `winner_method`, `winner_seed` and
`winner_eval_accuracy` (that seed's).

The executor reads each run's `history.json` from its ModelRun (`trainer/training/history.py`), its
eval accuracy, overall and per class (slices on the label feature), from the evaluation with
`tfma.load_metrics`, and the sharpness of its model from the probe's `sharpness.json`
(`read_sharpness`: the report's sharpness columns).

Example:

    report = comparison_report(
        {(method, seed): {"model": trainers[method, seed].outputs["model"],
                          "model_run": trainers[method, seed].outputs["model_run"],
                          "evaluation": evaluators[method, seed].outputs["evaluation"]}
         for method, seed in trainers},
        settings={"budget": "equal-epochs", "epochs": 10, "label noise": 0.3},
        label_key="label",
        target_difference=0.005,
    )
    release_stage(examples, report.outputs["best_model"], ...)
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, Mapping

import tensorflow_model_analysis as tfma
from tfx import types
from tfx.dsl.components.base import base_component, base_executor, executor_spec
from tfx.types import artifact_utils, standard_artifacts
from tfx.types.component_spec import ChannelParameter, ExecutionParameter
from tfx.utils import io_utils

from components.comparison import rendering, stats
from components.comparison.artifact import ComparisonReportArtifact
from components.comparison.power import DEFAULT_TARGET_DIFFERENCE, check_target_difference
from components.sharpness.probe import SharpnessReport, read_report
from trainer.training import history

COMPONENT_ID = "ComparisonReport"
ACCURACY_METRIC = "sparse_categorical_accuracy"
# What each run feeds the report, by input kind.
RUN_INPUTS = {
    "model": standard_artifacts.Model,
    "model_run": standard_artifacts.ModelRun,
    "evaluation": standard_artifacts.ModelEvaluation,
}
# What a run may also feed it: its SharpnessProbe's report.
OPTIONAL_RUN_INPUTS = {"sharpness": SharpnessReport}
METHOD_PATTERN = re.compile(r"[a-z][a-z0-9_-]*")


def input_key(kind: str, method: str, seed: int) -> str:
    """The component input of one run's `kind`, e.g. `model__gsam__seed1` (`-` in a method
    name becomes `_`: input names are identifiers)."""
    return f"{kind}__{method.replace('-', '_')}__seed{seed}"


def comparison_report(
    runs: Mapping[tuple[str, int], Mapping[str, types.BaseChannel]],
    settings: Mapping[str, Any],
    label_key: str = "label",
    target_difference: float = DEFAULT_TARGET_DIFFERENCE,
):
    """The `ComparisonReport` component over `runs`.

    Args:
        runs: for each (method, seed), the channels `model` (Model), `model_run` (ModelRun),
            `evaluation` (ModelEvaluation) and optionally `sharpness` (the run's
            SharpnessProbe's SharpnessReport). Methods are lower-case identifiers; seeds
            integers >= 0. Their order is the order of the report's rows.
        settings: what the report lists under Settings (budget, epochs, label noise, ...);
            JSON-serializable values.
        label_key: the label feature whose evaluation slices give per-class accuracy.
        target_difference: the accuracy difference, in (0, 1), whose seeds needed the report
            gives for each paired gain (0.01: one point).
    """
    if not runs:
        raise ValueError("runs must hold at least one (method, seed) run.")
    inputs = {}
    input_types = {**RUN_INPUTS, **OPTIONAL_RUN_INPUTS}
    for run, channels in runs.items():
        method, seed = _check_run(run)
        if not isinstance(channels, Mapping) or not (
            set(RUN_INPUTS) <= set(channels) <= set(input_types)
        ):
            raise ValueError(
                f"runs[{run!r}] must map exactly {', '.join(RUN_INPUTS)} (and optionally "
                f"{', '.join(OPTIONAL_RUN_INPUTS)}) to channels, "
                f"got {sorted(channels) if isinstance(channels, Mapping) else channels!r}."
            )
        for kind, channel in channels.items():
            artifact_type = input_types[kind]
            if getattr(channel, "type", None) is not artifact_type:
                raise ValueError(
                    f"runs[{run!r}][{kind!r}] must be a channel of {artifact_type.TYPE_NAME}, "
                    f"got {channel!r}."
                )
            inputs[input_key(kind, method, seed)] = channel
    if not isinstance(settings, Mapping):
        raise ValueError(f"settings must be a mapping, got {type(settings).__name__}.")
    try:
        settings_json = json.dumps(dict(settings))
    except TypeError as error:
        raise ValueError(f"settings must hold JSON values only: {error}") from error
    if not isinstance(label_key, str) or not label_key:
        raise ValueError(f"label_key must be a non-empty string, got {label_key!r}.")
    target_difference = check_target_difference(target_difference)

    spec_class = type(
        "ComparisonReportSpec",
        (types.ComponentSpec,),
        {
            "PARAMETERS": {
                "runs": ExecutionParameter(type=str),
                "settings": ExecutionParameter(type=str),
                "label_key": ExecutionParameter(type=str),
                "target_difference": ExecutionParameter(type=float),
            },
            "INPUTS": {key: ChannelParameter(type=channel.type) for key, channel in inputs.items()},
            "OUTPUTS": {
                "report": ChannelParameter(type=ComparisonReportArtifact),
                "best_model": ChannelParameter(type=standard_artifacts.Model),
                "best_model_run": ChannelParameter(type=standard_artifacts.ModelRun),
            },
        },
    )
    component_class = type(
        COMPONENT_ID,
        (base_component.BaseComponent,),
        {
            "SPEC_CLASS": spec_class,
            "EXECUTOR_SPEC": executor_spec.ExecutorClassSpec(ComparisonReportExecutor),
            "__doc__": "Renders the comparison report and copies the winner's model.",
        },
    )
    spec = spec_class(
        runs=json.dumps([list(run) for run in runs]),
        settings=settings_json,
        label_key=label_key,
        target_difference=target_difference,
        report=types.Channel(type=ComparisonReportArtifact),
        best_model=types.Channel(type=standard_artifacts.Model),
        best_model_run=types.Channel(type=standard_artifacts.ModelRun),
        **inputs,
    )
    return component_class(spec=spec)


class ComparisonReportExecutor(base_executor.BaseExecutor):
    """Reads every run, writes the report files, and copies the winner's model."""

    def Do(self, input_dict, output_dict, exec_properties) -> None:
        self._log_startup(input_dict, output_dict, exec_properties)
        label_key = exec_properties["label_key"]
        uris = {
            key: artifact_utils.get_single_uri(artifacts) for key, artifacts in input_dict.items()
        }
        results = [
            read_run(
                method,
                seed,
                model_run_uri=uris[input_key("model_run", method, seed)],
                evaluation_uri=uris[input_key("evaluation", method, seed)],
                label_key=label_key,
                sharpness_uri=uris.get(input_key("sharpness", method, seed)),
            )
            for method, seed in json.loads(exec_properties["runs"])
        ]
        comparison = stats.compare(results, exec_properties["target_difference"])
        report = artifact_utils.get_single_instance(output_dict["report"])
        files = rendering.report_files(
            comparison, json.loads(exec_properties["settings"])
        )
        for name, content in files.items():
            io_utils.write_bytes_file(os.path.join(report.uri, name), content)

        best = comparison.winner.best_run
        best_model = artifact_utils.get_single_instance(output_dict["best_model"])
        io_utils.copy_dir(uris[input_key("model", best.method, best.seed)], best_model.uri)
        best_model_run = artifact_utils.get_single_instance(output_dict["best_model_run"])
        best_run = uris[input_key("model_run", best.method, best.seed)]
        io_utils.copy_file(
            os.path.join(best_run, history.HISTORY_FILE),
            os.path.join(best_model_run.uri, history.HISTORY_FILE),
        )
        for artifact in (report, best_model, best_model_run):
            artifact.set_string_custom_property("winner_method", best.method)
            artifact.set_int_custom_property("winner_seed", best.seed)
            artifact.set_float_custom_property("winner_eval_accuracy", best.eval_accuracy)


def read_run(
    method: str,
    seed: int,
    model_run_uri: str,
    evaluation_uri: str,
    label_key: str,
    sharpness_uri: str | None = None,
) -> stats.RunResult:
    """One run's result from its ModelRun folder, its Evaluator's output folder and, when
    given, its SharpnessProbe's output folder."""
    accuracy, per_class = read_evaluation(evaluation_uri, label_key)
    return stats.RunResult(
        method=method,
        seed=seed,
        eval_accuracy=accuracy,
        per_class_accuracy=per_class,
        history=history.read_history(os.path.join(model_run_uri, history.HISTORY_FILE)),
        extra_metrics={} if sharpness_uri is None else read_sharpness(sharpness_uri),
    )


def read_sharpness(uri: str) -> dict[str, float]:
    """The report's sharpness columns for the model a SharpnessProbe measured (its
    `trainer.gsam.sharpness.measure` result): the Hessian's top eigenvalue and trace, and how much
    the loss rises at SAM's first-order perturbation and at the worst case found in the
    rho-ball."""
    measures = read_report(uri)["candidate"]
    return {
        "top Hessian eigenvalue": measures["top_eigenvalue"],
        "Hessian trace": measures["trace"],
        "perturbed loss increase": measures["surrogate_gap"],
        "worst-case loss increase": measures["worst_case_loss"] - measures["loss"],
    }


def read_evaluation(uri: str, label_key: str) -> tuple[float, dict[str, float]]:
    """The evaluated model's overall accuracy and its accuracy on each `label_key` slice.

    A baseline model's metrics and the differences against it are skipped.
    """
    overall, per_class = None, {}
    for slice_metrics in tfma.load_metrics(uri):
        keys = slice_metrics.slice_key.single_slice_keys
        for entry in slice_metrics.metric_keys_and_values:
            key = entry.key
            if key.name != ACCURACY_METRIC or key.is_diff or key.model_name == "baseline":
                continue
            value = entry.value.double_value.value
            if not keys:
                overall = value
            elif len(keys) == 1 and keys[0].column == label_key:
                per_class[_slice_value(keys[0])] = value
    if overall is None:
        raise ValueError(f"the evaluation at {uri} has no overall {ACCURACY_METRIC}.")
    return overall, per_class


def _slice_value(single_slice_key) -> str:
    value = getattr(single_slice_key, single_slice_key.WhichOneof("kind"))
    return value.decode() if isinstance(value, bytes) else str(value)


def _check_run(run) -> tuple[str, int]:
    if not isinstance(run, tuple) or len(run) != 2:
        raise ValueError(f"runs keys must be (method, seed) pairs, got {run!r}.")
    method, seed = run
    if not isinstance(method, str) or not METHOD_PATTERN.fullmatch(method):
        raise ValueError(
            f"the method of run {run!r} must be lower-case letters, digits, _ and -."
        )
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"the seed of run {run!r} must be an integer >= 0.")
    return method, seed
