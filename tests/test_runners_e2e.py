"""The other ways to run the pipeline here: BeamDagRunner, and the tfx CLI (local engine)."""

import os
import shlex
import subprocess
from pathlib import Path

from tfx.orchestration.beam.beam_dag_runner import BeamDagRunner

from pipelines import configs, summary
from pipelines.options import OutputLayout
from tests.pipeline_support import ALL_NODES, executed_nodes, run_pipeline, versions

REPO = Path(__file__).resolve().parent.parent


def test_beam_dag_runner_runs_every_component_and_pushes(sample, tmp_path):
    layout = run_pipeline(sample, tmp_path / "out", runner=BeamDagRunner())
    assert executed_nodes(layout) == ALL_NODES
    [version] = versions(layout)
    assert summary.latest_run(layout.metadata_path, "e2e").pushed_model == os.path.join(
        layout.serving_model_dir, version)


def test_tfx_cli_creates_and_runs_the_local_pipeline(sample, tmp_path):
    layout = OutputLayout(str(tmp_path / "out"))
    flags = ["--data-root", str(sample), "--schema", configs.SCHEMA_PATH,
             "--output-dir", layout.output_dir,
             "--pipeline-name", "cli-e2e", "--epochs", "1", "--batch-size", "32",
             "--train-steps-per-epoch", "4", "--accuracy-threshold", "0"]
    env = dict(os.environ, HOME=str(tmp_path / "home"), GSAM_TFX_ARGS=shlex.join(flags))

    def tfx_cli(*args):
        result = subprocess.run(["tfx", *args], cwd=REPO, env=env, capture_output=True,
                                text=True, timeout=900)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        return result.stdout

    created = tfx_cli("pipeline", "create", "--engine", "local",
                      "--pipeline_path", "pipelines/local_runner.py")
    assert 'Pipeline "cli-e2e" created successfully.' in created
    assert not os.path.exists(layout.metadata_path), "create must not run the pipeline"
    tfx_cli("run", "create", "--engine", "local", "--pipeline_name", "cli-e2e")
    run = summary.latest_run(layout.metadata_path, "cli-e2e")
    assert run.blessed is True
    [version] = versions(layout)
    assert run.pushed_model == os.path.join(layout.serving_model_dir, version)
