"""What the latest run did, read back from ML Metadata, the Evaluator's output and the
SharpnessProbe's report.

python -m pipelines.local.summary --output-dir demo-output
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex

import tensorflow_model_analysis as tfma
from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2
from tfx import v1 as tfx
from tfx.utils import io_utils

from components.comparison.artifact import ComparisonReportArtifact
from components.data_checks.artifact import RecordCheckReport
from components.sharpness.probe import SharpnessReport, read_report
from pipelines import configs
from pipelines.local.layout import output_layout
from trainer.search_space import tuned_fields

ACCURACY = "sparse_categorical_accuracy"
PROBE = "SharpnessProbe"
# The release stage's nodes, and the kinds of output a comparison also has once per run.
RELEASE_NODES = ("Evaluator", PROBE)
RELEASE_KINDS = ("ModelEvaluation", "ModelBlessing", SharpnessReport.TYPE_NAME)
# The trials table: header -> the tuned TrainingConfig field it shows.
TRIAL_COLUMNS = {
    "method": "optimizer",
    "rho_max": "rho_max",
    "rho_min": "rho_min",
    "alpha": "alpha",
    "learning_rate": "learning_rate",
    "perturb_every": "perturb_every",
    "perturb_budget": "perturb_budget",
    "label_smoothing": "label_smoothing",
    "weight_decay": "weight_decay",
}


@dataclasses.dataclass
class ComparisonSummary:
    """What the ComparisonReport of a comparison run found."""

    report_dir: str
    winner: str
    winner_seed: int
    table: str

    @property
    def report_path(self) -> str:
        return os.path.join(self.report_dir, "report.html")


@dataclasses.dataclass
class RunSummary:
    run_id: str
    accuracy: float | None = None
    baseline_accuracy: float | None = None
    blessed: bool | None = None
    why: list[str] = dataclasses.field(default_factory=list)
    pushed_model: str | None = None
    seconds_per_component: dict[str, float] = dataclasses.field(default_factory=dict)
    comparison: ComparisonSummary | None = None
    # Per Tuner: its completed trials (TFX's tuner_results rows), best first.
    tuner_trials: list[list[dict]] = dataclasses.field(default_factory=list)
    # Trainer node id -> its TensorBoard log folder (the ModelRun artifact).
    training_logs: dict[str, str] = dataclasses.field(default_factory=dict)
    log_file: str | None = None
    # The SharpnessProbe's sharpness.json, when the run had one.
    sharpness: dict | None = None
    # Bad records the gate let the run leave out (--max-bad-records), and the record check's
    # line per problem, naming the first records.
    records_left_out: int = 0
    bad_record_lines: list[str] = dataclasses.field(default_factory=list)

    def render(self, example_file: str | None = None) -> str:
        lines = [f"Run {self.run_id}"]
        if self.comparison:
            lines += [
                self.comparison.table.rstrip("\n"),
                f"  winner:         {self.comparison.winner} (seed {self.comparison.winner_seed})"
                " goes on to the blessing",
                f"  report:         {self.comparison.report_path}",
            ]
        if self.seconds_per_component:
            tuning = self.seconds_per_component.get("Tuner")
            training = self.seconds_per_component.get("Trainer", 0.0)
            probe = self.seconds_per_component.get(PROBE)
            other = (
                sum(self.seconds_per_component.values())
                - training
                - (tuning or 0.0)
                - (probe or 0.0)
            )
            lines.append(
                "  time:           "
                + ("" if tuning is None else f"tuning {tuning:.0f} s, ")
                + f"training {training:.0f} s"
                + ("" if probe is None else f", sharpness {probe:.0f} s")
                + f", other components {other:.0f} s"
            )
        if self.records_left_out:
            lines.append(
                f"  left out:       {self.records_left_out} bad records, of training and "
                "evaluation (--max-bad-records):"
            )
            lines += [f"    {line}" for line in self.bad_record_lines]
        for trials in self.tuner_trials:
            lines += _render_tuning(trials)
        if self.accuracy is None:
            lines.append("  eval accuracy: not evaluated (the run stopped before the Evaluator)")
        else:
            lines += self._render_evaluation(example_file)
        if self.training_logs:
            lines.append(f"  tensorboard:    {shlex.join(self.tensorboard_command())}")
        if self.log_file:
            lines.append(f"  full log:       {self.log_file}")
        return "\n".join(lines)

    def tensorboard_command(self) -> list[str]:
        """`tensorboard` on the run's training logs, each Trainer's under its node id."""
        if len(self.training_logs) == 1:
            [logdir] = self.training_logs.values()
            return ["scripts/in-env", "tensorboard", "--logdir", logdir]
        spec = ",".join(f"{node}:{logdir}" for node, logdir in sorted(self.training_logs.items()))
        return ["scripts/in-env", "tensorboard", "--logdir_spec", spec]

    def _render_evaluation(self, example_file: str | None) -> list[str]:
        baseline = (
            "none: this is the first model"
            if self.baseline_accuracy is None
            else f"{self.baseline_accuracy:.4f} (last blessed model)"
        )
        lines = [
            f"  eval accuracy:  {self.accuracy:.4f}",
            f"  baseline:       {baseline}",
            *self._sharpness_lines(),
            f"  blessed:        {'yes' if self.blessed else 'no'}",
            *[f"    - {reason}" for reason in self.why],
            f"  pushed model:   {self.pushed_model or 'nothing pushed'}",
        ]
        if self.pushed_model and example_file:
            command = [
                "scripts/in-env",
                "python",
                "-m",
                "trainer.predict",
                "--model",
                self.pushed_model,
                "--examples",
                example_file,
                "--count",
                "5",
            ]
            lines.append(f"  classify:       {shlex.join(command)}")
        return lines

    def _sharpness_lines(self) -> list[str]:
        if self.sharpness is None:
            return []
        report = self.sharpness
        settings = report["settings"]
        lines = [
            f"  sharpness:      {_describe_sharpness(report['candidate'])}",
            f"                  ({report['examples']} {report['split']} examples, "
            f"rho {settings['rho']:g}; see {report['uri']})",
        ]
        if report["baseline"] is not None:
            lines.append(f"  its baseline:   {_describe_sharpness(report['baseline'])}")
        return lines


def read_only_store(metadata_path: str) -> metadata_store.MetadataStore:
    """The SQLite ML Metadata store at `metadata_path`, opened read-only."""
    if not os.path.exists(metadata_path):
        raise FileNotFoundError(f"no metadata store at {metadata_path}: has the pipeline run?")
    config = tfx.orchestration.metadata.sqlite_metadata_connection_config(metadata_path)
    config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
    return metadata_store.MetadataStore(config)


def newest_run(store: metadata_store.MetadataStore, pipeline_name: str):
    """The `pipeline_run` context of the newest run of `pipeline_name` in `store`."""
    pipeline_context = store.get_context_by_type_and_name("pipeline", pipeline_name)
    executions = pipeline_context and store.get_executions_by_context(pipeline_context.id)
    if not executions:
        raise LookupError(f"no run of pipeline {pipeline_name!r} recorded in the metadata store")
    newest = max(executions, key=lambda execution: execution.create_time_since_epoch)
    [run] = [
        context
        for context in store.get_contexts_by_execution(newest.id)
        if context.type == "pipeline_run"
    ]
    return run


def seconds_per_component(store: metadata_store.MetadataStore, run) -> dict[str, float]:
    """Wall seconds per component type (`Trainer`, `Evaluator`, ...) in the run `run`: each
    execution's record from its creation to its last update, summed over the type's
    executions (a comparison has several Trainers)."""
    node_types = {t.id: t.name for t in store.get_execution_types()}
    seconds = {}
    for execution in store.get_executions_by_context(run.id):
        name = node_types[execution.type_id].rsplit(".", 1)[-1]
        seconds[name] = seconds.get(name, 0.0) + (
            (execution.last_update_time_since_epoch - execution.create_time_since_epoch) / 1000
        )
    return seconds


def latest_run(metadata_path: str, pipeline_name: str) -> RunSummary:
    """Summarises the newest run of `pipeline_name` in the SQLite store at `metadata_path`."""
    store = read_only_store(metadata_path)
    try:
        run = newest_run(store, pipeline_name)
    except LookupError as error:
        raise LookupError(f"{error} at {metadata_path}") from None
    summary = RunSummary(run_id=run.name, seconds_per_component=seconds_per_component(store, run))
    release_outputs = set()
    for execution in store.get_executions_by_context(run.id):
        if _node_id(store, execution) in RELEASE_NODES:
            release_outputs |= {
                event.artifact_id
                for event in store.get_events_by_execution_ids([execution.id])
                if event.type == metadata_store_pb2.Event.OUTPUT
            }
    types = {t.id: t.name for t in store.get_artifact_types()}
    for artifact in store.get_artifacts_by_context(run.id):
        kind = types[artifact.type_id]
        # A comparison also evaluates (and with --sharpness probes) every run; the release
        # stage's verdict is the run's.
        if kind in RELEASE_KINDS and artifact.id not in release_outputs:
            continue
        if kind == "ModelEvaluation":
            evaluation = read_evaluation(artifact.uri)
            summary.accuracy = evaluation.accuracy
            summary.baseline_accuracy = evaluation.baseline_accuracy
            summary.why = evaluation.why
        elif kind == "ModelBlessing":
            summary.blessed = artifact.custom_properties["blessed"].int_value == 1
        elif kind == "PushedModel" and artifact.custom_properties["pushed"].int_value == 1:
            summary.pushed_model = artifact.custom_properties["pushed_destination"].string_value
        elif kind == ComparisonReportArtifact.TYPE_NAME:
            summary.comparison = _read_comparison(artifact)
        elif kind == "TunerResults":
            summary.tuner_trials.append(read_tuner_results(artifact.uri))
        elif kind == "ModelRun":
            # TFX writes outputs to <pipeline root>/<node id>/<output key>/<execution id>.
            node = os.path.basename(os.path.dirname(os.path.dirname(artifact.uri)))
            summary.training_logs[node] = artifact.uri
        elif kind == SharpnessReport.TYPE_NAME:
            summary.sharpness = _read_sharpness(artifact.uri)
        elif kind == RecordCheckReport.TYPE_NAME:
            summary.bad_record_lines = json.loads(
                artifact.custom_properties["named_bad_records"].string_value
            )
        elif kind == "Schema" and "records_left_out" in artifact.custom_properties:
            # The gate's validated schema: it let the run go on without these records.
            summary.records_left_out = artifact.custom_properties["records_left_out"].int_value
    if summary.sharpness is not None:
        # The Pusher took the probe's blessing: the Evaluator's and the sharpness gate's.
        gate = summary.sharpness["gate"]
        summary.blessed = gate["blessed"]
        summary.why += [f"sharpness: {reason}" for reason in gate["reasons"]]
    return summary


def _read_sharpness(uri: str) -> dict:
    return {**read_report(uri), "uri": uri}


def _describe_sharpness(measures: dict) -> str:
    return (
        f"top eigenvalue {measures['top_eigenvalue']:.4g}, "
        f"trace {measures['trace']:.4g} ± {measures['trace_stderr']:.2g}, "
        f"surrogate gap {measures['surrogate_gap']:.4g}, "
        f"worst-case loss {measures['worst_case_loss']:.4g}, "
        f"{measures['seconds']:.0f} s"
    )


def read_tuner_results(uri: str) -> list[dict]:
    """The rows TFX's Tuner wrote to its `tuner_results` artifact at `uri`: per completed
    trial, best first, `trial_id`, `score` (the objective) and the hyperparameter values."""
    return json.loads(io_utils.read_string_file(io_utils.get_only_uri_in_dir(uri)))


def _render_tuning(trials: list[dict]) -> list[str]:
    if not trials:
        return ["  tuned:          no trial completed"]
    fields = [tuned_fields(_hyperparameters(row)) for row in trials]
    # A hyperparameter no trial searched (perturb_every, most often) gets no column.
    columns = {
        name: field
        for name, field in TRIAL_COLUMNS.items()
        if any(field in values for values in fields)
    }
    rows = [
        [row["trial_id"]]
        + [_format(values.get(field)) for field in columns.values()]
        + [_format(row["score"])]
        for row, values in zip(trials, fields)
    ]
    header = ["trial", *columns, "objective"]
    widths = [max(len(cells[i]) for cells in [header, *rows]) for i in range(len(header))]
    best = ", ".join(
        f"{name} {value}" for name, value in zip(header[1:-1], rows[0][1:-1]) if value != "-"
    )
    return [
        f"  tuned:          {best} (objective {rows[0][-1]})",
        f"  trials:         {len(rows)}, best first",
        *[
            ("    " + "  ".join(cell.ljust(width) for cell, width in zip(cells, widths))).rstrip()
            for cells in [header, *rows]
        ],
    ]


def _hyperparameters(row: dict) -> dict:
    return {name: value for name, value in row.items() if name not in ("trial_id", "score")}


def _format(value) -> str:
    if value is None:
        return "-"
    return value if isinstance(value, str) else f"{value:.4g}"


def _node_id(store, execution) -> str | None:
    """The pipeline node that ran `execution` (TFX names node contexts `pipeline.node`)."""
    for context in store.get_contexts_by_execution(execution.id):
        if context.type == "node":
            return context.name.split(".", 1)[1]
    return None


def _read_comparison(artifact) -> ComparisonSummary:
    properties = artifact.custom_properties
    with tfx.dsl.io.fileio.open(os.path.join(artifact.uri, "summary.txt")) as table:
        return ComparisonSummary(
            report_dir=artifact.uri,
            winner=properties["winner_method"].string_value,
            winner_seed=properties["winner_seed"].int_value,
            table=table.read(),
        )


@dataclasses.dataclass
class Evaluation:
    """The Evaluator's overall accuracy, the baseline's, and why it blessed or not."""

    accuracy: float | None = None
    baseline_accuracy: float | None = None
    why: list[str] = dataclasses.field(default_factory=list)


def read_evaluation(uri: str) -> Evaluation:
    """What the Evaluator wrote to its `evaluation` output at `uri`."""
    evaluation = Evaluation()
    for slice_metrics in tfma.load_metrics(uri):
        if slice_metrics.slice_key.single_slice_keys:
            continue
        for entry in slice_metrics.metric_keys_and_values:
            if entry.key.name != ACCURACY or entry.key.is_diff:
                continue
            value = entry.value.double_value.value
            if entry.key.model_name == "baseline":
                evaluation.baseline_accuracy = value
            else:
                evaluation.accuracy = value
    validation = tfma.load_validation_result(uri)
    if validation.validation_ok:
        evaluation.why.append("every metric threshold passed")
    for per_slice in validation.metric_validations_per_slice:
        evaluation.why += [_describe(failure) for failure in per_slice.failures]
    return evaluation


def _describe(failure) -> str:
    """A failed threshold of pipelines.stages.release.eval_config, in words."""
    key, threshold = failure.metric_key, failure.metric_threshold
    value = failure.metric_value.double_value.value
    if key.is_diff:
        allowed = threshold.change_threshold.absolute.value
        return (
            f"{key.name} changed by {value:+.4f} against the baseline; "
            f"the least allowed is {allowed:+.4f}"
        )
    return f"{key.name} {value:.4f} is below the threshold {threshold.value_threshold.lower_bound.value:.4f}"


def report(
    output_dir: str,
    pipeline_name: str,
    data_root: str | None = None,
    metadata_path: str | None = None,
) -> None:
    """Prints the summary of the newest run, or why there is none."""
    layout = output_layout(output_dir, metadata_path)
    try:
        run = latest_run(layout.metadata_path, pipeline_name)
    except (FileNotFoundError, LookupError) as error:
        print(f"No run summary: {error}")
        return
    if os.path.exists(layout.log_path(run.run_id)):
        run.log_file = layout.log_path(run.run_id)
    # The classify hint needs TFRecord files of tf.Examples, as in the sample's eval/ folder.
    examples = (
        [
            path
            for path in tfx.dsl.io.fileio.glob(os.path.join(data_root, "eval", "*"))
            if not path.endswith(".csv")
        ]
        if data_root
        else []
    )
    print(run.render(min(examples) if examples else None))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", default=configs.OUTPUT_DIR)
    parser.add_argument("--metadata-path", default=None, help="default: OUTPUT_DIR/metadata.sqlite")
    parser.add_argument("--pipeline-name", default=configs.PIPELINE_NAME)
    parser.add_argument("--data-root", default=configs.DATA_ROOT)
    args = parser.parse_args(argv)
    report(args.output_dir, args.pipeline_name, args.data_root, args.metadata_path)


if __name__ == "__main__":
    main()
