"""What the latest run did, read back from ML Metadata, the Evaluator's output and the
SharpnessProbe's report.

python -m pipelines.summary --output-dir demo-output
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

from components.sharpness_probe import REPORT_FILE, SharpnessReport
from pipelines import configs
from pipelines.options import OutputLayout

ACCURACY = "sparse_categorical_accuracy"
PROBE = "SharpnessProbe"


@dataclasses.dataclass
class RunSummary:
    run_id: str
    accuracy: float | None = None
    baseline_accuracy: float | None = None
    blessed: bool | None = None
    why: list[str] = dataclasses.field(default_factory=list)
    pushed_model: str | None = None
    seconds_per_component: dict[str, float] = dataclasses.field(default_factory=dict)
    # The SharpnessProbe's sharpness.json, when the run had one.
    sharpness: dict | None = None

    def render(self, example_file: str | None = None) -> str:
        lines = [f"Run {self.run_id}"]
        if self.seconds_per_component:
            training = self.seconds_per_component.get("Trainer", 0.0)
            probe = self.seconds_per_component.get(PROBE, 0.0)
            other = sum(self.seconds_per_component.values()) - training - probe
            probing = f", sharpness {probe:.0f} s" if PROBE in self.seconds_per_component else ""
            lines.append(
                f"  time:           training {training:.0f} s{probing}, "
                f"other components {other:.0f} s"
            )
        if self.accuracy is None:
            lines.append("  eval accuracy: not evaluated (the run stopped before the Evaluator)")
            return "\n".join(lines)
        baseline = (
            "none: this is the first model"
            if self.baseline_accuracy is None
            else f"{self.baseline_accuracy:.4f} (last blessed model)"
        )
        lines += [
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
        return "\n".join(lines)

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


def latest_run(metadata_path: str, pipeline_name: str) -> RunSummary:
    """Summarises the newest run of `pipeline_name` in the SQLite store at `metadata_path`."""
    if not os.path.exists(metadata_path):
        raise FileNotFoundError(f"no metadata store at {metadata_path}: has the pipeline run?")
    config = tfx.orchestration.metadata.sqlite_metadata_connection_config(metadata_path)
    config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
    store = metadata_store.MetadataStore(config)
    pipeline_context = store.get_context_by_type_and_name("pipeline", pipeline_name)
    executions = pipeline_context and store.get_executions_by_context(pipeline_context.id)
    if not executions:
        raise LookupError(f"no run of pipeline {pipeline_name!r} recorded in {metadata_path}")
    newest = max(executions, key=lambda execution: execution.create_time_since_epoch)
    [run] = [
        context
        for context in store.get_contexts_by_execution(newest.id)
        if context.type == "pipeline_run"
    ]
    summary = RunSummary(run_id=run.name)
    node_types = {t.id: t.name for t in store.get_execution_types()}
    for execution in store.get_executions_by_context(run.id):
        name = node_types[execution.type_id].rsplit(".", 1)[-1]
        summary.seconds_per_component[name] = (
            execution.last_update_time_since_epoch - execution.create_time_since_epoch
        ) / 1000
    types = {t.id: t.name for t in store.get_artifact_types()}
    for artifact in store.get_artifacts_by_context(run.id):
        kind = types[artifact.type_id]
        if kind == "ModelEvaluation":
            _read_evaluation(artifact.uri, summary)
        elif kind == "ModelBlessing":
            summary.blessed = artifact.custom_properties["blessed"].int_value == 1
        elif kind == "PushedModel" and artifact.custom_properties["pushed"].int_value == 1:
            summary.pushed_model = artifact.custom_properties["pushed_destination"].string_value
        elif kind == SharpnessReport.TYPE_NAME:
            summary.sharpness = _read_sharpness(artifact.uri)
    if summary.sharpness is not None:
        # The Pusher took the probe's blessing: the Evaluator's and the sharpness gate's.
        gate = summary.sharpness["gate"]
        summary.blessed = gate["blessed"]
        summary.why += [f"sharpness: {reason}" for reason in gate["reasons"]]
    return summary


def _read_sharpness(uri: str) -> dict:
    with tfx.dsl.io.fileio.open(os.path.join(uri, REPORT_FILE)) as f:
        return {**json.load(f), "uri": uri}


def _describe_sharpness(measures: dict) -> str:
    return (
        f"top eigenvalue {measures['top_eigenvalue']:.4g}, "
        f"trace {measures['trace']:.4g} ± {measures['trace_stderr']:.2g}, "
        f"surrogate gap {measures['surrogate_gap']:.4g}, "
        f"worst-case loss {measures['worst_case_loss']:.4g}, "
        f"{measures['seconds']:.0f} s"
    )


def _read_evaluation(uri: str, summary: RunSummary) -> None:
    for slice_metrics in tfma.load_metrics(uri):
        if slice_metrics.slice_key.single_slice_keys:
            continue
        for entry in slice_metrics.metric_keys_and_values:
            if entry.key.name != ACCURACY or entry.key.is_diff:
                continue
            value = entry.value.double_value.value
            if entry.key.model_name == "baseline":
                summary.baseline_accuracy = value
            else:
                summary.accuracy = value
    validation = tfma.load_validation_result(uri)
    if validation.validation_ok:
        summary.why.append("every metric threshold passed")
    for per_slice in validation.metric_validations_per_slice:
        summary.why += [_describe(failure) for failure in per_slice.failures]


def _describe(failure) -> str:
    """A failed threshold of pipeline.eval_config, in words."""
    key, threshold = failure.metric_key, failure.metric_threshold
    value = failure.metric_value.double_value.value
    if key.is_diff:
        allowed = threshold.change_threshold.absolute.value
        return (
            f"{key.name} changed by {value:+.4f} against the baseline; "
            f"the least allowed is {allowed:+.4f}"
        )
    return f"{key.name} {value:.4f} is below the threshold {threshold.value_threshold.lower_bound.value:.4f}"


def report(output_dir: str, pipeline_name: str, data_root: str | None = None) -> None:
    """Prints the summary of the newest run, or why there is none."""
    layout = OutputLayout(os.path.abspath(output_dir))
    try:
        run = latest_run(layout.metadata_path, pipeline_name)
    except (FileNotFoundError, LookupError) as error:
        print(f"No run summary: {error}")
        return
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
    parser.add_argument("--pipeline-name", default=configs.PIPELINE_NAME)
    parser.add_argument("--data-root", default=configs.DATA_ROOT)
    args = parser.parse_args(argv)
    report(args.output_dir, args.pipeline_name, args.data_root)


if __name__ == "__main__":
    main()
