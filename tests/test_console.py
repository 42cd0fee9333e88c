"""The console of the local runners: component lines, the log file, failures, own data."""

import logging
import os
import re
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from pipelines import configs
from pipelines.local import console, run_log, summary
from pipelines.local.layout import OutputLayout
from tests.pipeline_support import (
    ALL_NODES,
    HEADER,
    done_line,
    run_local_runner,
    versions,
    write_split_sample,
)

TINY_TRAINING = ["--epochs", "1", "--batch-size", "16", "--train-steps-per-epoch", "2"]


# --- the log and the error text, without a pipeline ------------------------------------------


@pytest.mark.parametrize("verbose", [False, True])
def test_the_log_file_gets_everything_and_the_console_only_what_is_asked(
    tmp_path, capfd, verbose
):
    path = str(tmp_path / "logs" / "run.log")
    with run_log.held_startup_output():
        os.write(2, b"a start-up line from C++\n")
    with run_log.RunLog(verbose) as log:
        logging.getLogger("absl").info("a record held until the file is named")
        os.write(2, b"a line from C++\n")
        print("a line Python wrote to stderr", file=sys.stderr)
        log.open_file(path)
        logging.getLogger("apache_beam").warning("a record after the file was named")
        print("for the person", file=log.console)
    written = Path(path).read_text()
    expected = [
        "a start-up line from C++",
        "INFO absl: a record held until the file is named",
        "a line from C++",
        "a line Python wrote to stderr",
        "WARNING apache_beam: a record after the file was named",
    ]
    assert [line for line in expected if line in written] == expected
    assert written.index(expected[0]) < written.index(expected[1])
    out, err = capfd.readouterr()
    assert out == ""
    if verbose:
        assert [line for line in written.splitlines() if line not in err.splitlines()] == []
        assert "for the person" in err.splitlines()
    else:
        assert err == "for the person\n"


def test_start_up_output_goes_back_to_stderr_if_the_imports_fail(capfd):
    with pytest.raises(ImportError):
        with run_log.held_startup_output():
            os.write(2, b"why the import failed\n")
            raise ImportError("no such module")
    assert capfd.readouterr().err == "why the import failed\n"


def test_a_tensorflow_error_is_shown_without_its_graph_dump():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    with pytest.raises(tf.errors.InvalidArgumentError) as error:
        model.fit(np.zeros((8, 4)), np.full((8,), 9), verbose=0)
    assert "Detected at node" in str(error.value)
    assert console.error_message(error.value) == (
        "InvalidArgumentError: Received a label value of 9 which is outside the valid range "
        "of [0, 3).  Label values: 9 9 9 9 9 9 9 9"
    )


def test_a_long_error_message_is_cut():
    message = console.error_message(ValueError("\n".join(f"line {i}" for i in range(100))))
    lines = message.splitlines()
    assert lines[0] == "ValueError: line 0"
    assert lines[-1] == f"... {100 - console.MAX_ERROR_LINES} more lines"
    assert len(lines) == console.MAX_ERROR_LINES + 1


def test_tensorboard_is_pointed_at_every_trainer_of_the_run():
    run = summary.RunSummary(run_id="r", training_logs={"Trainer": "/root/Trainer/model_run/7"})
    assert run.tensorboard_command()[1:] == ["tensorboard", "--logdir", "/root/Trainer/model_run/7"]
    run.training_logs["Trainer.sam.seed1"] = "/root/Trainer.sam.seed1/model_run/9"
    assert run.tensorboard_command()[2:] == [
        "--logdir_spec",
        "Trainer:/root/Trainer/model_run/7,Trainer.sam.seed1:/root/Trainer.sam.seed1/model_run/9",
    ]


# --- whole runs ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def own_data_run(tmp_path_factory):
    """A demo-sized run on TFRecords with labels 0-3, without a schema or --num-classes."""
    root = tmp_path_factory.mktemp("own")
    data = write_split_sample(
        root / "data",
        train=64,
        eval=32,
        relabel=lambda label: tf.train.Feature(int64_list=tf.train.Int64List(value=[label % 4])),
    )
    layout = OutputLayout(str(root / "out"))
    flags = ["--data-root", str(data), "--output-dir", layout.output_dir, *TINY_TRAINING]
    return run_local_runner(*flags, "--accuracy-threshold", "0"), layout


def test_a_demo_sized_run_prints_a_line_per_component_and_the_summary(own_data_run):
    result, layout = own_data_run
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stderr == "", "nothing from absl, Beam or TensorFlow without --verbose"
    lines = result.stdout.splitlines()
    assert len(lines) < 100
    for node in ALL_NODES - {"ImportSchemaGen"} | {"SchemaGen"}:
        assert f"  start  {node}" in lines
        assert done_line(node).search(result.stdout), node
    [version] = versions(layout)
    for expected in (
        r"^2/2 - .*perturbed_loss: .*surrogate_gap: ",  # Keras's epoch line, GSAM's metrics
        r"^  done   ImportExampleGen .* train 64 rows, eval 32 rows$",
        r"^  done   latest_blessed_model_resolver .* no blessed model yet$",
        r"^  done   Trainer .* 1 epoch, val accuracy \d\.\d{4}$",
        r"^  done   Evaluator .* blessed, accuracy \d\.\d{4}$",
        rf"^  done   Pusher .* pushed version {version}$",
        r"^  eval accuracy:  \d\.\d{4}$",
    ):
        assert re.search(expected, result.stdout, re.MULTILINE), expected
    [logdir] = re.findall(
        r"^  tensorboard:    scripts/in-env tensorboard --logdir (\S+)$",
        result.stdout,
        re.MULTILINE,
    )
    assert tf.io.gfile.glob(os.path.join(logdir, "train", "events.out.tfevents.*"))


def test_the_run_log_file_holds_the_absl_records(own_data_run):
    result, layout = own_data_run
    [(run_id, path)] = HEADER.findall(result.stdout)
    assert path == layout.log_path(run_id)
    assert f"  full log:       {path}" in result.stdout.splitlines()
    written = Path(path).read_text()
    assert " INFO absl: Component Trainer is running." in written
    assert len(written.splitlines()) > 10 * len(result.stdout.splitlines())


def test_own_data_without_a_schema_trains_as_many_classes_as_labels(own_data_run):
    result, layout = own_data_run
    assert "no anomalies; label 'label' in 0..3: 4 classes" in result.stdout
    [version] = versions(layout)
    serving = tf.saved_model.load(os.path.join(layout.serving_model_dir, version))
    [record] = tf.data.TFRecordDataset(
        os.path.join(configs.DATA_ROOT, "eval", "data.tfrecord")
    ).take(1)
    probabilities = serving.signatures["serving_default"](examples=tf.reshape(record, [1]))
    assert probabilities["probabilities"].shape == (1, 4)


def test_a_failed_run_names_the_component_and_its_reason_once(tmp_path):
    data = write_split_sample(tmp_path / "data", train=48, eval=16, bad_eval_label=12)
    layout = OutputLayout(str(tmp_path / "out"))
    result = run_local_runner(
        *("--data-root", str(data), "--schema", configs.SCHEMA_PATH),
        *("--output-dir", layout.output_dir),
    )
    assert result.returncode == 1
    shown = result.stdout + result.stderr
    assert done_line("ExampleValidator").search(result.stdout)
    assert re.search(r"^  FAILED ValidationGate +\d+\.\d s$", result.stdout, re.MULTILINE)
    assert "\nValidationGate failed: DataAnomaliesError: ExampleValidator found" in result.stderr
    assert shown.count("[eval] label: Out-of-range values") == 1
    [(_, path)] = HEADER.findall(result.stdout)
    assert result.stderr.endswith(f"Traceback and full log: {path}\n")
    assert "Traceback" in Path(path).read_text() and "Traceback (" not in shown
    assert "  start  Trainer" not in result.stdout


def test_verbose_shows_the_full_log_and_a_float_label_fails_clearly(tmp_path):
    data = write_split_sample(
        tmp_path / "data",
        train=32,
        eval=16,
        relabel=lambda label: tf.train.Feature(float_list=tf.train.FloatList(value=[label])),
    )
    result = run_local_runner(
        "--data-root", str(data), "--output-dir", str(tmp_path / "out"), "-v", *TINY_TRAINING
    )
    assert result.returncode == 1
    assert (
        "ValidationGate failed: LabelDomainError: label 'label' holds FLOAT values (in the "
        "'train' split); class labels must be integers 0..num_classes-1, stored as int64."
    ) in result.stderr
    [(_, path)] = HEADER.findall(result.stdout)
    written = Path(path).read_text().splitlines()
    assert any(" INFO absl: " in line for line in written)
    shown = result.stderr.splitlines()
    assert [line for line in written if line not in shown] == []
