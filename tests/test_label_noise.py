"""components/comparison/label_noise.py: which labels flip, to what, and what the artifact
records."""

import collections
import json
import os

import pytest
import tensorflow as tf
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2
from ml_metadata import metadata_store
from tfx import v1 as tfx
from tfx.dsl.components.base import base_beam_executor
from tfx.types import artifact_utils, standard_artifacts

from components.comparison.label_noise import LabelFlipper, LabelNoise, LabelNoiseExecutor
from pipelines.cloud import compiler
from tests.trainer_examples import (
    SAMPLE_SCHEMA,
    examples_artifact,
    schema_artifact,
    tabular_example,
)

NUM_CLASSES = 10
RATE = 0.3
TRAIN = [tabular_example([float(i), 0.5], i, b"x", i % NUM_CLASSES) for i in range(1000)]
EVAL = [tabular_example([float(i), -0.5], i, b"y", i % NUM_CLASSES) for i in range(50)]


def labels_by_count(records):
    """The label of each record, keyed by its unique `count` feature."""
    labels = {}
    for record in records:
        features = tf.train.Example.FromString(record).features.feature
        labels[features["count"].int64_list.value[0]] = features["label"].int64_list.value[0]
    return labels


def split_records(artifact, split):
    pattern = os.path.join(artifact_utils.get_split_uri([artifact], split), "*")
    files = tf.io.gfile.glob(pattern)
    return [r.numpy() for r in tf.data.TFRecordDataset(files, compression_type="GZIP")]


def split_bytes(artifact, split):
    folder = artifact_utils.get_split_uri([artifact], split)
    return {name: open(os.path.join(folder, name), "rb").read() for name in os.listdir(folder)}


def run_label_noise(root, name, seed, num_classes=NUM_CLASSES, schema_text=None):
    """Runs the executor at rate 0.3 on TRAIN/EVAL (written once under root)."""
    source_root = root / "examples"
    splits = ["train", "eval"] if source_root.exists() else {"train": TRAIN, "eval": EVAL}
    source = examples_artifact(str(source_root), splits)
    noisy = standard_artifacts.Examples()
    noisy.uri = str(root / name)
    inputs = {"examples": [source]}
    if schema_text is not None:
        inputs["schema"] = [schema_artifact(str(root / f"schema-{name}"), schema_text)]
    context = base_beam_executor.BaseBeamExecutor.Context(
        beam_pipeline_args=["--direct_running_mode=in_memory"],
        tmp_dir=str(root / f"tmp-{name}"),
        unique_id=name,
    )
    exec_properties = {"noise_rate": RATE, "seed": seed, "label_key": "label", "split": "train"}
    if num_classes is not None:
        exec_properties["num_classes"] = num_classes
    LabelNoiseExecutor(context).Do(inputs, {"noisy_examples": [noisy]}, exec_properties)
    return source, noisy


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Seed 7 with num_classes given; seed 7 again, classes from the schema; seed 8."""
    root = tmp_path_factory.mktemp("label_noise")
    source, first = run_label_noise(root, "first", seed=7)
    _, again = run_label_noise(
        root, "again", seed=7, num_classes=None, schema_text=open(SAMPLE_SCHEMA).read()
    )
    _, other = run_label_noise(root, "other", seed=8)
    return source, first, again, other


def test_exactly_the_recorded_labels_flip_each_to_another_class(runs):
    source, noisy, _, _ = runs
    before = labels_by_count(split_records(source, "train"))
    after = labels_by_count(split_records(noisy, "train"))
    assert set(after) == set(before)
    changed = [count for count in before if after[count] != before[count]]
    assert len(changed) == noisy.get_int_custom_property("labels_flipped")
    assert noisy.get_int_custom_property("examples_in_split") == len(TRAIN)
    assert noisy.get_float_custom_property("label_noise_rate") == RATE
    assert noisy.get_int_custom_property("label_noise_seed") == 7
    assert all(0 <= label < NUM_CLASSES for label in after.values())
    # 1000 draws at p=0.3: the count is within 4 standard deviations (58) of 300.
    assert abs(len(changed) - RATE * len(TRAIN)) < 58
    # Unflipped records are the source's bytes, untouched.
    unchanged = set(split_records(source, "train")) & set(split_records(noisy, "train"))
    assert len(unchanged) == len(TRAIN) - len(changed)


def test_other_splits_are_copied_byte_for_byte_and_split_names_kept(runs):
    source, noisy, _, _ = runs
    assert split_bytes(noisy, "eval") == split_bytes(source, "eval")
    assert noisy.split_names == source.split_names
    assert noisy.get_string_custom_property("file_format") == "tfrecords_gzip"
    assert noisy.get_string_custom_property("payload_format") == "FORMAT_TF_EXAMPLE"


def test_the_same_seed_flips_the_same_labels_and_another_seed_others(runs):
    # "again" read its 10 classes from the sample schema: the same as num_classes=10.
    _, first, again, other = runs
    labels = labels_by_count(split_records(first, "train"))
    assert labels_by_count(split_records(again, "train")) == labels
    assert labels_by_count(split_records(other, "train")) != labels
    flipped = first.get_int_custom_property("labels_flipped")
    assert again.get_int_custom_property("labels_flipped") == flipped


def test_the_component_on_local_dag_runner_records_the_same_flips(runs, tmp_path):
    source, first, _, _ = runs
    examples = tfx.dsl.Importer(
        source_uri=source.uri,
        artifact_type=standard_artifacts.Examples,
        properties={"split_names": source.split_names},
    ).with_id("import_examples")
    noisy = LabelNoise(
        examples=examples.outputs["result"], noise_rate=RATE, seed=7, num_classes=NUM_CLASSES
    )
    metadata_path = str(tmp_path / "metadata.sqlite")
    tfx.orchestration.LocalDagRunner().run(
        tfx.dsl.Pipeline(
            pipeline_name="label-noise",
            pipeline_root=str(tmp_path / "root"),
            components=[examples, noisy],
            metadata_connection_config=(
                tfx.orchestration.metadata.sqlite_metadata_connection_config(metadata_path)
            ),
            beam_pipeline_args=["--direct_running_mode=in_memory"],
        )
    )
    store = metadata_store.MetadataStore(
        tfx.orchestration.metadata.sqlite_metadata_connection_config(metadata_path)
    )
    [published] = [
        artifact
        for artifact in store.get_artifacts_by_type("Examples")
        if "labels_flipped" in artifact.custom_properties
    ]
    properties = published.custom_properties
    assert properties["labels_flipped"].int_value == first.get_int_custom_property("labels_flipped")
    assert properties["examples_in_split"].int_value == len(TRAIN)
    assert properties["label_noise_seed"].int_value == 7
    assert properties["label_noise_rate"].double_value == RATE
    noisy_records = split_records(examples_at(published.uri), "train")
    assert labels_by_count(noisy_records) == labels_by_count(split_records(first, "train"))


def examples_at(uri):
    artifact = standard_artifacts.Examples()
    artifact.uri = uri
    artifact.split_names = artifact_utils.encode_split_names(["train", "eval"])
    return artifact


def test_the_flip_follows_the_content_not_the_order_of_the_features_in_the_bytes():
    """ExampleGen's writer orders a tf.Example's feature map differently from run to run; the
    same example must draw the same flip either way."""
    flip = LabelFlipper(noise_rate=0.5, seed=3, num_classes=NUM_CLASSES, label_key="label")
    decisions = []
    for label in range(40):
        image = tf.train.Example()
        image.features.feature["image"].bytes_list.value.append(b"png %d" % label)
        tag = tf.train.Example()
        tag.features.feature["label"].int64_list.value.append(label % NUM_CLASSES)
        # Concatenated messages merge: the same example, its two features in either order.
        forward = image.SerializeToString() + tag.SerializeToString()
        backward = tag.SerializeToString() + image.SerializeToString()
        assert forward != backward
        assert tf.train.Example.FromString(forward) == tf.train.Example.FromString(backward)
        (new_forward, flipped), (new_backward, flipped_backward) = flip(forward), flip(backward)
        assert flipped == flipped_backward
        assert tf.train.Example.FromString(new_forward) == tf.train.Example.FromString(
            new_backward
        )
        decisions.append(flipped)
    assert 0 < sum(decisions) < len(decisions)


def test_flips_land_uniformly_on_the_other_classes():
    flip = LabelFlipper(noise_rate=0.5, seed=11, num_classes=NUM_CLASSES, label_key="label")
    records = [tabular_example([0.0, 0.0], i, b"z", 0) for i in range(4000)]
    new_labels = [labels_by_count([flip(r)[0]]).popitem()[1] for r in records if flip(r)[1]]
    assert abs(len(new_labels) / len(records) - 0.5) < 0.04
    counts = collections.Counter(new_labels)
    assert 0 not in counts
    expected = len(new_labels) / (NUM_CLASSES - 1)
    assert set(counts) == set(range(1, NUM_CLASSES))
    assert all(abs(count - expected) < 0.35 * expected for count in counts.values())


def test_a_label_outside_the_classes_is_an_error_naming_the_label_key():
    flip = LabelFlipper(noise_rate=0.99, seed=0, num_classes=3, label_key="label")
    with pytest.raises(ValueError, match=r"label_key 'label' must hold one integer label in 0..2"):
        flip(tabular_example([0.0, 0.0], 1, b"x", 5))


@pytest.mark.parametrize(
    "arguments, message",
    [
        (dict(noise_rate=1.0, seed=0), "noise_rate must be a number in \\[0, 1\\), got 1.0"),
        (dict(noise_rate=-0.1, seed=0), "noise_rate must be a number in \\[0, 1\\)"),
        (dict(noise_rate=0.1, seed=-1), "seed must be an integer >= 0, got -1"),
        (dict(noise_rate=0.1, seed=0, label_key=""), "label_key must be a non-empty string"),
        (dict(noise_rate=0.1, seed=0, split=""), "split must be a non-empty split name"),
        (dict(noise_rate=0.1, seed=0, num_classes=1), "num_classes must be an integer >= 2"),
        (dict(noise_rate=0.1, seed=0, schema=None), "needs a schema or num_classes"),
    ],
)
def test_bad_parameters_are_errors_naming_them(arguments, message):
    channels = {
        "examples": tfx.dsl.Channel(type=standard_artifacts.Examples),
        "schema": tfx.dsl.Channel(type=standard_artifacts.Schema),
    }
    with pytest.raises(ValueError, match=message):
        LabelNoise(**{**channels, **arguments})


def test_a_missing_split_is_named(tmp_path):
    source = examples_artifact(str(tmp_path / "examples"), {"eval": EVAL})
    noisy = standard_artifacts.Examples()
    noisy.uri = str(tmp_path / "noisy")
    context = base_beam_executor.BaseBeamExecutor.Context(tmp_dir=str(tmp_path), unique_id="1")
    with pytest.raises(ValueError, match="split 'train' is not a split of the examples"):
        LabelNoiseExecutor(context).Do(
            {"examples": [source]},
            {"noisy_examples": [noisy]},
            {
                "noise_rate": 0.1,
                "seed": 0,
                "label_key": "label",
                "split": "train",
                "num_classes": 3,
            },
        )


def test_the_component_compiles_for_vertex(tmp_path):
    examples = tfx.dsl.Importer(
        source_uri="gs://bucket/examples", artifact_type=standard_artifacts.Examples
    ).with_id("import_examples")
    noisy = LabelNoise(examples=examples.outputs["result"], noise_rate=RATE, seed=7, num_classes=10)
    path = compiler.compile_pipeline(
        tfx.dsl.Pipeline(
            pipeline_name="label-noise",
            pipeline_root="gs://bucket/root",
            components=[examples, noisy],
        ),
        "gsam-tfx:test",
        str(tmp_path / "pipeline.json"),
    )
    with open(path) as file:
        spec = json_format.ParseDict(
            json.load(file)["pipelineSpec"], pipeline_spec_pb2.PipelineSpec()
        )
    task = spec.root.dag.tasks["LabelNoise"]
    assert task.inputs.artifacts["examples"].task_output_artifact.producer_task == "import_examples"
    parameters = {
        name: value.runtime_value.constant_value for name, value in task.inputs.parameters.items()
    }
    assert parameters["noise_rate"].double_value == RATE
    assert parameters["seed"].int_value == 7
