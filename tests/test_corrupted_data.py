"""Corrupted data stops the run before the Trainer, naming split, file, records and feature.

Each kind of damage against the record check (components/data_checks/record_check.py) and the
checked ImportExampleGen (components/data_checks/checked_import.py) directly; then two local
runs, as a person runs them: image bytes that do not decode stopped by the ValidationGate, a
truncated TFRecord file stopped by ImportExampleGen. Both exit 1, train nothing and push nothing.
"""

import glob
import math
import os
import re
from pathlib import Path

import apache_beam as beam
import numpy as np
import pytest
import tensorflow as tf
from tfx.proto import example_gen_pb2

from components.data_checks.checked_import import (
    CheckedImportExecutor,
    UnreadableRecordsError,
    read_examples,
)
from components.data_checks.record_check import DATASET, find_bad_records
from pipelines import configs
from pipelines.local.layout import OutputLayout
from tests import trainer_examples
from tests.pipeline_support import (
    HEADER,
    executed_nodes,
    run_local_runner,
    versions,
    write_split_sample,
)
from tests.trainer_examples import bytes_feature, with_image

IMAGE_SHAPE = (28, 28, 1)
NOT_AN_IMAGE = b"these bytes are no image"


def split_file(examples, split: str) -> str:
    [path] = glob.glob(os.path.join(examples.uri, f"Split-{split}", "*"))
    return path


def rng():
    return np.random.default_rng(0)


# --- the record check, case by case ----------------------------------------------------------


def test_clean_images_pass(tmp_path):
    records = trainer_examples.random_image_examples(rng(), 20)
    examples = trainer_examples.examples_artifact(
        str(tmp_path), {"train": records, "eval": records[:5]}
    )
    assert find_bad_records(examples, "image", IMAGE_SHAPE) == []


def test_image_bytes_that_do_not_decode_are_counted_and_placed(tmp_path):
    records = trainer_examples.random_image_examples(rng(), 12)
    for index in (2, 7, 11):
        records[index] = with_image(records[index], bytes_feature(NOT_AN_IMAGE))
    examples = trainer_examples.examples_artifact(
        str(tmp_path), {"train": records, "eval": records[:2]}
    )
    [bad] = find_bad_records(examples, "image", IMAGE_SHAPE)
    path = split_file(examples, "train")
    assert (bad.split, bad.feature, bad.count, bad.records_in_split) == ("train", "image", 3, 12)
    assert bad.where == {path: [2, 7, 11]}
    # TensorFlow's own reason, from the first bad record, without its op names.
    assert bad.example == (
        "Unknown image file format. One of JPEG, JPEG XL, PNG, GIF, BMP, WebP required."
    )
    assert bad.line() == (
        f"[train] image: 3 of 12 records hold bytes that do not decode as an image "
        f"(first: {bad.example}): records 2, 7, 11 of {path}"
    )


def test_images_of_another_size_or_channel_count_are_named_by_shape(tmp_path):
    generator = rng()
    records = trainer_examples.random_image_examples(generator, 6)
    [larger] = trainer_examples.random_images(generator, 1, (32, 32, 1))
    [colour] = trainer_examples.random_images(generator, 1, (28, 28, 3))
    records[1] = trainer_examples.image_example(larger, 1)
    records[4] = trainer_examples.image_example(colour, 4)
    examples = trainer_examples.examples_artifact(str(tmp_path), {"train": records})
    path = split_file(examples, "train")
    assert sorted(bad.line() for bad in find_bad_records(examples, "image", IMAGE_SHAPE)) == [
        f"[train] image: 1 of 6 records are 28x28x3 images, not 28x28x1: record 4 of {path}",
        f"[train] image: 1 of 6 records are 32x32x1 images, not 28x28x1: record 1 of {path}",
    ]
    # For a model of 32x32x1 images, the larger image is the one that fits.
    assert sorted(bad.line() for bad in find_bad_records(examples, "image", (32, 32, 1))) == [
        f"[train] image: 1 of 6 records are 28x28x3 images, not 32x32x1: record 4 of {path}",
        f"[train] image: 4 of 6 records are 28x28x1 images, not 32x32x1: records 0, 2, 3, 5 "
        f"of {path}",
    ]


def test_a_missing_image_and_one_of_the_wrong_type_are_named(tmp_path):
    records = trainer_examples.random_image_examples(rng(), 4)
    png = tf.train.Example.FromString(records[0]).features.feature["image"].bytes_list.value[0]
    records[0] = with_image(records[0], None)
    records[1] = with_image(
        records[1], tf.train.Feature(int64_list=tf.train.Int64List(value=[1, 2]))
    )
    records[2] = with_image(records[2], bytes_feature(png, png))
    examples = trainer_examples.examples_artifact(str(tmp_path), {"train": records})
    problems = {
        bad.problem: bad.where[split_file(examples, "train")]
        for bad in find_bad_records(examples, "image", IMAGE_SHAPE)
    }
    assert problems == {
        "have no image": [0],
        "hold int64_list values, not the bytes of an image": [1],
        "hold 2 values, not one image": [2],
    }


def test_nan_and_infinite_floats_are_counted_by_feature(tmp_path):
    rows = [([0.5, 1.0], 3), ([math.nan, 1.0], 4), ([2.0, 3.0], 5), ([2.0, -math.inf], 6)]
    records = [
        trainer_examples.tabular_example(size, count, b"a", index % 3)
        for index, (size, count) in enumerate(rows)
    ]
    examples = trainer_examples.examples_artifact(str(tmp_path), {"train": records})
    [bad] = find_bad_records(examples, image_key="", image_shape=None)
    assert bad.line() == (
        f"[train] size: 2 of 4 records hold NaN or infinite values: records 1, 3 of "
        f"{split_file(examples, 'train')}"
    )


def test_an_empty_split_is_named(tmp_path):
    records = trainer_examples.random_image_examples(rng(), 3)
    examples = trainer_examples.examples_artifact(str(tmp_path), {"train": records, "eval": []})
    [bad] = find_bad_records(examples, "image", IMAGE_SHAPE)
    assert (bad.split, bad.feature, bad.records_in_split) == ("eval", DATASET, 0)
    assert bad.line() == (
        f"[eval] <dataset>: the split holds no records ({split_file(examples, 'eval')})"
    )


def test_an_image_key_needs_an_image_shape(tmp_path):
    examples = trainer_examples.examples_artifact(str(tmp_path), {"train": []})
    with pytest.raises(ValueError, match=r"image_shape must be \(height, width, channels\)"):
        find_bad_records(examples, "image", (28, 28))


# --- reading the input files: ImportExampleGen -----------------------------------------------


def write_records(path: Path, records: list[bytes]) -> Path:
    with tf.io.TFRecordWriter(str(path)) as writer:
        for record in records:
            writer.write(record)
    return path


def test_a_clean_file_reads_as_its_examples(tmp_path):
    records = trainer_examples.random_image_examples(rng(), 3)
    path = write_records(tmp_path / "data.tfrecord", records)
    # Compared as messages: serializing orders the feature map as it likes.
    assert list(read_examples(str(path))) == [tf.train.Example.FromString(r) for r in records]


def test_a_truncated_file_is_named_with_the_record_it_cuts(tmp_path):
    path = write_records(
        tmp_path / "data.tfrecord", trainer_examples.random_image_examples(rng(), 5)
    )
    path.write_bytes(path.read_bytes()[:-30])
    with pytest.raises(UnreadableRecordsError) as error:
        list(read_examples(str(path)))
    message = str(error.value)
    assert message.startswith(
        f"{path}: record 4 (counting from 0) cannot be read: the file is cut short or damaged ("
    )
    assert message.endswith("); the 4 records before it are readable.")


def test_a_record_that_is_not_a_tf_example_is_named(tmp_path):
    records = trainer_examples.random_image_examples(rng(), 4)
    records[2] = b"not a tf.Example"
    path = write_records(tmp_path / "data.tfrecord", records)
    with pytest.raises(UnreadableRecordsError) as error:
        list(read_examples(str(path)))
    assert str(error.value).startswith(
        f"{path}: record 2 (counting from 0) is not a serialized tf.train.Example ("
    )


def test_a_split_folder_without_files_is_named(tmp_path):
    (tmp_path / "eval").mkdir()
    read_split = CheckedImportExecutor().GetInputSourceToExamplePTransform()
    exec_properties = {
        "input_base": str(tmp_path),
        "output_data_format": example_gen_pb2.FORMAT_TF_EXAMPLE,
    }
    message = f"{tmp_path / 'eval' / '*'} matches no file: the split has no data."
    with pytest.raises(UnreadableRecordsError, match=re.escape(message)):
        _ = beam.Pipeline() | read_split(exec_properties, "eval/*")


# --- whole runs --------------------------------------------------------------------------------


def stopped_before_training(result, layout: OutputLayout) -> None:
    """The run exited 1 and trained, evaluated and pushed nothing."""
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
    assert "  start  Trainer" not in result.stdout
    assert not executed_nodes(layout) & {"Trainer", "Evaluator", "Pusher"}
    assert versions(layout) == []


def test_image_bytes_that_do_not_decode_stop_the_run_at_the_gate(tmp_path):
    data = write_split_sample(tmp_path / "data", train=48, eval=16)
    train_file = data / "train" / "data.tfrecord"
    records = [record.numpy() for record in tf.data.TFRecordDataset(str(train_file))]
    for index in (5, 20, 33):
        records[index] = with_image(records[index], bytes_feature(NOT_AN_IMAGE))
    write_records(train_file, records)
    layout = OutputLayout(str(tmp_path / "out"))

    result = run_local_runner(
        *("--data-root", str(data), "--schema", configs.SCHEMA_PATH),
        *("--output-dir", layout.output_dir),
    )

    stopped_before_training(result, layout)
    assert re.search(r"^  FAILED ValidationGate +\d+\.\d s$", result.stdout, re.MULTILINE)
    assert (
        "\nValidationGate failed: DataAnomaliesError: The record check found records that "
        "cannot be trained on; the run stops before training.\n"
    ) in result.stderr
    [(indices, path)] = re.findall(
        r"^  \[train\] image: 3 of 48 records hold bytes that do not decode as an image "
        r"\(first: Unknown image file format\. .*\): records (\d+, \d+, \d+) of (\S+)$",
        result.stderr,
        re.MULTILINE,
    )
    # The file and indices it names hold the three damaged images.
    assert path.startswith(os.path.join(layout.pipeline_root, "ImportExampleGen"))
    named = [int(index) for index in indices.split(", ")]
    written = list(tf.data.TFRecordDataset(path, compression_type="GZIP"))
    images = [
        tf.train.Example.FromString(written[index].numpy()).features.feature["image"]
        for index in named
    ]
    assert [image.bytes_list.value[0] for image in images] == [NOT_AN_IMAGE] * 3


def test_a_truncated_file_stops_the_run_at_example_gen(tmp_path):
    data = write_split_sample(tmp_path / "data", train=48, eval=16)
    train_file = data / "train" / "data.tfrecord"
    train_file.write_bytes(train_file.read_bytes()[:-30])
    layout = OutputLayout(str(tmp_path / "out"))

    result = run_local_runner(
        *("--data-root", str(data), "--schema", configs.SCHEMA_PATH),
        *("--output-dir", layout.output_dir),
    )

    stopped_before_training(result, layout)
    assert re.search(r"^  FAILED ImportExampleGen +\d+\.\d s$", result.stdout, re.MULTILINE)
    assert (
        f"\nImportExampleGen failed: UnreadableRecordsError: {train_file}: record 47 (counting "
        f"from 0) cannot be read: the file is cut short or damaged ("
    ) in result.stderr
    [(_, log_path)] = HEADER.findall(result.stdout)
    assert result.stderr.endswith(f"Traceback and full log: {log_path}\n")
