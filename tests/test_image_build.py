"""The real image, run as Vertex AI and Kubeflow run it.

`make test` builds the image (scripts/build_image.py, reused while its inputs are unchanged)
and holds a Docker daemon for these tests. The local runner runs the whole pipeline in the
image; then the Trainer task of the compiled Vertex AI pipeline runs in the image, with the
executor input Vertex would send it on that run's Examples and Schema, and the model it
writes must serve. The task that shows the sharpness summary in the console runs there too.
Without Docker they skip, saying exactly what is missing.
"""

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from pipelines import vertex_runner
from pipelines.cloud import compiler
from pipelines.local.layout import OutputLayout
from tests.image_support import image_under_test
from tests.pipeline_support import (
    ALL_NODES,
    executed_nodes,
    node_outputs,
    versions,
    write_split_sample,
)
from tests.trainer_examples import serve
from tests.vertex_task import executor_input, task_command, task_container

TRAINING_FLAGS = ["--epochs", "1", "--train-steps-per-epoch", "5", "--batch-size", "32"]


@pytest.fixture(scope="module")
def image():
    return image_under_test()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """Bound into the containers at its own path, so artifact URIs mean the same inside.

    World-writable: the image runs as a non-root user.
    """
    root = tmp_path_factory.mktemp("image")
    root.chmod(0o777)
    write_split_sample(root / "sample", train=96, eval=64)
    return root


@pytest.fixture(scope="module")
def local_run(image, workdir):
    layout = OutputLayout(str(workdir / "local"))
    result = image.run(
        "python",
        "-m",
        "pipelines.local_runner",
        "--data-root",
        str(workdir / "sample"),
        "--schema",
        compiler.IMAGE_SCHEMA_PATH,  # as the compiled pipeline uses it: ImportSchemaGen
        "--output-dir",
        layout.output_dir,
        "--accuracy-threshold",
        "0",
        *TRAINING_FLAGS,
        mounts=[workdir],
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-6000:]
    return layout, result.stdout


def eval_examples(workdir, count=16):
    records = tf.data.TFRecordDataset(str(workdir / "sample" / "eval" / "data.tfrecord"))
    return [record.numpy() for record in records.take(count)]


def assert_serves(serving_dir, examples):
    probabilities = serve(serving_dir, examples)
    assert probabilities.shape == (len(examples), 10)
    assert np.all(np.isfinite(probabilities)) and np.all(probabilities >= 0)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


def test_the_image_runs_as_a_non_root_user_without_build_tools(image):
    result = image.run(
        "sh",
        "-c",
        "id -u; test -w /gcs && test -w /minio && test -w /s3 && echo launcher-dirs-writable; "
        "command -v gcc g++ cc || true; "
        "ls -d /usr/include/python3* /opt/gsam-tfx-venv/lib/*/site-packages/tensorflow/include",
    )
    uid, writable, *build_tools = result.stdout.split()
    assert uid != "0"
    assert writable == "launcher-dirs-writable"
    assert build_tools == [], "compilers and headers belong to the build stage only"


def test_the_default_command_imports_tfx_and_the_trainer_from_any_folder(image):
    result = image.run(workdir="/")
    assert result.returncode == 0, result.stderr
    assert "gsam-tfx image: TFX 1.21.0" in result.stdout


def test_the_local_runner_runs_the_whole_pipeline_in_the_image(local_run, workdir):
    layout, stdout = local_run
    assert executed_nodes(layout) == ALL_NODES
    assert "blessed:        yes" in stdout
    [version] = versions(layout)
    assert_serves(os.path.join(layout.serving_model_dir, version), eval_examples(workdir))


def test_the_compiled_vertex_trainer_task_runs_in_the_image(image, local_run, workdir):
    layout, _ = local_run
    pipeline_file = workdir / "pipeline.json"
    vertex_runner.main(
        [
            "--output-file",
            str(pipeline_file),
            "--image",
            image.tag,
            "--pipeline-root",
            "gs://gsam-tfx-test/root",
            *TRAINING_FLAGS,
        ]
    )
    job = json.loads(pipeline_file.read_text())
    container = task_container(job, "Trainer")
    assert container["image"] == image.tag
    # The Trainer's inputs, from the tasks the compiled spec names, as the local run made them.
    trainer_inputs = job["pipelineSpec"]["root"]["dag"]["tasks"]["Trainer"]["inputs"]
    inputs = {}
    for key, source in trainer_inputs["artifacts"].items():
        producer = source["taskOutputArtifact"]
        [inputs[key]] = node_outputs(
            layout, producer["producerTask"], producer["outputArtifactKey"]
        )
    output_dir = str(workdir / "vertex" / "Trainer_1")
    command = task_command(container, executor_input(job, "Trainer", inputs, output_dir))

    started = time.monotonic()
    result = image.run(*command[1:], entrypoint=command[0], mounts=[workdir])
    print(f"Trainer task in the container: {time.monotonic() - started:.0f} s")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-6000:]

    executor_output = json.loads(Path(output_dir, "executor_output.json").read_text())
    [model] = executor_output["artifacts"]["model"]["artifacts"]
    assert model["uri"] == os.path.join(output_dir, "model")
    assert os.listdir(os.path.join(output_dir, "model_run")), "no TensorBoard logs"
    assert_serves(os.path.join(model["uri"], "Format-Serving"), eval_examples(workdir))


def test_the_compiled_report_view_task_runs_in_the_image(image, workdir):
    """The task that shows the sharpness summary in the Vertex AI console, as kfp fills its
    path placeholders: the report under the input's path, the Markdown at the output's."""
    pipeline_file = workdir / "sharpness.json"
    vertex_runner.main(
        [
            "--output-file", str(pipeline_file), "--image", image.tag,
            "--pipeline-root", "gs://gsam-tfx-test/root", "--sharpness",
        ]
    )  # fmt: skip
    job = json.loads(pipeline_file.read_text())
    container = task_container(job, "SharpnessProbe.view")
    assert container["image"] == image.tag
    probe = workdir / "probe"
    probe.mkdir()
    (probe / "summary.md").write_text("# Sharpness\n\n| measure | candidate |\n")
    markdown = workdir / "views" / "SharpnessProbe.view_1" / "markdown"
    paths = {
        "{{$.inputs.artifacts['source'].path}}": str(probe),
        "{{$.outputs.artifacts['markdown'].path}}": str(markdown),
    }
    result = image.run(
        *container["command"][1:],
        *[paths.get(arg, arg) for arg in container["args"]],
        entrypoint=container["command"][0],
        mounts=[workdir],
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert markdown.read_text() == (probe / "summary.md").read_text()
