"""`--module-file` in the pipeline: Transform with the module's `preprocessing_fn`, the module's
`build_model` trained with GSAM, serving raw examples; the same in compiled pipelines, in
comparisons and in the Tuner; bad modules stop the run before anything trains."""

import json
import os
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft
import yaml
from tfx import v1 as tfx

from bench.tabular_reference import write_csv_splits
from pipelines import kubeflow_runner, vertex_runner
from pipelines.local import run_here, summary
from pipelines.local.layout import OutputLayout
from tests import trainer_examples
from tests.pipeline_support import build_pipeline, executed_nodes, node_outputs, versions
from tests.test_user_module import DENSE_MODEL, TABULAR_MODULE, write_module
from trainer.models import export
from trainer.search_space import SearchSpace
from trainer.user_module import PREPROCESSING_FN, ModuleFile

TINY = ["--epochs", "2", "--batch-size", "32", "--train-steps-per-epoch", "6"]


@pytest.fixture(scope="module")
def tabular_run(tmp_path_factory):
    """The breast cancer CSV (398 train, 171 eval rows, 30 unscaled columns) through the local
    runner with examples/tabular_module.py: Transform z-scores, the module's model trains."""
    root = tmp_path_factory.mktemp("tabular")
    data_root = write_csv_splits(str(root / "data"))
    layout = OutputLayout(str(root / "out"))
    status = run_here.run(
        tfx.orchestration.LocalDagRunner(),
        "test",
        [
            "--data-root",
            data_root,
            "--output-dir",
            layout.output_dir,
            "--pipeline-name",
            "module",
            "--module-file",
            TABULAR_MODULE,
            "--class-names",
            "malignant,benign",
            "--accuracy-threshold",
            "0.8",
            *TINY,
        ],
    )
    return status, layout, data_root


def test_the_module_trains_through_transform_blesses_and_pushes(tabular_run):
    status, layout, _ = tabular_run
    assert status == 0
    assert {"CsvExampleGen", "Transform", "Trainer", "Evaluator", "Pusher"} <= executed_nodes(
        layout
    )
    run = summary.latest_run(layout.metadata_path, "module")
    [version] = versions(layout)
    assert run.pushed_model == os.path.join(layout.serving_model_dir, version)
    assert run.accuracy > 0.8  # standardized inputs: far above the majority class (0.61)
    assert export.read_class_names(run.pushed_model) == ["malignant", "benign"]


def test_the_pushed_model_serves_raw_rows_as_the_trained_model_scores_transformed_ones(
    tabular_run,
):
    _, layout, _ = tabular_run
    [model] = node_outputs(layout, "Trainer", "model")
    [graph] = node_outputs(layout, "Transform", "transform_graph")
    [raw] = node_outputs(layout, "CsvExampleGen", "examples")
    run = summary.latest_run(layout.metadata_path, "module")
    files = tf.io.gfile.glob(os.path.join(raw.uri, "Split-eval", "*"))
    records = [r.numpy() for r in tf.data.TFRecordDataset(files, "GZIP").take(20)]

    served = (
        tf.saved_model.load(run.pushed_model)
        .signatures["serving_default"](examples=tf.constant(records))["probabilities"]
        .numpy()
    )

    transform = tft.TFTransformOutput(graph.uri)
    spec = transform.raw_feature_spec()
    spec.pop("label")
    transformed = transform.transform_raw_features(tf.io.parse_example(records, spec))
    keras_model = keras.saving.load_model(export.keras_model_path(model.uri))
    features = {name: transformed[name] for name in keras_model.input}
    expected = keras_model(features, training=False).numpy()
    np.testing.assert_allclose(served, expected, atol=1e-5)
    # Not the identity: the raw values are in the thousands, the transformed ones are z-scores.
    assert np.abs(transformed["mean_area"].numpy()).max() < 10


def task_parameter(spec: dict, task: str, name: str) -> str:
    """A compiled task's constant string parameter, in either of KFP's spec forms."""
    value = spec["root"]["dag"]["tasks"][task]["inputs"]["parameters"][name]["runtimeValue"]
    return value["constant"] if "constant" in value else value["constantValue"]["stringValue"]


def test_the_module_compiles_into_vertex_and_kubeflow_pipelines(tmp_path):
    common = ["--pipeline-root", "gs://bucket/root", "--data-root", "gs://bucket/data"]
    common += ["--data-format", "csv", "--module-file", TABULAR_MODULE]
    module = ModuleFile.read(TABULAR_MODULE)
    for runner, name in ((vertex_runner, "pipeline.json"), (kubeflow_runner, "pipeline.yaml")):
        output = str(tmp_path / name)
        assert runner.main(["--output-file", output, "--image", "gcr.io/p/i", *common]) == 0
        with open(output) as file:
            document = json.load(file) if name.endswith(".json") else yaml.safe_load(file)
        spec = document.get("pipelineSpec", document)
        assert task_parameter(spec, "Transform", "preprocessing_fn") == PREPROCESSING_FN
        # The module travels as its source, in the Transform's and the Trainer's
        # custom_config: nothing to upload before compiling.
        for task in ("Transform", "Trainer"):
            config = json.loads(task_parameter(spec, task, "custom_config"))
            assert ModuleFile.from_custom_config(config) == module, (name, task)


def test_without_preprocessing_fn_there_is_no_transform_and_the_module_reaches_the_trainer(
    tmp_path,
):
    module = ModuleFile.read(write_module(tmp_path, DENSE_MODEL))
    nodes = {node.id: node for node in build_pipeline(tmp_path, module_file=module).components}
    assert "Transform" not in nodes
    config = json.loads(nodes["Trainer"].exec_properties["custom_config"])
    assert ModuleFile.from_custom_config(config) == module

    tabular = ModuleFile.read(TABULAR_MODULE)
    nodes = {node.id: node for node in build_pipeline(tmp_path, module_file=tabular).components}
    assert nodes["Trainer"].inputs["examples"] is nodes["Transform"].outputs["transformed_examples"]
    assert "transform_graph" in nodes["Trainer"].inputs
    # The Evaluator judges the served model on raw examples.
    assert nodes["Evaluator"].inputs["examples"] is nodes["ImportExampleGen"].outputs["examples"]


def test_comparison_and_tuning_share_one_transform_and_carry_the_module(tmp_path):
    from pipelines.stages.comparison import ComparisonSpec

    module = ModuleFile.read(TABULAR_MODULE)
    dag = build_pipeline(
        tmp_path,
        module_file=module,
        comparison=ComparisonSpec(methods=("sam", "gsam"), seeds=2, label_noise=0.2),
        tuning=SearchSpace(max_trials=1),
    )
    nodes = {node.id: node for node in dag.components}
    assert [name for name in nodes if name.startswith("Transform")] == ["Transform"]
    noise = nodes["LabelNoise"]
    assert noise.inputs["examples"] is nodes["Transform"].outputs["transformed_examples"]
    for name in ("Trainer.sam.seed1", "Trainer.gsam.seed2", "Tuner.sam", "Tuner.gsam"):
        config = json.loads(nodes[name].exec_properties["custom_config"])
        assert ModuleFile.from_custom_config(config) == module, name
        assert nodes[name].inputs["examples"] is noise.outputs["noisy_examples"], name


HP_MODEL = """
import keras

def build_model(feature_specs, num_classes, hp):
    units = hp.Choice("units", [4, 16])
    inputs = {name: keras.Input(spec.shape, dtype=spec.dtype, name=name)
              for name, spec in sorted(feature_specs.items())}
    x = keras.layers.Concatenate()([keras.layers.Reshape((-1,))(t) for t in inputs.values()])
    x = keras.layers.Dense(units, activation="relu")(x)
    return keras.Model(inputs, keras.layers.Dense(num_classes, activation="softmax")(x))
"""


def test_the_tuner_searches_the_modules_own_hyperparameters(tmp_path):
    from trainer.config import TrainingConfig

    module = ModuleFile.read(write_module(tmp_path, HP_MODEL))
    rng = np.random.default_rng(0)
    splits = {
        "train": trainer_examples.random_tabular_examples(rng, 32),
        "eval": trainer_examples.random_tabular_examples(rng, 8),
    }
    training = TrainingConfig(model="mlp", batch_size=16, min_train_steps=0)
    space = SearchSpace(max_trials=2, epochs_per_trial=1, search_seed=1)
    best, results = trainer_examples.run_tuner(
        tmp_path,
        {**training.to_custom_config(), **space.to_custom_config(), **module.to_custom_config()},
        splits,
        trainer_examples.TABULAR_SCHEMA,
    )
    assert best["values"]["units"] in (4, 16) and "rho_max" in best["values"]
    assert len(results) == 2
    # The Trainer lays the tuned values over its config; `units` stays the model's.
    serving_dir, _ = trainer_examples.run_trainer(
        tmp_path / "trainer",
        training,
        splits,
        trainer_examples.TABULAR_SCHEMA,
        custom_config={**training.to_custom_config(), **module.to_custom_config()},
        hyperparameters=best,
    )
    keras_model = keras.saving.load_model(export.keras_model_path(os.path.dirname(serving_dir)))
    assert [layer.units for layer in keras_model.layers if isinstance(layer, keras.layers.Dense)][
        0
    ] == best["values"]["units"]


def test_a_module_without_hooks_stops_the_run_before_anything_runs(tmp_path, capsys):
    path = write_module(tmp_path, "x = 1\n")
    with pytest.raises(SystemExit):
        run_here.run(
            tfx.orchestration.LocalDagRunner(),
            "test",
            ["--module-file", path, "--output-dir", str(tmp_path / "out")],
        )
    assert f"{path} defines neither preprocessing_fn nor build_model" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "out" / "pipeline")


IMAGE_MODEL = """
import keras

def build_model(feature_specs, num_classes):
    image = keras.Input(feature_specs["image"].shape, name="image")
    x = keras.layers.Conv2D(8, 3, activation="relu")(image)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(image, keras.layers.Dense(num_classes, activation="softmax")(x))
"""


def test_an_image_build_model_trains_and_pushes(sample, tmp_path):
    layout = OutputLayout(str(tmp_path / "out"))
    status = run_here.run(
        tfx.orchestration.LocalDagRunner(),
        "test",
        [
            "--data-root",
            str(sample),
            "--output-dir",
            layout.output_dir,
            "--pipeline-name",
            "images",
            "--module-file",
            write_module(tmp_path, textwrap.dedent(IMAGE_MODEL)),
            "--accuracy-threshold",
            "0",
            "--epochs",
            "1",
            "--batch-size",
            "32",
            "--train-steps-per-epoch",
            "3",
            "--class-names-file",
            os.path.join(trainer_examples.SAMPLE_DIR, "labels.txt"),
        ],
    )
    assert status == 0
    run = summary.latest_run(layout.metadata_path, "images")
    [version] = versions(layout)
    assert run.pushed_model == os.path.join(layout.serving_model_dir, version)
    kernels = tf.train.list_variables(os.path.join(run.pushed_model, "variables", "variables"))
    assert [3, 3, 1, 8] in [shape for _, shape in kernels], "the module's convolution"
    # The class names of --class-names-file are recorded with the model.
    assert export.read_class_names(run.pushed_model)[2] == "Pullover"
