"""Pipeline construction, its argument checks, the validation gate and the atomic Pusher."""

import json
import os
import re

import numpy as np
import pandas as pd
import pytest
import tensorflow_data_validation as tfdv
import tensorflow_model_analysis as tfma
from tensorflow_metadata.proto.v0 import anomalies_pb2
from tfx import v1 as tfx
from tfx.dsl.components.base import base_beam_executor
from tfx.types import standard_artifacts, standard_component_specs
from tfx.utils import path_utils, proto_utils

from components.data_checks.artifact import RecordCheckReport
from components.data_checks.record_check import RecordCheckExecutor
from components.data_checks.validation_gate import (
    DataAnomaliesError,
    ValidationGate,
    find_anomalies,
)
from components.release import atomic_pusher
from components.sharpness.probe import ProbeSettings
from pipelines import configs
from pipelines.local import run_here
from pipelines.stages.data import inspect_local_data
from pipelines.stages.release import eval_config
from tests import trainer_examples
from tests.pipeline_support import ALL_NODES
from tests.pipeline_support import build_pipeline as build
from trainer.config import TrainingConfig


def test_the_dag_has_every_component_and_edge(tmp_path):
    nodes = {node.id: node for node in build(tmp_path).components}
    assert set(nodes) == ALL_NODES
    upstream = {name: {node.id for node in nodes[name].upstream_nodes} for name in nodes}
    assert upstream["RecordCheck"] == {"ImportExampleGen"}
    assert upstream["StatisticsGen"] == {"ImportExampleGen"}
    assert upstream["ValidationGate"] == {
        "RecordCheck",
        "ImportSchemaGen",
        "ExampleValidator",
        "StatisticsGen",
    }
    # Trainer depends on the gate, so anomalies stop it on every orchestrator.
    assert upstream["Trainer"] == {"ImportExampleGen", "ValidationGate"}
    assert upstream["Evaluator"] == {"ImportExampleGen", "Trainer", "latest_blessed_model_resolver"}
    assert upstream["Pusher"] == {"Trainer", "Evaluator"}
    trainer = nodes["Trainer"]
    assert trainer.exec_properties["run_fn"] == "trainer.task.run_fn"
    assert json.loads(trainer.exec_properties["custom_config"]) == {
        "training": configs.TRAINING.to_dict()
    }


def test_the_sharpness_probe_sits_between_the_evaluator_and_the_pusher(tmp_path):
    dag = build(tmp_path, sharpness=ProbeSettings(max_top_eigenvalue=5.0))
    nodes = {node.id: node for node in dag.components}
    assert set(nodes) == ALL_NODES | {"SharpnessProbe"}
    upstream = {name: {node.id for node in nodes[name].upstream_nodes} for name in nodes}
    assert upstream["SharpnessProbe"] == {
        "ImportExampleGen",
        "Trainer",
        "latest_blessed_model_resolver",
        "Evaluator",
    }
    assert upstream["Pusher"] == {"Trainer", "SharpnessProbe"}
    probe = nodes["SharpnessProbe"]
    assert probe.exec_properties["max_top_eigenvalue"] == 5.0
    assert json.loads(probe.exec_properties["training_config"]) == configs.TRAINING.to_dict()
    with pytest.raises(ValueError, match="sharpness must be a ProbeSettings, got dict"):
        build(tmp_path, sharpness={"max_top_eigenvalue": 5.0})


def test_without_a_schema_it_is_inferred(tmp_path):
    dag = build(tmp_path, schema_path=None)
    assert "SchemaGen" in [node.id for node in dag.components]


def test_evaluator_blesses_on_accuracy_against_the_baseline(tmp_path):
    config = eval_config("label", accuracy_threshold=0.8, max_accuracy_drop=0.02)
    [spec] = config.model_specs
    assert (spec.model_type, spec.signature_name, spec.prediction_key) == (
        "tf_generic",
        "serving_default",
        "probabilities",
    )
    [accuracy] = [
        m for m in config.metrics_specs[0].metrics if m.class_name == "SparseCategoricalAccuracy"
    ]
    [gate] = accuracy.per_slice_thresholds
    assert list(gate.slicing_specs) == [tfma.SlicingSpec()], "only the overall slice is gated"
    assert gate.threshold.value_threshold.lower_bound.value == 0.8
    assert gate.threshold.change_threshold.absolute.value == -0.02


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(accuracy_threshold=1.5), "accuracy_threshold must be a number in [0, 1]"),
        (dict(max_accuracy_drop=-0.1), "max_accuracy_drop must be a number in [0, 1]"),
        (dict(data_format="parquet"), "data_format must be one of tfrecord, csv"),
        (dict(training={"epochs": 1}), "training must be a TrainingConfig"),
    ],
)
def test_bad_arguments_are_named(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        build(tmp_path, **overrides)


def test_csv_data_needs_the_mlp(tmp_path):
    data = tmp_path / "csv"
    data.mkdir()
    (data / "rows.csv").write_text("x,label\n1.0,0\n")
    assert inspect_local_data(str(data)) == ("csv", False)
    with pytest.raises(ValueError, match="model must be 'mlp'"):
        build(tmp_path, data_root=str(data), data_format="csv", schema_path=None)
    dag = build(
        tmp_path,
        data_root=str(data),
        data_format="csv",
        split_folders=False,
        schema_path=None,
        training=TrainingConfig(model="mlp"),
    )
    assert "CsvExampleGen" in [node.id for node in dag.components]


def test_the_sample_has_split_folders():
    assert inspect_local_data(configs.DATA_ROOT) == ("tfrecord", True)


@pytest.mark.parametrize(
    "make, arguments, message",
    [
        (
            lambda root: None,
            dict(data_root="/nonexistent/data"),
            "data_root is not a folder: /nonexistent/data",
        ),
        (lambda root: root.mkdir(), {}, "data_root holds no files"),
        (
            lambda root: (root.mkdir(), (root / "a.csv").write_text("x\n")),
            dict(schema_path="/nonexistent/schema.pbtxt"),
            "schema_path does not exist",
        ),
        (
            lambda root: (root.mkdir(), (root / "a.csv").write_text("x\n")),
            dict(data_format="parquet"),
            "data_format must be auto or one of",
        ),
    ],
)
def test_local_data_problems_are_named(tmp_path, make, arguments, message):
    make(tmp_path / "data")
    with pytest.raises(ValueError, match=message):
        inspect_local_data(**{"data_root": str(tmp_path / "data"), **arguments})


class TestCommandLine:
    def parse(self, *argv):
        parser = run_here.local_parser("test")
        return parser, parser.parse_args(["--output-dir", "/tmp/out", *argv])

    def test_flags_reach_the_trainer_config(self):
        parser, args = self.parse(
            "--optimizer", "sam", "--epochs", "2", "--rho-max", "0.1", "--rho-min", "0.05",
            "--perturb-every", "5", "--model-widths", "8,16,32", "--min-train-steps", "0",
        )  # fmt: skip
        dag = run_here.build_local(args, parser)
        config = trainer_config(dag)
        assert (config.optimizer, config.epochs, config.rho_max, config.rho_min) == (
            "sam",
            2,
            0.1,
            0.05,
        )
        assert config.effective_alpha == 0.0
        assert config.perturb_every == 5
        assert config.model_widths == (8, 16, 32)
        assert config.min_train_steps == 0
        assert dag.pipeline_info.pipeline_root == "/tmp/out/pipeline"
        assert "SharpnessProbe" not in [node.id for node in dag.components]

    def test_sharpness_flags_reach_the_probe(self):
        parser, args = self.parse(
            "--sharpness", "--max-top-eigenvalue", "100", "--max-sharpness-increase", "0.2"
        )
        dag = run_here.build_local(args, parser)
        [probe] = [node for node in dag.components if node.id == "SharpnessProbe"]
        assert probe.exec_properties["max_top_eigenvalue"] == 100.0
        assert probe.exec_properties["max_sharpness_increase"] == 0.2

    def test_auto_perturbation_flags_reach_the_trainer_config(self):
        parser, args = self.parse("--perturb-every", "auto", "--perturb-budget", "0.2")
        config = trainer_config(run_here.build_local(args, parser))
        assert (config.perturb_every, config.perturb_budget, config.method) == (
            "auto",
            0.2,
            "gsam-auto",
        )
        with pytest.raises(SystemExit):
            self.parse("--perturb-every", "sometimes")

    @pytest.mark.parametrize(
        "argv, flag",
        [
            (["--rho-min", "0.5", "--rho-max", "0.1"], "--rho-max, --rho-min"),
            (["--perturb-every", "auto", "--perturb-budget", "0"], "--perturb-budget"),
            (["--epochs", "0"], "--epochs"),
            (["--alpha", "-1"], "--alpha"),
            (["--perturb-every", "0"], "--perturb-every"),
            (["--accuracy-threshold", "2"], "--accuracy-threshold"),
            (["--data-root", "/nonexistent"], "--data-root"),
            (["--image-shape", "32x32x2"], "--image-shape"),
            (["--model-widths", "8,0"], "--model-widths"),
            (["--output-dir", "gs://bucket/out"], "--output-dir, --metadata-path"),
            (["--sharpness", "--max-sharpness-increase", "-1"], "--max-sharpness-increase"),
            (["--max-bad-records", "-1"], "--max-bad-records"),
        ],
    )
    def test_bad_values_exit_naming_the_flag(self, argv, flag, capsys):
        parser, args = self.parse(*argv)
        with pytest.raises(SystemExit):
            run_here.build_local(args, parser)
        assert f"(flag: {flag})" in capsys.readouterr().err

    def test_without_the_embedded_sample_the_error_asks_for_data_root(
        self, monkeypatch, tmp_path, capsys
    ):
        # A pip-installed package has no data/ folder: the default data root does not exist.
        monkeypatch.setattr(configs, "DATA_ROOT", str(tmp_path / "site-packages" / "data"))
        parser, args = self.parse()
        with pytest.raises(SystemExit):
            run_here.build_local(args, parser)
        assert "give your data's folder with --data-root" in capsys.readouterr().err

    def test_image_flags_reach_the_trainer_config(self):
        parser, args = self.parse(
            "--image-key", "pixels", "--image-shape", "32x32x3", "--input-size", "16x16"
        )
        config = trainer_config(run_here.build_local(args, parser))
        assert (config.image_key, config.image_shape) == ("pixels", (32, 32, 3))
        assert config.input_size == (16, 16)
        parser, args = self.parse()
        assert trainer_config(run_here.build_local(args, parser)).image_shape == (28, 28, 1)

    def test_an_image_shape_that_is_not_hxwxc_is_refused_by_the_parser(self, capsys):
        with pytest.raises(SystemExit):
            self.parse("--image-shape", "32x32")
        assert "--image-shape: must be HEIGHTxWIDTHxCHANNELS, e.g. 32x32x3" in (
            capsys.readouterr().err
        )
        with pytest.raises(SystemExit):
            self.parse("--input-size", "14x14x1")
        assert "--input-size: must be HEIGHTxWIDTH, e.g. 14x14" in capsys.readouterr().err

    def test_uris_stay_uris_and_metadata_stays_local(self, tmp_path, monkeypatch):
        inspected = []

        def inspect(data_root, data_format, schema_path):
            inspected.append(data_root)
            return "tfrecord", True

        monkeypatch.setattr(run_here.data, "inspect_local_data", inspect)
        monkeypatch.chdir(tmp_path)
        parser, args = self.parse(
            "--output-dir",
            "gs://bucket/out",
            "--data-root",
            "gs://bucket/cifar",
            "--metadata-path",
            "metadata.sqlite",
        )
        dag = run_here.build_local(args, parser)
        nodes = {node.id: node for node in dag.components}
        assert inspected == ["gs://bucket/cifar"]
        assert nodes["ImportExampleGen"].exec_properties["input_base"] == "gs://bucket/cifar"
        assert dag.pipeline_info.pipeline_root == "gs://bucket/out/pipeline"
        destination = nodes["Pusher"].exec_properties["push_destination"]
        assert "gs://bucket/out/serving" in str(destination)
        sqlite = dag.metadata_connection_config.sqlite.filename_uri
        assert sqlite == str(tmp_path / "metadata.sqlite")

    def test_relative_local_paths_are_taken_from_the_working_directory(self, tmp_path, monkeypatch):
        monkeypatch.chdir(tmp_path)
        parser, args = self.parse("--output-dir", "out")
        assert run_here.build_local(args, parser).pipeline_info.pipeline_root == str(
            tmp_path / "out" / "pipeline"
        )


def trainer_config(dag) -> TrainingConfig:
    [trainer] = [node for node in dag.components if node.id == "Trainer"]
    return TrainingConfig.from_custom_config(json.loads(trainer.exec_properties["custom_config"]))


def write_anomalies(tmp_path, per_split):
    """An ExampleAnomalies artifact; per split, `{feature: description}` or an Anomalies proto."""
    artifact = standard_artifacts.ExampleAnomalies()
    artifact.uri = str(tmp_path / "anomalies")
    artifact.split_names = json.dumps(list(per_split))
    for split, features in per_split.items():
        anomalies = anomalies_pb2.Anomalies()
        if isinstance(features, anomalies_pb2.Anomalies):
            anomalies = features
        else:
            for feature, description in features.items():
                info = anomalies.anomaly_info[feature]
                info.short_description = "Out-of-range values"
                info.description = description
        os.makedirs(os.path.join(artifact.uri, f"Split-{split}"))
        with open(os.path.join(artifact.uri, f"Split-{split}", "SchemaDiff.pb"), "wb") as file:
            file.write(anomalies.SerializeToString())
    return artifact


def test_the_gate_reports_every_anomaly_by_split(tmp_path):
    artifact = write_anomalies(
        tmp_path, {"train": {}, "eval": {"label": "Unexpectedly large value: 12."}}
    )
    assert find_anomalies(artifact) == {
        "eval": ["label: Out-of-range values (Unexpectedly large value: 12.)"]
    }
    clean = write_anomalies(tmp_path / "clean", {"train": {}, "eval": {}})
    assert find_anomalies(clean) == {}


def test_the_gate_stops_on_a_dataset_level_anomaly(tmp_path):
    """TFDV's own verdict on too few examples: an anomaly of the dataset, of no feature."""
    statistics = tfdv.generate_statistics_from_dataframe(pd.DataFrame({"x": [1.0, 2.0, 3.0]}))
    schema = tfdv.infer_schema(statistics)
    schema.dataset_constraints.min_examples_count = 10
    anomalies = tfdv.validate_statistics(statistics, schema)
    assert not anomalies.anomaly_info and anomalies.HasField("dataset_anomaly_info")
    artifact = write_anomalies(tmp_path, {"train": anomalies_pb2.Anomalies(), "eval": anomalies})
    line = (
        "<dataset>: Low num examples in dataset. "
        "(The dataset has 3 examples, which is fewer than expected.)"
    )
    assert find_anomalies(artifact) == {"eval": [line]}

    with pytest.raises(DataAnomaliesError, match=re.escape(f"[eval] {line}")) as error:
        run_gate(tmp_path, artifact, clean_examples(tmp_path))
    assert "record check" not in str(error.value)
    assert not os.path.exists(tmp_path / "validated")


def clean_examples(tmp_path):
    """Four clean sample-like examples in each split."""
    records = trainer_examples.random_image_examples(np.random.default_rng(0), 4)
    return trainer_examples.examples_artifact(
        str(tmp_path / "examples"), {"train": records, "eval": records}
    )


def run_gate(tmp_path, anomalies, examples):
    """Runs the RecordCheck's executor on `examples` (28x28x1 images in `image`), then the
    ValidationGate's with the sample's schema; returns the validated schema's folder.

    The statistics, of a label alone, give the validated schema its numeric moments; the
    sample's schema gives the label its classes.
    """
    with open(trainer_examples.SAMPLE_SCHEMA) as file:
        schema = trainer_examples.schema_artifact(str(tmp_path / "schema"), file.read())
    statistics = standard_artifacts.ExampleStatistics()
    statistics.uri = str(tmp_path / "statistics")
    statistics.split_names = json.dumps(["train", "eval"])
    label_statistics = tfdv.generate_statistics_from_dataframe(pd.DataFrame({"label": [0, 1, 2]}))
    for split in ("train", "eval"):
        os.makedirs(os.path.join(statistics.uri, f"Split-{split}"))
        with open(os.path.join(statistics.uri, f"Split-{split}", "FeatureStats.pb"), "wb") as f:
            f.write(label_statistics.SerializeToString())
    report = RecordCheckReport()
    report.uri = str(tmp_path / "report")
    context = base_beam_executor.BaseBeamExecutor.Context(
        beam_pipeline_args=["--direct_running_mode=in_memory"],
        tmp_dir=str(tmp_path / "tmp"),
        unique_id="1",
    )
    RecordCheckExecutor(context).Do(
        {"examples": [examples]},
        {"report": [report]},
        {"image_key": "image", "image_shape": "[28, 28, 1]"},
    )
    validated = standard_artifacts.Schema()
    validated.uri = str(tmp_path / "validated")
    ValidationGate.EXECUTOR_SPEC.executor_class().Do(
        {
            "schema": [schema],
            "anomalies": [anomalies],
            "statistics": [statistics],
            "record_check": [report],
        },
        {"validated_schema": [validated]},
        {"label_key": "label", "max_bad_records": 0},
    )
    return validated.uri


def test_the_gate_passes_clean_records_and_lists_bad_ones_after_the_anomalies(tmp_path):
    no_anomalies = write_anomalies(tmp_path / "clean", {"train": {}, "eval": {}})
    validated = run_gate(tmp_path / "clean", no_anomalies, clean_examples(tmp_path / "clean"))
    assert os.listdir(validated) == ["schema.pbtxt"]

    records = trainer_examples.random_image_examples(np.random.default_rng(1), 4)
    empty_eval = trainer_examples.examples_artifact(
        str(tmp_path / "examples"), {"train": records, "eval": []}
    )
    anomalies = write_anomalies(
        tmp_path, {"train": {}, "eval": {"label": "Unexpectedly large value: 12."}}
    )
    with pytest.raises(DataAnomaliesError) as error:
        run_gate(tmp_path, anomalies, empty_eval)
    [eval_file] = os.listdir(os.path.join(empty_eval.uri, "Split-eval"))
    assert str(error.value) == (
        "ExampleValidator found anomalies against the schema; the run stops before training.\n"
        "  [eval] label: Out-of-range values (Unexpectedly large value: 12.)\n"
        "The record check also found records that cannot be trained on:\n"
        f"  [eval] <dataset>: the split holds no records "
        f"({os.path.join(empty_eval.uri, 'Split-eval', eval_file)})\n"
        "Fix the data, or update the schema (or --image-shape) if the change is intended."
    )
    assert not os.path.exists(tmp_path / "validated")


class TestAtomicPusher:
    def push(self, tmp_path, blessed=True, name="model", fingerprint=None):
        """Pushes a stand-in SavedModel `name`; with `fingerprint`, its fingerprint.pb."""
        model = standard_artifacts.Model()
        model.uri = str(tmp_path / name)
        serving = path_utils.serving_model_path(model.uri)
        os.makedirs(os.path.join(serving, "variables"))
        files = {"saved_model.pb": name, "variables/variables.index": name}
        if fingerprint is not None:
            files[atomic_pusher.FINGERPRINT_FILE] = fingerprint
        for file_name, content in files.items():
            with open(os.path.join(serving, file_name), "w") as file:
                file.write(content)
        blessing = standard_artifacts.ModelBlessing()
        blessing.uri = str(tmp_path / "blessing")
        blessing.set_int_custom_property("blessed", int(blessed))
        pushed = standard_artifacts.PushedModel()
        pushed.uri = str(tmp_path / f"pushed-{name}")
        destination = tfx.proto.PushDestination(
            filesystem=tfx.proto.PushDestination.Filesystem(
                base_directory=str(tmp_path / "serving")
            )
        )
        atomic_pusher.AtomicPushExecutor().Do(
            {
                standard_component_specs.MODEL_KEY: [model],
                standard_component_specs.MODEL_BLESSING_KEY: [blessing],
            },
            {standard_component_specs.PUSHED_MODEL_KEY: [pushed]},
            {standard_component_specs.PUSH_DESTINATION_KEY: proto_utils.proto_to_json(destination)},
        )
        return pushed

    def test_a_blessed_model_lands_whole_under_a_numeric_version(self, tmp_path):
        pushed = self.push(tmp_path)
        [version] = os.listdir(tmp_path / "serving")
        assert version.isdigit()
        assert sorted(os.listdir(tmp_path / "serving" / version)) == ["saved_model.pb", "variables"]
        assert pushed.get_int_custom_property("pushed") == 1
        assert pushed.get_string_custom_property("pushed_destination") == str(
            tmp_path / "serving" / version
        )

    def test_the_same_model_pushed_twice_keeps_one_version(self, tmp_path):
        first = self.push(tmp_path, fingerprint="fingerprint-a")
        again = self.push(tmp_path, name="same-model-again", fingerprint="fingerprint-a")
        [version] = os.listdir(tmp_path / "serving")
        assert again.get_int_custom_property("pushed") == 1
        assert again.get_string_custom_property("pushed_destination") == str(
            tmp_path / "serving" / version
        )
        assert first.get_string_custom_property("pushed_version") == version
        assert again.get_string_custom_property("pushed_version") == version

    def test_a_different_model_gets_a_new_version(self, tmp_path):
        self.push(tmp_path, fingerprint="fingerprint-a")
        self.push(tmp_path, name="other", fingerprint="fingerprint-b")
        assert len(os.listdir(tmp_path / "serving")) == 2

    def test_an_unblessed_model_is_not_pushed(self, tmp_path):
        pushed = self.push(tmp_path, blessed=False)
        assert not (tmp_path / "serving").exists()
        assert pushed.get_int_custom_property("pushed") == 0

    def test_a_copy_that_dies_halfway_leaves_no_version(self, tmp_path, monkeypatch):
        def dies_halfway(source, destination, **kwargs):
            os.makedirs(destination)
            open(os.path.join(destination, "partial"), "w").close()
            raise OSError("disk full")

        monkeypatch.setattr(atomic_pusher.io_utils, "copy_dir", dies_halfway)
        with pytest.raises(OSError, match="disk full"):
            self.push(tmp_path)
        assert os.listdir(tmp_path / "serving") == [], "no version, no staging folder left"

    def test_a_taken_version_is_never_reused(self, tmp_path, monkeypatch):
        monkeypatch.setattr(atomic_pusher.time, "time", lambda: 1700000000.5)
        (tmp_path / "serving" / "1700000000").mkdir(parents=True)
        pushed = self.push(tmp_path)
        assert pushed.get_string_custom_property("pushed_version") == "1700000001"
        assert os.listdir(tmp_path / "serving" / "1700000000") == []
        assert (tmp_path / "serving" / "1700000001" / "saved_model.pb").exists()
