"""trainer/inputs/data.py, and the committed Fashion-MNIST sample with its schema and
make_sample.py."""

import gzip
import importlib.util
import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_data_validation as tfdv
from google.protobuf import text_format
from tensorflow_metadata.proto.v0 import schema_pb2
from tfx.components.trainer import fn_args_utils
from tfx.types import standard_component_specs as specs

from tests import trainer_examples
from trainer.config import TrainingConfig
from trainer.inputs import data

SAMPLE_SIZES = {"train": 10000, "eval": 2000}


def schema_from(text):
    return text_format.Parse(text, schema_pb2.Schema())


def load_make_sample():
    path = os.path.join(trainer_examples.SAMPLE_DIR, "make_sample.py")
    spec = importlib.util.spec_from_file_location("make_sample", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- trainer/inputs/data.py ---------------------------------------------------------------------


def test_num_classes_comes_from_the_label_domain_unless_configured():
    schema = data.load_schema(trainer_examples.SAMPLE_SCHEMA)
    assert data.resolve_num_classes(TrainingConfig(), schema) == 10
    assert data.resolve_num_classes(TrainingConfig(num_classes=4), schema) == 4


def test_num_classes_reads_a_named_int_domain():
    schema = schema_from(
        'feature { name: "y" type: INT domain: "classes" } '
        'int_domain { name: "classes" min: 0 max: 4 }'
    )
    assert data.resolve_num_classes(TrainingConfig(label_key="y"), schema) == 5


@pytest.mark.parametrize(
    "schema_text, message",
    [
        ('feature { name: "label" type: INT }', "label feature 'label' has no int_domain"),
        (
            'feature { name: "label" type: INT int_domain { min: 0 } }',
            "label feature 'label' has no int_domain",
        ),
        (
            'feature { name: "label" type: INT int_domain { min: -1 max: 3 } }',
            "Label feature 'label' has int_domain min -1",
        ),
        ('feature { name: "target" type: INT }', "label_key 'label' is not a feature"),
    ],
)
def test_unknown_num_classes_is_an_error_naming_the_label(schema_text, message):
    with pytest.raises(ValueError, match=message):
        data.resolve_num_classes(TrainingConfig(), schema_from(schema_text))


def test_missing_schema_file_is_named(tmp_path):
    with pytest.raises(ValueError, match="schema.pbtxt' does not exist"):
        data.load_schema(str(tmp_path / "schema.pbtxt"))
    with pytest.raises(ValueError, match="schema file is required"):
        data.load_schema(None)


def test_mlp_features_need_a_fixed_size_and_at_least_one_numeric_feature():
    varlen = schema_from(
        'feature { name: "label" type: INT } '
        'feature { name: "x" type: FLOAT value_count { min: 1 max: 3 } }'
    )
    with pytest.raises(ValueError, match="Feature 'x' has no fixed size"):
        data.parse_spec(TrainingConfig(model="mlp"), varlen)
    only_label = schema_from(
        'feature { name: "label" type: INT } feature { name: "s" type: BYTES }'
    )
    with pytest.raises(ValueError, match="numeric .* besides the label 'label'"):
        data.parse_spec(TrainingConfig(model="mlp"), only_label)


def test_inferred_value_counts_give_fixed_sizes():
    schema = schema_from(
        'feature { name: "label" type: INT } '
        'feature { name: "x" type: FLOAT value_count { min: 2 max: 2 } }'
    )
    assert data.parse_spec(TrainingConfig(model="mlp"), schema)["x"].shape == [2]
    assert data.model_input_shape(TrainingConfig(model="mlp"), schema) == (2,)


def test_sparse_features_are_densified_like_dense_ones():
    config = TrainingConfig(model="mlp")
    schema = schema_from(
        'feature { name: "label" type: INT } '
        'feature { name: "a" type: INT value_count { min: 1 max: 1 } } '
        'feature { name: "b" type: FLOAT shape { dim { size: 2 } } }'
    )
    features = {
        "b": tf.constant([[1.0, 2.0], [3.0, 4.0]]),
        "a": tf.sparse.from_dense(tf.constant([[5], [6]], tf.int64)),
    }
    np.testing.assert_array_equal(
        data.features_to_inputs(features, config, schema), [[5, 1, 2], [6, 3, 4]]
    )


def test_a_shared_shuffle_seed_shards_the_examples_disjointly(tmp_path):
    """What the multi-worker loop relies on: same seed, same order, so `shard` splits it."""
    rng = np.random.default_rng(0)
    examples = trainer_examples.examples_artifact(
        str(tmp_path / "examples"),
        {"train": trainer_examples.random_image_examples(rng, 40), "eval": []},
    )
    with open(trainer_examples.SAMPLE_SCHEMA) as schema_file:
        schema_artifact = trainer_examples.schema_artifact(
            str(tmp_path / "schema"), schema_file.read()
        )
    fn_args = fn_args_utils.get_common_fn_args(
        {specs.EXAMPLES_KEY: [examples], specs.SCHEMA_KEY: [schema_artifact]},
        {specs.TRAIN_ARGS_KEY: "{}", specs.EVAL_ARGS_KEY: "{}"},
    )
    schema = data.load_schema(fn_args.schema_path)
    config = TrainingConfig(batch_size=4)

    def shard(index, seed):
        dataset = data.make_dataset(
            fn_args.train_files,
            fn_args.data_accessor,
            schema,
            config,
            training=True,
            shuffle_seed=seed,
        ).shard(2, index)
        return [float(image.numpy().sum()) for images, _ in dataset.take(5) for image in images]

    first, second = shard(0, seed=7), shard(1, seed=7)
    assert first == shard(0, seed=7)
    assert len(set(first) | set(second)) == 40, "one epoch across the two shards, no overlap"


def test_decode_images_scales_to_unit_floats():
    image = np.array([[[0], [255]], [[51], [102]]], np.uint8)
    decoded = data.decode_images(tf.constant([tf.io.encode_png(image).numpy()]), (2, 2, 1))
    assert decoded.dtype == tf.float32 and decoded.shape == (1, 2, 2, 1)
    np.testing.assert_allclose(decoded[0, :, :, 0], [[0, 1], [0.2, 0.4]], atol=1e-6)


# --- the committed sample ------------------------------------------------------------------


@pytest.mark.parametrize("split", sorted(SAMPLE_SIZES))
def test_committed_sample_is_stratified_and_decodes(split):
    path = os.path.join(trainer_examples.SAMPLE_DIR, split, "data.tfrecord")
    assert os.path.exists(path), f"{path} is missing: see data/fashion_mnist/README.md"
    labels = []
    for index, record in enumerate(tf.data.TFRecordDataset(path)):
        example = tf.train.Example.FromString(record.numpy())
        labels.extend(example.features.feature["label"].int64_list.value)
        if index < 50:
            [png] = example.features.feature["image"].bytes_list.value
            image = tf.io.decode_png(png)
            assert image.dtype == tf.uint8 and image.shape == (28, 28, 1)
    counts = np.bincount(labels, minlength=10)
    assert len(labels) == SAMPLE_SIZES[split] and len(counts) == 10
    assert counts.max() - counts.min() <= 1
    with open(os.path.join(trainer_examples.SAMPLE_DIR, "labels.txt")) as f:
        assert len(f.read().splitlines()) == 10


def test_schema_accepts_the_sample_and_flags_an_out_of_range_label(tmp_path):
    schema = data.load_schema(trainer_examples.SAMPLE_SCHEMA)
    stats = tfdv.generate_statistics_from_tfrecord(
        os.path.join(trainer_examples.SAMPLE_DIR, "eval", "data.tfrecord")
    )
    assert not tfdv.validate_statistics(stats, schema).anomaly_info
    bad_path = str(tmp_path / "bad.tfrecord")
    images = trainer_examples.random_images(np.random.default_rng(0), 2)
    with tf.io.TFRecordWriter(bad_path) as writer:
        writer.write(trainer_examples.image_example(images[0], 3))
        writer.write(trainer_examples.image_example(images[1], 12))
    anomalies = tfdv.validate_statistics(tfdv.generate_statistics_from_tfrecord(bad_path), schema)
    assert list(anomalies.anomaly_info) == ["label"]
    assert "12" in anomalies.anomaly_info["label"].description


def test_make_sample_draws_a_seeded_stratified_sample(tmp_path):
    make_sample = load_make_sample()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(300, 28, 28), dtype=np.uint8)
    labels = np.repeat(np.arange(10, dtype=np.uint8), 30)
    idx_dir = tmp_path / "idx"
    idx_dir.mkdir()
    for name, array, magic in (
        ("train-images-idx3-ubyte", images, 2051),
        ("train-labels-idx1-ubyte", labels, 2049),
        ("t10k-images-idx3-ubyte", images[:100], 2051),
        ("t10k-labels-idx1-ubyte", labels[:100], 2049),
    ):
        header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
        with gzip.open(idx_dir / f"{name}.gz", "wb") as f:
            f.write(header + array.tobytes())

    for out in ("a", "b"):
        make_sample.main(
            [
                "--idx-dir",
                str(idx_dir),
                "--output-dir",
                str(tmp_path / out),
                "--train-size",
                "25",
                "--eval-size",
                "3",
                "--seed",
                "7",
            ]
        )

    train = (tmp_path / "a" / "train" / "data.tfrecord").read_bytes()
    assert train == (tmp_path / "b" / "train" / "data.tfrecord").read_bytes()
    records = [
        tf.train.Example.FromString(r.numpy())
        for r in tf.data.TFRecordDataset(str(tmp_path / "a" / "train" / "data.tfrecord"))
    ]
    counts = np.bincount(
        [r.features.feature["label"].int64_list.value[0] for r in records], minlength=10
    )
    assert counts.sum() == 25 and counts.max() - counts.min() <= 1
    first = records[0].features.feature
    source = images[labels == first["label"].int64_list.value[0]]
    decoded = tf.io.decode_png(first["image"].bytes_list.value[0]).numpy()[:, :, 0]
    assert any(np.array_equal(decoded, candidate) for candidate in source)
    eval_path = str(tmp_path / "a" / "eval" / "data.tfrecord")
    assert sum(1 for _ in tf.data.TFRecordDataset(eval_path)) == 3


def test_make_sample_errors_name_the_file_and_the_short_class(tmp_path):
    make_sample = load_make_sample()
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        make_sample.read_idx(str(tmp_path), "train-images-idx3-ubyte", rank=3)
    labels = np.repeat(np.arange(4), 10)  # classes 4..9 have no examples
    with pytest.raises(ValueError, match="class 4 has 0 examples, 1 requested"):
        make_sample.stratified_indices(labels, 10, np.random.default_rng(0))


def test_make_sample_repeats_are_shifted_copies_each_distinct():
    make_sample = load_make_sample()
    image = np.zeros((1, 28, 28), np.uint8)
    image[0, 10, 12] = 255
    moved = make_sample.shifted(image, (1, -2))
    assert moved.shape == image.shape
    assert moved[0, 11, 10] == 255 and int(moved.sum()) == 255
    assert np.array_equal(make_sample.shifted(image, (0, 0)), image)
    assert make_sample.SHIFTS[0] == (0, 0)
    assert len(set(make_sample.SHIFTS)) == len(make_sample.SHIFTS)
    with pytest.raises(ValueError, match="more than SHIFT_PAD"):
        make_sample.shifted(image, (3, 0))
