"""components/comparison/report.py: reading runs, the executor's outputs, and orchestration.

The runs are fakes: a model folder, a history.json written by trainer/training/history.py, and a
TFMA metrics file of MetricsForSlice protos as the Evaluator writes them. The pipelines import
them with Importer nodes, so no model trains here.
"""

import json
import os

import pytest
import tensorflow as tf
import yaml
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2
from ml_metadata import metadata_store
from tensorflow_model_analysis.proto import metrics_for_slice_pb2
from tfx import v1 as tfx
from tfx.orchestration.beam.beam_dag_runner import BeamDagRunner
from tfx.orchestration.kubeflow.v2.container import kubeflow_v2_entrypoint_utils
from tfx.types import standard_artifacts
from tfx.utils import import_utils

from components import ComparisonReportArtifact
from components.comparison.rendering import MEASURES_TITLE
from components.comparison.report import (
    ACCURACY_METRIC,
    ComparisonReportExecutor,
    comparison_report,
    input_key,
    read_evaluation,
)
from components.sharpness.probe import REPORT_FILE, SharpnessReport
from pipelines.cloud import compiler, kubeflow_spec
from tests.pipeline_support import constant
from trainer.config import TrainingConfig
from trainer.training.history import HISTORY_FILE, write_history

# (method, seed) -> (eval accuracy, accuracy on class 0, on class 1)
ACCURACIES = {
    ("plain", 1): (0.80, 0.70, 0.90),
    ("plain", 2): (0.82, 0.72, 0.92),
    ("gsam", 1): (0.84, 0.80, 0.88),
    ("gsam", 2): (0.86, 0.84, 0.88),
}
RUN_TYPES = {
    "model": standard_artifacts.Model,
    "model_run": standard_artifacts.ModelRun,
    "evaluation": standard_artifacts.ModelEvaluation,
}


def metric(value, model_name="", is_diff=False, name=ACCURACY_METRIC):
    return metrics_for_slice_pb2.MetricsForSlice.MetricKeyAndValue(
        key=metrics_for_slice_pb2.MetricKey(name=name, model_name=model_name, is_diff=is_diff),
        value=metrics_for_slice_pb2.MetricValue(double_value={"value": value}),
    )


def slice_metrics(entries, **single_slice_key):
    keys = [metrics_for_slice_pb2.SingleSliceKey(**single_slice_key)] if single_slice_key else []
    return metrics_for_slice_pb2.MetricsForSlice(
        slice_key=metrics_for_slice_pb2.SliceKey(single_slice_keys=keys),
        metric_keys_and_values=entries,
    )


def write_metrics(folder, slices):
    os.makedirs(folder, exist_ok=True)
    with tf.io.TFRecordWriter(os.path.join(folder, "metrics-00000-of-00001.tfrecord")) as writer:
        for record in slices:
            writer.write(record.SerializeToString())


def write_run(root, method, seed):
    """The model, model_run and evaluation folders of a fake run; returns them by kind."""
    accuracy, class0, class1 = ACCURACIES[method, seed]
    folders = {kind: os.path.join(root, kind, f"{method}.seed{seed}") for kind in RUN_TYPES}
    serving = os.path.join(folders["model"], "Format-Serving")
    os.makedirs(serving)
    with open(os.path.join(serving, "saved_model.pb"), "w") as file:
        file.write(f"model of {method} seed {seed}")
    os.makedirs(folders["model_run"])
    per_step = 1 if method == "plain" else 2
    epochs = [
        {"epoch": 1, "loss": 1.0, "val_accuracy": accuracy - 0.1, "seconds": 5.0, "passes": 10},
        {"epoch": 2, "loss": 0.5, "val_accuracy": accuracy, "seconds": 5.0, "passes": 20},
    ]
    for epoch in epochs:
        epoch["passes"] *= per_step
        if method != "plain":
            epoch.update(surrogate_gap=0.01, rho=0.04)
    write_history(
        os.path.join(folders["model_run"], HISTORY_FILE),
        TrainingConfig(optimizer=method, seed=seed),
        epochs,
    )
    write_metrics(
        folders["evaluation"],
        [
            slice_metrics([metric(accuracy), metric(5.0, name="example_count")]),
            slice_metrics([metric(class0)], column="label", int64_value=0),
            slice_metrics([metric(class1)], column="label", int64_value=1),
        ],
    )
    return folders


# (method, seed) -> the probe's top eigenvalue, trace, loss, perturbed and worst-case loss.
SHARPNESS = {
    ("plain", 1): (10.0, 100.0, 0.50, 0.80, 1.00),
    ("plain", 2): (14.0, 140.0, 0.50, 1.00, 1.50),
    ("gsam", 1): (6.0, 60.0, 0.50, 0.60, 0.75),
    ("gsam", 2): (8.0, 80.0, 0.50, 0.70, 1.00),
}


def write_sharpness(folder, method, seed):
    """A SharpnessProbe's sharpness.json for the fake run (only what the report reads)."""
    top, trace, loss, perturbed, worst = SHARPNESS[method, seed]
    candidate = {
        "top_eigenvalue": top,
        "trace": trace,
        "loss": loss,
        "perturbed_loss": perturbed,
        "surrogate_gap": perturbed - loss,
        "worst_case_loss": worst,
    }
    os.makedirs(folder)
    with open(os.path.join(folder, REPORT_FILE), "w") as file:
        json.dump({"candidate": candidate, "baseline": None}, file)
    return folder


@pytest.fixture(scope="module")
def fake_runs(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("runs"))
    return {run: write_run(root, *run) for run in ACCURACIES}


def test_read_evaluation_takes_the_candidate_overall_and_per_label_slices(tmp_path):
    write_metrics(
        str(tmp_path),
        [
            slice_metrics(
                [
                    metric(0.5, model_name="baseline"),
                    metric(0.8, model_name="candidate"),
                    metric(0.3, model_name="candidate", is_diff=True),
                    metric(2.1, name="sparse_categorical_crossentropy"),
                ]
            ),
            slice_metrics([metric(0.6, model_name="candidate")], column="label", int64_value=3),
            slice_metrics([metric(0.9, model_name="candidate")], column="label", int64_value=10),
            slice_metrics([metric(0.1, model_name="candidate")], column="other", int64_value=3),
        ],
    )
    assert read_evaluation(str(tmp_path), "label") == (0.8, {"3": 0.6, "10": 0.9})


def test_an_evaluation_without_overall_accuracy_is_named(tmp_path):
    write_metrics(str(tmp_path), [slice_metrics([metric(0.6)], column="label", int64_value=3)])
    with pytest.raises(ValueError, match=f"evaluation at {tmp_path} has no overall"):
        read_evaluation(str(tmp_path), "label")


def artifact(artifact_type, uri):
    instance = artifact_type()
    instance.uri = uri
    return instance


def test_the_executor_writes_the_report_and_copies_the_winners_best_model(fake_runs, tmp_path):
    input_dict = {
        input_key(kind, method, seed): [artifact(RUN_TYPES[kind], folders[kind])]
        for (method, seed), folders in fake_runs.items()
        for kind in RUN_TYPES
    }
    report = artifact(ComparisonReportArtifact, str(tmp_path / "report"))
    best_model = artifact(standard_artifacts.Model, str(tmp_path / "best_model"))
    best_model_run = artifact(standard_artifacts.ModelRun, str(tmp_path / "best_model_run"))
    ComparisonReportExecutor().Do(
        input_dict,
        {"report": [report], "best_model": [best_model], "best_model_run": [best_model_run]},
        {
            "runs": json.dumps([list(run) for run in ACCURACIES]),
            "settings": json.dumps({"budget": "equal-epochs"}),
            "label_key": "label",
            "target_difference": 0.005,
        },
    )
    files = set(os.listdir(report.uri))
    assert {"report.md", "report.html", "results.json", "eval_accuracy.png"} <= files
    results = json.loads((tmp_path / "report" / "results.json").read_text())
    assert results["winner"]["method"] == "gsam" and results["winner"]["seed"] == 2
    assert results["target_difference"] == 0.005
    assert results["methods"][1]["gain"]["power"]["target_difference"] == 0.005
    assert "seeds to tell apart 0.50 points" in (tmp_path / "report" / "summary.txt").read_text()
    assert results["methods"][0]["per_class_accuracy"] == pytest.approx({"0": 0.71, "1": 0.91})
    assert (tmp_path / "best_model" / "Format-Serving" / "saved_model.pb").read_text() == (
        "model of gsam seed 2"
    )
    best_history = json.loads((tmp_path / "best_model_run" / HISTORY_FILE).read_text())
    assert best_history["config"]["optimizer"] == "gsam" and best_history["config"]["seed"] == 2
    for output in (report, best_model, best_model_run):
        assert output.get_string_custom_property("winner_method") == "gsam"
        assert output.get_int_custom_property("winner_seed") == 2
        assert output.get_float_custom_property("winner_eval_accuracy") == 0.86


def test_the_report_shows_each_methods_sharpness_mean_and_std(fake_runs, tmp_path):
    input_dict = {
        input_key(kind, method, seed): [artifact(RUN_TYPES[kind], folders[kind])]
        for (method, seed), folders in fake_runs.items()
        for kind in RUN_TYPES
    }
    for method, seed in fake_runs:
        folder = write_sharpness(str(tmp_path / f"sharpness.{method}.{seed}"), method, seed)
        input_dict[input_key("sharpness", method, seed)] = [artifact(SharpnessReport, folder)]
    report = artifact(ComparisonReportArtifact, str(tmp_path / "report"))
    ComparisonReportExecutor().Do(
        input_dict,
        {
            "report": [report],
            "best_model": [artifact(standard_artifacts.Model, str(tmp_path / "best_model"))],
            "best_model_run": [
                artifact(standard_artifacts.ModelRun, str(tmp_path / "best_model_run"))
            ],
        },
        {
            "runs": json.dumps([list(run) for run in ACCURACIES]),
            "settings": json.dumps({"sharpness": {"max_examples": 128}}),
            "label_key": "label",
            "target_difference": 0.01,
        },
    )
    results = json.loads((tmp_path / "report" / "results.json").read_text())
    measures = {summary["method"]: summary["extra_metrics"] for summary in results["methods"]}
    # plain: eigenvalues 10, 14; perturbed increases 0.3, 0.5; worst-case increases 0.5, 1.0.
    # gsam: 6, 8; 0.1, 0.2; 0.25, 0.5. Each pair's std is |difference| / sqrt(2).
    expected = {
        "plain": {
            "top Hessian eigenvalue": (12.0, 8**0.5),
            "Hessian trace": (120.0, 800**0.5),
            "perturbed loss increase": (0.4, 0.02**0.5),
            "worst-case loss increase": (0.75, 0.125**0.5),
        },
        "gsam": {
            "top Hessian eigenvalue": (7.0, 2**0.5),
            "Hessian trace": (70.0, 200**0.5),
            "perturbed loss increase": (0.15, 0.005**0.5),
            "worst-case loss increase": (0.375, 0.03125**0.5),
        },
    }
    for method, names in expected.items():
        assert list(measures[method]) == list(names)
        for name, (mean, std) in names.items():
            estimate = measures[method][name]
            assert estimate["n"] == 2
            assert estimate["mean"] == pytest.approx(mean, rel=1e-12), (method, name)
            assert estimate["std"] == pytest.approx(std, rel=1e-12), (method, name)
    assert results["settings"]["sharpness"] == {"max_examples": 128}
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "| plain | 12 ± 2.828 | 120 ± 28.28 | 0.4 ± 0.1414 | 0.75 ± 0.3536 |" in markdown
    assert "| gsam | 7 ± 1.414 | 70 ± 14.14 | 0.15 ± 0.07071 | 0.375 ± 0.1768 |" in markdown
    assert MEASURES_TITLE in (tmp_path / "report" / "summary.txt").read_text()


def importer_pipeline(fake_runs, root, metadata_path=None):
    """Importers of the fake runs feeding comparison_report."""
    importers, runs = [], {}
    for (method, seed), folders in fake_runs.items():
        runs[method, seed] = {}
        for kind, artifact_type in RUN_TYPES.items():
            importer = tfx.dsl.Importer(
                source_uri=folders[kind], artifact_type=artifact_type
            ).with_id(f"import_{kind}_{method}_{seed}")
            importers.append(importer)
            runs[method, seed][kind] = importer.outputs["result"]
    report = comparison_report(
        runs, {"budget": "equal-epochs", "seeds": 2}, target_difference=0.005
    )
    return tfx.dsl.Pipeline(
        pipeline_name="report-test",
        pipeline_root=str(root),
        components=[*importers, report],
        metadata_connection_config=metadata_path
        and tfx.orchestration.metadata.sqlite_metadata_connection_config(metadata_path),
    )


@pytest.mark.parametrize(
    "runner",
    [tfx.orchestration.LocalDagRunner, BeamDagRunner],
    ids=["local", "beam"],
)
def test_the_component_runs_on_local_and_beam_runners(fake_runs, tmp_path, runner):
    metadata_path = str(tmp_path / "metadata.sqlite")
    runner().run(importer_pipeline(fake_runs, tmp_path / "root", metadata_path))
    store = metadata_store.MetadataStore(
        tfx.orchestration.metadata.sqlite_metadata_connection_config(metadata_path)
    )
    [report] = store.get_artifacts_by_type(ComparisonReportArtifact.TYPE_NAME)
    assert report.custom_properties["winner_method"].string_value == "gsam"
    assert os.path.exists(os.path.join(report.uri, "report.html"))
    with open(os.path.join(report.uri, "results.json")) as file:
        assert json.load(file)["target_difference"] == 0.005
    best_models = [
        model
        for model in store.get_artifacts_by_type("Model")
        if "winner_seed" in model.custom_properties
    ]
    [best_model] = best_models
    assert best_model.custom_properties["winner_seed"].int_value == 2
    with open(os.path.join(best_model.uri, "Format-Serving", "saved_model.pb")) as file:
        assert file.read() == "model of gsam seed 2"


@pytest.mark.parametrize("output_file", ["pipeline.json", "pipeline.yaml"])
def test_the_component_compiles_for_vertex_and_kubeflow(fake_runs, tmp_path, output_file):
    path = compiler.compile_pipeline(
        importer_pipeline(fake_runs, "gs://bucket/root"),
        "gsam-tfx:test",
        str(tmp_path / output_file),
    )
    with open(path) as file:
        document = json.load(file) if path.endswith(".json") else yaml.safe_load(file)
    spec = json_format.ParseDict(
        document.get("pipelineSpec", document), pipeline_spec_pb2.PipelineSpec()
    )
    task = spec.root.dag.tasks["ComparisonReport"]
    # Kubeflow's task names are Argo's: import_model_plain_1 becomes import-model-plain-1.
    task_name = kubeflow_spec.task_name if path.endswith(".yaml") else str
    expected = {
        input_key(kind, method, seed): task_name(f"import_{kind}_{method}_{seed}")
        for method, seed in ACCURACIES
        for kind in RUN_TYPES
    }
    assert {
        name: artifact_input.task_output_artifact.producer_task
        for name, artifact_input in task.inputs.artifacts.items()
    } == expected
    assert set(task.dependent_tasks) == set(expected.values())
    assert constant(task.inputs.parameters["target_difference"]) == 0.005
    component = spec.components[task.component_ref.name]
    # What the Vertex / Kubeflow container does to rebuild the output's Python type.
    report_type = component.output_definitions.artifacts["report"].artifact_type
    class_path = kubeflow_v2_entrypoint_utils._retrieve_class_path(report_type)
    assert import_utils.import_class_by_path(class_path) is ComparisonReportArtifact


def channels(**types_by_kind):
    return {kind: tfx.dsl.Channel(type=t) for kind, t in {**RUN_TYPES, **types_by_kind}.items()}


def test_the_factory_names_the_component_and_one_input_per_run_and_kind():
    runs = {("plain", 1): channels(), ("gsam", 1): channels()}
    component = comparison_report(runs, {"epochs": 3})
    assert component.id == "ComparisonReport"
    assert set(component.inputs) == {
        input_key(kind, method, 1) for method in ("plain", "gsam") for kind in RUN_TYPES
    }
    assert set(component.outputs) == {"report", "best_model", "best_model_run"}
    assert json.loads(component.exec_properties["runs"]) == [["plain", 1], ["gsam", 1]]
    assert component.exec_properties["target_difference"] == 0.01


@pytest.mark.parametrize(
    "runs, settings, message",
    [
        ({}, {}, "runs must hold at least one"),
        ({("plain",): channels()}, {}, "runs keys must be \\(method, seed\\) pairs"),
        ({("Plain!", 1): channels()}, {}, "method of run .* must be lower-case letters, digits, _ and -"),
        ({("plain", -1): channels()}, {}, "seed of run .* must be an integer >= 0"),
        (
            {("plain", 1): {"model": channels()["model"]}},
            {},
            "runs\\[\\('plain', 1\\)\\] must map exactly model, model_run, evaluation",
        ),
        (
            {("plain", 1): channels(evaluation=standard_artifacts.Model)},
            {},
            "runs\\[\\('plain', 1\\)\\]\\['evaluation'\\] must be a channel of ModelEvaluation",
        ),
        ({("plain", 1): channels()}, {"when": object()}, "settings must hold JSON values only"),
    ],
)
def test_bad_runs_and_settings_are_errors_naming_them(runs, settings, message):
    with pytest.raises(ValueError, match=message):
        comparison_report(runs, settings)


def test_a_bad_target_difference_is_named():
    with pytest.raises(ValueError, match="target_difference must be an accuracy difference"):
        comparison_report({("plain", 1): channels()}, {}, target_difference=1.0)
