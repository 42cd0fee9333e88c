"""The other ways to run the pipeline here: BeamDagRunner, and the tfx CLI (local engine)."""

import os
import re
import shlex
import subprocess
from pathlib import Path

import numpy as np
import tensorflow as tf
from tfx import v1 as tfx
from tfx.orchestration.beam.beam_dag_runner import BeamDagRunner

from pipelines import configs
from pipelines.local import run_here, summary
from pipelines.local.layout import OutputLayout
from tests.pipeline_support import ALL_NODES, done_line, executed_nodes, versions

REPO = Path(__file__).resolve().parent.parent


def test_beam_dag_runner_runs_every_component_and_pushes(sample, tmp_path, capfd):
    layout = OutputLayout(str(tmp_path / "out"))
    flags = ["--data-root", str(sample), "--schema", configs.SCHEMA_PATH]
    flags += ["--output-dir", layout.output_dir, "--pipeline-name", "e2e"]
    flags += ["--epochs", "1", "--batch-size", "32", "--train-steps-per-epoch", "4"]
    status = run_here.run(BeamDagRunner(), "test", [*flags, "--accuracy-threshold", "0"])
    assert status == 0
    assert executed_nodes(layout) == ALL_NODES
    [version] = versions(layout)
    assert summary.latest_run(layout.metadata_path, "e2e").pushed_model == os.path.join(
        layout.serving_model_dir, version
    )
    console = capfd.readouterr().out
    for node in ALL_NODES:
        assert done_line(node).search(console), node
    assert re.search(rf"^  done   Pusher .* pushed version {version}$", console, re.MULTILINE)


def test_tfx_cli_creates_and_runs_the_local_pipeline(sample, tmp_path):
    layout = OutputLayout(str(tmp_path / "out"))
    flags = [
        "--data-root",
        str(sample),
        "--schema",
        configs.SCHEMA_PATH,
        "--output-dir",
        layout.output_dir,
        "--pipeline-name",
        "cli-e2e",
        "--epochs",
        "1",
        "--batch-size",
        "32",
        "--train-steps-per-epoch",
        "4",
        "--accuracy-threshold",
        "0",
    ]
    env = dict(os.environ, HOME=str(tmp_path / "home"), GSAM_TFX_ARGS=shlex.join(flags))

    def tfx_cli(*args):
        result = subprocess.run(
            ["tfx", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=900
        )
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        return result.stdout

    created = tfx_cli(
        "pipeline", "create", "--engine", "local", "--pipeline_path", "pipelines/local_runner.py"
    )
    assert 'Pipeline "cli-e2e" created successfully.' in created
    assert not os.path.exists(layout.metadata_path), "create must not run the pipeline"
    tfx_cli("run", "create", "--engine", "local", "--pipeline_name", "cli-e2e")
    run = summary.latest_run(layout.metadata_path, "cli-e2e")
    assert run.blessed is True
    [version] = versions(layout)
    assert run.pushed_model == os.path.join(layout.serving_model_dir, version)


def test_csv_data_trains_the_mlp_through_the_local_runner(tmp_path, capsys):
    """Tabular CSV: CsvExampleGen, an inferred schema, the MLP, flags only."""
    rng = np.random.default_rng(0)
    features = rng.normal(size=(150, 2))
    labels = (features[:, 0] > 0).astype(int) + (features[:, 1] > 1).astype(int)
    (tmp_path / "csv").mkdir()
    with open(tmp_path / "csv" / "rows.csv", "w") as file:
        file.write("width,height,label\n")
        file.writelines(f"{w:.4f},{h:.4f},{label}\n" for (w, h), label in zip(features, labels))
    layout = OutputLayout(str(tmp_path / "out"))
    run_here.run(
        tfx.orchestration.LocalDagRunner(),
        "test",
        [
            "--data-root",
            str(tmp_path / "csv"),
            "--output-dir",
            layout.output_dir,
            "--pipeline-name",
            "csv-e2e",
            "--num-classes",
            "3",
            "--epochs",
            "2",
            "--batch-size",
            "16",
            "--learning-rate",
            "0.01",
            "--accuracy-threshold",
            "0",
        ],
    )
    assert "CsvExampleGen" in executed_nodes(layout) and "SchemaGen" in executed_nodes(layout)
    run = summary.latest_run(layout.metadata_path, "csv-e2e")
    [version] = versions(layout)
    assert run.pushed_model == os.path.join(layout.serving_model_dir, version)
    assert f"pushed model:   {run.pushed_model}" in capsys.readouterr().out
    row = tf.train.Example(
        features=tf.train.Features(
            feature={
                "width": tf.train.Feature(float_list=tf.train.FloatList(value=[0.5])),
                "height": tf.train.Feature(float_list=tf.train.FloatList(value=[2.0])),
                "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[2])),
            }
        )
    ).SerializeToString()
    probabilities = (
        tf.saved_model.load(run.pushed_model)
        .signatures["serving_default"](examples=tf.constant([row]))["probabilities"]
        .numpy()
    )
    assert probabilities.shape == (1, 3)
    np.testing.assert_allclose(probabilities.sum(), 1.0, rtol=1e-5)


def write_png_examples(path: Path, labels: list[int], shape: tuple[int, int, int], seed: int):
    """TFRecord of tf.Examples: `image`, PNG bytes of a random uint8 image; `label`, int64."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for label in labels:
            png = tf.io.encode_png(rng.integers(0, 256, shape, dtype=np.uint8)).numpy()
            feature = {
                "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[png])),
                "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
            }
            writer.write(
                tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()
            )


def test_own_32x32x3_png_data_trains_evaluates_and_pushes_with_flags_only(tmp_path):
    """CIFAR-shaped data in a folder outside the checkout: the README's data contract."""
    data = tmp_path / "my-images"
    assert not data.is_relative_to(REPO)
    write_png_examples(data / "train" / "part-0.tfrecord", list(range(10)) * 4, (32, 32, 3), 1)
    write_png_examples(data / "eval" / "part-0.tfrecord", list(range(10)) * 2, (32, 32, 3), 2)
    layout = OutputLayout(str(tmp_path / "out"))
    status = run_here.run(
        tfx.orchestration.LocalDagRunner(),
        "test",
        [
            "--data-root",
            str(data),
            "--output-dir",
            layout.output_dir,
            "--pipeline-name",
            "cifar-shaped",
            "--image-shape",
            "32x32x3",
            "--epochs",
            "1",
            "--batch-size",
            "8",
            "--train-steps-per-epoch",
            "2",
            "--accuracy-threshold",
            "0",
        ],
    )
    assert status == 0
    assert {"ImportExampleGen", "SchemaGen", "Trainer", "Evaluator", "Pusher"} <= (
        executed_nodes(layout)
    )
    run = summary.latest_run(layout.metadata_path, "cifar-shaped")
    [version] = versions(layout)
    assert run.accuracy is not None and run.pushed_model == os.path.join(
        layout.serving_model_dir, version
    )
    kernels = tf.train.list_variables(os.path.join(run.pushed_model, "variables", "variables"))
    assert [3, 3, 3, 16] in [shape for _, shape in kernels], "a stem reading three channels"
    serving = tf.saved_model.load(run.pushed_model)
    records = [r.numpy() for r in tf.data.TFRecordDataset(str(data / "eval" / "part-0.tfrecord"))]
    probabilities = serving.signatures["serving_default"](examples=tf.constant(records))[
        "probabilities"
    ].numpy()
    assert probabilities.shape == (20, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
