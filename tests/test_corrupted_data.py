"""Corrupted data stops the run before the Trainer, naming split, file, records and feature.

Each kind of damage against the record check (components/data_checks/record_check.py, a Beam
job: the image cases together under a 2-worker DirectRunner) and the checked ImportExampleGen
(components/data_checks/checked_import.py) directly; the record check's memory bound; then
local runs, as a person runs them: image bytes that do not decode stopped by the
ValidationGate, or left out with --max-bad-records, and a truncated TFRecord file stopped by
ImportExampleGen. A stopped run exits 1, trains nothing and pushes nothing.
"""

import glob
import json
import math
import os
import pickle
import re
from pathlib import Path

import apache_beam as beam
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_data_validation as tfdv
from tfx.proto import example_gen_pb2

from components.data_checks.checked_import import (
    CheckedImportExecutor,
    UnreadableRecordsError,
    read_examples,
)
from components.data_checks.record_check import CheckFile, find_bad_records
from components.data_checks.record_findings import (
    DATASET,
    NAMED_RECORDS,
    Findings,
    merge_findings,
)
from pipelines import configs
from pipelines.local.layout import OutputLayout
from tests import trainer_examples
from tests.pipeline_support import (
    HEADER,
    executed_nodes,
    node_inputs,
    node_outputs,
    run_local_runner,
    versions,
    write_split_sample,
)
from tests.trainer_examples import bytes_feature, with_image
from trainer.training import history

IMAGE_SHAPE = (28, 28, 1)
NOT_AN_IMAGE = b"these bytes are no image"
TWO_WORKERS = ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]


def split_file(examples, split: str) -> str:
    [path] = glob.glob(os.path.join(examples.uri, f"Split-{split}", "*"))
    return path


def rng():
    return np.random.default_rng(0)


# --- the record check, case by case ----------------------------------------------------------


def undecodable_records():
    records = trainer_examples.random_image_examples(rng(), 12)
    for index in (2, 7, 11):
        records[index] = with_image(records[index], bytes_feature(NOT_AN_IMAGE))
    return records


def misshapen_records():
    generator = rng()
    records = trainer_examples.random_image_examples(generator, 6)
    [larger] = trainer_examples.random_images(generator, 1, (32, 32, 1))
    [colour] = trainer_examples.random_images(generator, 1, (28, 28, 3))
    records[1] = trainer_examples.image_example(larger, 1)
    records[4] = trainer_examples.image_example(colour, 4)
    return records


def malformed_records():
    records = trainer_examples.random_image_examples(rng(), 4)
    png = tf.train.Example.FromString(records[0]).features.feature["image"].bytes_list.value[0]
    records[0] = with_image(records[0], None)
    records[1] = with_image(
        records[1], tf.train.Feature(int64_list=tf.train.Int64List(value=[1, 2]))
    )
    records[2] = with_image(records[2], bytes_feature(png, png))
    return records


@pytest.fixture(scope="module")
def image_cases(tmp_path_factory):
    """Every image case, one split each, checked in one Beam job under two worker
    processes: the examples, and the problems found, by split."""
    examples = trainer_examples.examples_artifact(
        str(tmp_path_factory.mktemp("cases") / "examples"),
        {
            "clean": trainer_examples.random_image_examples(rng(), 20),
            "undecodable": undecodable_records(),
            "misshapen": misshapen_records(),
            "malformed": malformed_records(),
            "empty": [],
        },
    )
    found = {}
    for bad in find_bad_records(examples, "image", IMAGE_SHAPE, TWO_WORKERS):
        found.setdefault(bad.split, []).append(bad)
    return examples, found


def test_clean_images_pass(image_cases):
    _, found = image_cases
    assert "clean" not in found
    assert set(found) == {"undecodable", "misshapen", "malformed", "empty"}


def test_image_bytes_that_do_not_decode_are_counted_and_placed(image_cases):
    examples, found = image_cases
    [bad] = found["undecodable"]
    path = split_file(examples, "undecodable")
    assert (bad.split, bad.feature, bad.count, bad.records_in_split) == (
        "undecodable",
        "image",
        3,
        12,
    )
    assert bad.where == {path: [2, 7, 11]}
    # TensorFlow's own reason, from the first bad record, without its op names.
    assert bad.example == (
        "Unknown image file format. One of JPEG, JPEG XL, PNG, GIF, BMP, WebP required."
    )
    assert bad.line() == (
        f"[undecodable] image: 3 of 12 records hold bytes that do not decode as an image "
        f"(first: {bad.example}): records 2, 7, 11 of {path}"
    )


def test_images_of_another_size_or_channel_count_are_named_by_shape(image_cases, tmp_path):
    examples, found = image_cases
    path = split_file(examples, "misshapen")
    assert sorted(bad.line() for bad in found["misshapen"]) == [
        f"[misshapen] image: 1 of 6 records are 28x28x3 images, not 28x28x1: record 4 of {path}",
        f"[misshapen] image: 1 of 6 records are 32x32x1 images, not 28x28x1: record 1 of {path}",
    ]
    # For a model of 32x32x1 images, the larger image is the one that fits.
    alone = trainer_examples.examples_artifact(str(tmp_path), {"train": misshapen_records()})
    path = split_file(alone, "train")
    assert sorted(bad.line() for bad in find_bad_records(alone, "image", (32, 32, 1))) == [
        f"[train] image: 1 of 6 records are 28x28x3 images, not 32x32x1: record 4 of {path}",
        f"[train] image: 4 of 6 records are 28x28x1 images, not 32x32x1: records 0, 2, 3, 5 "
        f"of {path}",
    ]


def test_a_missing_image_and_one_of_the_wrong_type_are_named(image_cases):
    examples, found = image_cases
    path = split_file(examples, "malformed")
    problems = {bad.problem: bad.where[path] for bad in found["malformed"]}
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


def test_an_empty_split_is_named(image_cases):
    examples, found = image_cases
    [bad] = found["empty"]
    assert (bad.split, bad.feature, bad.records_in_split) == ("empty", DATASET, 0)
    assert bad.line() == (
        f"[empty] <dataset>: the split holds no records ({split_file(examples, 'empty')})"
    )


def test_an_image_key_needs_an_image_shape(tmp_path):
    examples = trainer_examples.examples_artifact(str(tmp_path), {"train": []})
    with pytest.raises(ValueError, match=r"image_shape must be \(height, width, channels\)"):
        find_bad_records(examples, "image", (28, 28))


# --- the record check's memory: the first records named, the others counted ------------------


def nan_records(count: int) -> list[bytes]:
    return [trainer_examples.tabular_example([math.nan], 1, b"a", 0) for _ in range(count)]


def test_ten_thousand_bad_records_keep_only_the_first_named(tmp_path):
    """The findings of 10,000 bad records in two files, one checked in two parts, merged in
    any order, name NAMED_RECORDS of them and count the rest; they stay as small as for a
    few."""
    files = {}
    for name in ("a", "b"):
        path = tmp_path / f"{name}.tfrecord"
        with tf.io.TFRecordWriter(str(path)) as writer:
            for record in nan_records(5000):
                writer.write(record)
        files[name] = str(path)
    check = CheckFile(image_key="", image_shape=None, yield_clean=False)
    parts = [findings_of(check, files["b"], part, 2) for part in (1, 0)]
    total = merge_findings([*parts, findings_of(check, files["a"], 0, 1)])
    [kind] = total.kinds.values()
    assert len(kind.named) == NAMED_RECORDS
    assert kind.named == [(files["a"], index, "") for index in range(NAMED_RECORDS)]
    assert kind.counts == {files["a"]: 5000, files["b"]: 5000}
    assert (total.records, total.bad) == ({"train": 10000}, {"train": 10000})
    few = Findings()
    few.add("train", files["a"], 0, [[("size", "hold NaN or infinite values", "")]] * 3)
    assert len(pickle.dumps(total)) < len(pickle.dumps(few)) + 1000
    [bad] = total.bad_records({"train": list(files.values())})
    assert bad.line() == (
        f"[train] size: 10000 of 10000 records hold NaN or infinite values: records "
        f"{', '.join(map(str, range(NAMED_RECORDS)))} and 4990 more of {files['a']}; "
        f"5000 of {files['b']}"
    )


def test_the_beam_check_names_the_first_records_of_many(tmp_path):
    examples = trainer_examples.examples_artifact(str(tmp_path), {"train": nan_records(10000)})
    [bad] = find_bad_records(examples, image_key="", image_shape=None)
    assert bad.count == 10000
    assert bad.where == {split_file(examples, "train"): list(range(NAMED_RECORDS))}


def findings_of(check: CheckFile, path: str, part: int, parts: int) -> Findings:
    """What `check` found in its part of the train file `path`: its one tagged output."""
    [found] = [output.value for output in check.process(("train", path, part, parts))]
    return found


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


def three_undecodable_images(root: Path, train: int = 48) -> Path:
    """`train` train and 16 eval examples of the sample; train records 5, 20 and 33 hold
    bytes that are no image."""
    data = write_split_sample(root, train=train, eval=16)
    train_file = data / "train" / "data.tfrecord"
    records = [record.numpy() for record in tf.data.TFRecordDataset(str(train_file))]
    for index in (5, 20, 33):
        records[index] = with_image(records[index], bytes_feature(NOT_AN_IMAGE))
    write_records(train_file, records)
    return data


def run_on(data: Path, layout: OutputLayout, *flags: str):
    return run_local_runner(
        *("--data-root", str(data), "--schema", configs.SCHEMA_PATH),
        *("--output-dir", layout.output_dir),
        *flags,
    )


def test_image_bytes_that_do_not_decode_stop_the_run_at_the_gate(tmp_path):
    """The default, --max-bad-records 0: any bad record stops the run."""
    layout = OutputLayout(str(tmp_path / "out"))

    result = run_on(three_undecodable_images(tmp_path / "data"), layout)

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


def test_more_bad_records_than_max_bad_records_stop_the_run_at_the_gate(tmp_path):
    layout = OutputLayout(str(tmp_path / "out"))

    result = run_on(three_undecodable_images(tmp_path / "data"), layout, "--max-bad-records", "2")

    stopped_before_training(result, layout)
    assert (
        "\nValidationGate failed: DataAnomaliesError: The record check found 3 records that "
        "cannot be trained on, more than max_bad_records (--max-bad-records) allows: 2; the "
        "run stops before training.\n  [train] image: 3 of 48 records hold bytes that do not "
        "decode as an image (first: Unknown image file format."
    ) in result.stderr


def test_up_to_max_bad_records_are_left_out_of_training_and_evaluation(tmp_path):
    """120 train images: enough for TFDV's image statistics, so that the three bad ones would
    break the schema's image_domain (the control) had the statistics seen them."""
    data = three_undecodable_images(tmp_path / "data", train=120)
    layout = OutputLayout(str(tmp_path / "out"))

    result = run_on(
        data,
        layout,
        *("--max-bad-records", "5", "--epochs", "1", "--batch-size", "3"),
        *("--min-train-steps", "0"),
        *("--accuracy-threshold", "0", "--max-accuracy-drop", "1"),
    )

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert re.search(
        r"^  done   RecordCheck +\d+\.\d s  3 of 136 records bad \(\[train\] image: 3 hold "
        r"bytes that do not decode as an image\); 133 written without them$",
        result.stdout,
        re.MULTILINE,
    )
    assert re.search(
        r"^  done   ValidationGate .*  no anomalies; 3 bad records left out;",
        result.stdout,
        re.MULTILINE,
    )
    assert re.search(
        r"^  left out:       3 bad records, of training and evaluation \(--max-bad-records\):\n"
        r"    \[train\] image: 3 of 120 records hold bytes that do not decode as an image "
        r"\(first: .*\): records 5, 20, 33 of \S+/ImportExampleGen/examples/\d+/Split-train/",
        result.stdout,
        re.MULTILINE,
    )
    # The run's metadata: the record check's counts, on its examples without the bad records.
    [clean] = node_outputs(layout, "RecordCheck", "clean_examples")
    assert clean.get_int_custom_property("records_left_out") == 3
    assert json.loads(clean.get_string_custom_property("records_left_out_by_split_and_kind")) == {
        "train": {"image: hold bytes that do not decode as an image": 3}
    }
    # Every step after the check reads those: the Trainer's epoch of batches of three was 39
    # steps, 117 examples, 3 fewer than the 120 train records (40 steps).
    for node in ("StatisticsGen", "Trainer", "Evaluator"):
        assert [found.id for found in node_inputs(layout, node, "examples")] == [clean.id]
    [model_run] = node_outputs(layout, "Trainer", "model_run")
    epochs = history.read_history(os.path.join(model_run.uri, history.HISTORY_FILE))["epochs"]
    assert epochs[-1]["steps"] == 39
    train = glob.glob(os.path.join(clean.uri, "Split-train", "*"))
    images = [
        tf.train.Example.FromString(record.numpy()).features.feature["image"].bytes_list.value[0]
        for record in tf.data.TFRecordDataset(train, compression_type="GZIP")
    ]
    assert len(images) == 117 and NOT_AN_IMAGE not in images
    assert len(versions(layout)) == 1
    # The control: the statistics of the records as written break the schema's image_domain.
    statistics = tfdv.generate_statistics_from_tfrecord(
        str(data / "train" / "data.tfrecord"),
        stats_options=tfdv.StatsOptions(enable_semantic_domain_stats=True),
    )
    anomalies = tfdv.validate_statistics(statistics, tfdv.load_schema_text(configs.SCHEMA_PATH))
    assert "image" in anomalies.anomaly_info


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
