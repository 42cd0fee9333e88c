"""--trainer-retries and --enable-cache reach the compiled Vertex AI and Kubeflow pipelines."""

import json

import pytest
import yaml
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

from pipelines import kubeflow_runner, vertex_runner
from tests.test_cloud import COMMON_FLAGS


def compiled_spec(runner, path, flags) -> pipeline_spec_pb2.PipelineSpec:
    runner.main(["--output-file", str(path), *COMMON_FLAGS, *flags])
    if path.suffix == ".json":
        document = json.loads(path.read_text())["pipelineSpec"]
    else:
        [document] = yaml.safe_load_all(path.read_text())
    return json_format.ParseDict(document, pipeline_spec_pb2.PipelineSpec())


@pytest.mark.parametrize(
    "runner, name", [(vertex_runner, "pipeline.json"), (kubeflow_runner, "pipeline.yaml")]
)
def test_trainer_retries_become_the_trainer_task_retry_policy(runner, name, tmp_path):
    spec = compiled_spec(runner, tmp_path / name, ["--trainer-retries", "3", "--enable-cache"])
    tasks = spec.root.dag.tasks
    assert tasks["Trainer"].retry_policy.max_retry_count == 3
    assert all(not task.HasField("retry_policy") for n, task in tasks.items() if n != "Trainer")
    # Resolvers query the store afresh on every run: never cached.
    cached = {name for name, task in tasks.items() if task.caching_options.enable_cache}
    assert cached == {name for name in tasks if "resolver" not in name}


def test_by_default_no_retries_and_no_cache(tmp_path):
    tasks = compiled_spec(vertex_runner, tmp_path / "pipeline.json", []).root.dag.tasks
    assert not tasks["Trainer"].HasField("retry_policy")
    assert not any(task.caching_options.enable_cache for task in tasks.values())


def test_negative_retries_are_named(tmp_path, capsys):
    with pytest.raises(SystemExit):
        compiled_spec(vertex_runner, tmp_path / "pipeline.json", ["--trainer-retries", "-1"])
    assert "--trainer-retries must be 0 or more, got -1" in capsys.readouterr().err
