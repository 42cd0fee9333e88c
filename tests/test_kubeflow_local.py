"""The compiled Kubeflow Pipelines YAML, run end to end by KFP's own local runner
(kfp.local's DockerRunner) in the project's image, twice, on 96 train and 64 eval examples.

`make test` builds the image and holds a Docker daemon (see tests/test_image_build.py);
without Docker these tests skip, saying what is missing. The first run finds no baseline and
pushes the first model. The second trains with another setting, so the Trainer and what follows
run again while the data tasks come from kfp.local's cache (`--enable-cache`); its Evaluator
takes the first run's pushed model as the baseline, and it pushes the second. Both serve.
"""

import contextlib
import io
import os
from pathlib import Path

import pytest
import tensorflow_model_analysis as tfma
from tfx import v1 as tfx

from pipelines import kubeflow_runner
from pipelines.cloud import compiler, kfp_local
from tests.image_support import image_under_test
from tests.pipeline_support import write_split_sample
from tests.test_image_build import assert_serves, eval_examples

# Each test's setup holds one whole pipeline run, a container per task: the first took 11
# minutes here with the 2 cores shared by other jobs (load average 16), the second 6.
pytestmark = pytest.mark.timeout(1800)
DATA_TASKS = [
    "ImportSchemaGen",
    "ImportExampleGen",
    "RecordCheck",
    "StatisticsGen",
    "ExampleValidator",
    "ValidationGate",
]
RELEASE_TASKS = ["Trainer", "PushedBaseline", "Evaluator", "Pusher"]


def run(root: Path, tag: str, steps: int) -> tuple[str, Path]:
    """A --run-local run; its console output and the folder kfp.local made for it."""
    before = set(os.listdir(root))
    console = io.StringIO()
    with contextlib.redirect_stdout(console):
        status = kubeflow_runner.main(
            [
                "--run-local",
                "--image", tag,
                "--pipeline-root", str(root),
                "--output-file", str(root / "pipeline.yaml"),
                "--data-root", str(root / "sample"),
                "--data-format", "tfrecord",
                "--schema", compiler.IMAGE_SCHEMA_PATH,
                "--epochs", "1",
                "--train-steps-per-epoch", str(steps),
                "--batch-size", "32",
                "--accuracy-threshold", "0",
                "--max-accuracy-drop", "1",
                "--enable-cache",
            ]
        )  # fmt: skip
    out = console.getvalue()
    print(out)
    assert status == 0, out
    [run_dir] = [root / name for name in set(os.listdir(root)) - before if "gsam-tfx-" in name]
    return out, run_dir


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """The pipeline root, which kfp.local mounts alone: it holds the data and the pushes."""
    root = tmp_path_factory.mktemp("kubeflow-local")
    write_split_sample(root / "sample", train=96, eval=64)
    return root


# One run per fixture, so that each test's time (pytest's timeout) holds one run.
@pytest.fixture(scope="module")
def first_run(root):
    return run(root, image_under_test().tag, steps=3)


@pytest.fixture(scope="module")
def second_run(root, first_run):
    return run(root, image_under_test().tag, steps=4)


def shown(out: str, kind: str) -> list[str]:
    return [line.split()[1] for line in out.splitlines() if line.startswith(f"  {kind} ")]


def verdict(out: str, task: str) -> str:
    [line] = [line for line in out.splitlines() if line.startswith(f"  done   {task} ")]
    return line.split(" s  ", 1)[1]


def versions(root: Path) -> list[str]:
    return sorted((name for name in os.listdir(root / "serving") if name.isdigit()), key=int)


def blessing(run_dir: Path) -> dict:
    return kfp_local.output_metadata(str(run_dir), "Evaluator", "blessing")


def test_the_first_run_has_no_baseline_and_pushes_a_model_that_serves(root, first_run):
    out, run_dir = first_run
    started = shown(out, "start")
    data_tasks = len(DATA_TASKS)
    assert set(started[:data_tasks]) == set(DATA_TASKS) and started[data_tasks:] == RELEASE_TASKS
    assert shown(out, "done") == started
    assert verdict(out, "PushedBaseline") == "no pushed model yet: no baseline"
    assert verdict(out, "Evaluator") == "blessed (no baseline)"
    assert "baseline_model" not in blessing(run_dir)
    first = root / "serving" / versions(root)[0]
    assert f"pushed model: {first}\n" in out
    assert_serves(str(first), eval_examples(root))


def test_the_second_run_is_judged_against_the_first_runs_model(root, second_run):
    out, run_dir = second_run
    first, second = versions(root)
    assert sorted(shown(out, "cached")) == sorted(DATA_TASKS)
    assert shown(out, "start") == RELEASE_TASKS
    assert verdict(out, "PushedBaseline") == f"baseline: pushed version {first}"
    assert verdict(out, "Evaluator") == "blessed (against the baseline)"
    baseline = run_dir / "PushedBaseline" / "model"
    assert blessing(run_dir)["baseline_model"] == str(baseline)
    copied = (baseline / "Format-Serving" / "fingerprint.pb").read_bytes()
    assert copied == (root / "serving" / first / "fingerprint.pb").read_bytes()
    evaluation = str(run_dir / "Evaluator" / "evaluation")
    compared = {
        entry.key.model_name
        for metrics in tfma.load_metrics(evaluation)
        for entry in metrics.metric_keys_and_values
    }
    assert compared == {"candidate", "baseline"}
    assert tfma.load_validation_result(evaluation).validation_ok
    assert f"pushed model: {root / 'serving' / second}\n" in out
    assert_serves(str(root / "serving" / second), eval_examples(root))


def test_the_log_holds_every_container_and_the_entrypoint_fixing_kfp_local_types(first_run):
    out, _ = first_run
    [log] = [line.rsplit(" ", 1)[1] for line in out.splitlines() if "full log: " in line]
    text = Path(log).read_text()
    # Each task's container ran the image's entrypoint to its end: TFX's output, then os._exit.
    assert text.count("exiting without interpreter shutdown") == len(DATA_TASKS + RELEASE_TASKS)
    # kfp.local typed the Trainer's examples system.Artifact; the entrypoint read them as declared.
    assert "Executor input: examples: type schema_title='system.Artifact' read as declared" in text


def test_a_failing_task_fails_the_run_and_shows_its_error(tmp_path):
    image = image_under_test()
    schema = tfx.components.ImportSchemaGen(schema_file=str(tmp_path / "missing.pbtxt"))
    dag = tfx.dsl.Pipeline(pipeline_name="fails", pipeline_root=str(tmp_path), components=[schema])
    package = compiler.compile_pipeline(dag, image.tag, str(tmp_path / "pipeline.yaml"))
    console = io.StringIO()
    result = kfp_local.run(package, str(tmp_path), console)
    assert not result.succeeded
    assert result.failure == "task ImportSchemaGen failed (FAILURE)"
    out = console.getvalue()
    assert "  FAILED ImportSchemaGen" in out
    assert "missing.pbtxt" in out.split("  FAILED ImportSchemaGen", 1)[1]  # the error's tail
