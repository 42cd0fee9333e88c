"""--push-to: what each value compiles to, and the compiled VertexPusher task run as Vertex AI
starts it (TFX's Kubeflow V2 entry point with the executor input Vertex builds;
tests/vertex_task.py), in this process, against the recording fake of google.cloud.aiplatform
(tests/fake_aiplatform.py) installed where every cloud call goes (components/vertex/client.py).
"""

import json
import os
import re

import pytest
from google.api_core import exceptions
from tfx.types import standard_artifacts

from components.sharpness.probe import REPORT_FILE, SharpnessReport
from components.vertex.push import label_value
from tests.test_comparison_report import metric, slice_metrics, write_metrics
from tests.vertex_support import (
    ROOT,
    artifact,
    calls_named,
    compile_job,
    executor_class,
    task_dir,
    task_parameter,
)
from tests.vertex_task import run_in_process
from trainer.config import TrainingConfig
from trainer.training.history import HISTORY_FILE, write_history

# How the candidate trained (its history.json) and scored (its evaluation).
CANDIDATE = TrainingConfig(
    optimizer="gsam", rho_max=0.05, rho_min=0.01, alpha=0.02, learning_rate=0.1
)
EVAL_ACCURACY = 0.86


@pytest.fixture(scope="module")
def endpoint_job(tmp_path_factory):
    return compile_job(
        tmp_path_factory.mktemp("endpoint"), "--push-to", "vertex-endpoint", "--region",
        "europe-west4", "--serving-max-replicas", "3",
    )  # fmt: skip


def test_filesystem_push_compiles_the_atomic_pusher(tmp_path):
    job = compile_job(tmp_path)
    assert executor_class(job, "Pusher") == "components.release.atomic_pusher.AtomicPushExecutor"
    destination = json.loads(task_parameter(job, "Pusher", "push_destination"))
    assert destination == {"filesystem": {"base_directory": f"{ROOT}/serving"}}


def test_vertex_model_push_compiles_the_vertex_pusher_without_an_endpoint(tmp_path):
    job = compile_job(tmp_path, "--push-to", "vertex-model")
    assert executor_class(job, "Pusher") == "components.vertex.push.VertexPushExecutor"
    settings = json.loads(task_parameter(job, "Pusher", "push_settings"))
    assert settings["endpoint"] is None
    assert settings["model_id"] == "gsam-tfx" and settings["region"] == "us-central1"
    assert settings["serving_image"] == (
        "us-docker.pkg.dev/vertex-ai/prediction/tf2-cpu.2-15:latest"
    )
    assert task_parameter(job, "Pusher", "serving_model_dir") == f"{ROOT}/serving"


def test_vertex_endpoint_push_names_the_endpoint_and_its_nodes(endpoint_job):
    settings = json.loads(task_parameter(endpoint_job, "Pusher", "push_settings"))
    assert (settings["endpoint"], settings["region"]) == ("gsam-tfx", "europe-west4")
    assert settings["serving_image"].startswith(
        "europe-docker.pkg.dev/vertex-ai/prediction/tf2-cpu"
    )
    assert (settings["machine_type"], settings["max_replicas"]) == ("n1-standard-4", 3)
    pusher = endpoint_job["pipelineSpec"]["root"]["dag"]["tasks"]["Pusher"]
    producers = {
        key: value["taskOutputArtifact"]["producerTask"]
        for key, value in pusher["inputs"]["artifacts"].items()
    }
    # The blessed candidate only: the Evaluator's blessing, the Trainer's model and run.
    assert producers == {
        "model": "Trainer",
        "model_blessing": "Evaluator",
        "model_run": "Trainer",
        "evaluation": "Evaluator",
    }


def test_a_serving_gpu_picks_the_gpu_image_and_a_named_endpoint(tmp_path):
    job = compile_job(
        tmp_path, "--push-to", "vertex-endpoint", "--vertex-endpoint", "fashion",
        "--serving-machine-type", "n1-standard-8", "--serving-accelerator-type", "NVIDIA_TESLA_T4",
    )  # fmt: skip
    settings = json.loads(task_parameter(job, "Pusher", "push_settings"))
    assert settings["endpoint"] == "fashion"
    assert "/tf2-gpu." in settings["serving_image"]
    assert (settings["accelerator_type"], settings["accelerator_count"]) == ("NVIDIA_TESLA_T4", 1)


def test_a_serving_image_given_replaces_the_prebuilt_one(tmp_path):
    image = "europe-docker.pkg.dev/my-project/serving/tf-serving:2.21"
    job = compile_job(tmp_path, "--push-to", "vertex-model", "--serving-image", image)
    settings = json.loads(task_parameter(job, "Pusher", "push_settings"))
    assert settings["serving_image"] == image


def test_a_comparison_pushes_the_winner_with_its_own_training_record(tmp_path):
    job = compile_job(
        tmp_path, "--compare", "--methods", "plain,gsam", "--seeds", "1", "--sharpness",
        "--push-to", "vertex-model",
    )  # fmt: skip
    inputs = job["pipelineSpec"]["root"]["dag"]["tasks"]["Pusher"]["inputs"]["artifacts"]
    sources = {key: tuple(value["taskOutputArtifact"].values()) for key, value in inputs.items()}
    assert sources == {
        "model": ("best_model", "ComparisonReport"),
        "model_run": ("best_model_run", "ComparisonReport"),
        "model_blessing": ("blessing", "SharpnessProbe"),
        "evaluation": ("evaluation", "Evaluator"),
        "sharpness": ("sharpness", "SharpnessProbe"),
    }


# The VertexPusher task, run as Vertex AI starts it.


def candidate_inputs(root, blessed=True, top_eigenvalue=None, fingerprint=b"fingerprint-1"):
    """The Pusher's inputs: a SavedModel folder, the Trainer's history.json, the release
    Evaluator's metrics, its blessing and, optionally, the SharpnessProbe's report."""
    model = artifact(standard_artifacts.Model, os.path.join(root, "model"), 1)
    serving = os.path.join(model.uri, "Format-Serving")
    os.makedirs(serving)
    with open(os.path.join(serving, "saved_model.pb"), "w") as file:
        file.write("a SavedModel")
    with open(os.path.join(serving, "fingerprint.pb"), "wb") as file:
        file.write(fingerprint)
    model_run = artifact(standard_artifacts.ModelRun, os.path.join(root, "model_run"), 2)
    os.makedirs(model_run.uri)
    write_history(
        os.path.join(model_run.uri, HISTORY_FILE),
        CANDIDATE,
        [{"epoch": 1, "val_accuracy": EVAL_ACCURACY, "loss": 0.4, "seconds": 3.0}],
    )
    evaluation = artifact(standard_artifacts.ModelEvaluation, os.path.join(root, "eval"), 3)
    write_metrics(evaluation.uri, [slice_metrics([metric(EVAL_ACCURACY)])])
    blessing = artifact(standard_artifacts.ModelBlessing, os.path.join(root, "blessing"), 4)
    blessing.set_int_custom_property("blessed", int(blessed))
    inputs = {
        "model": model,
        "model_run": model_run,
        "evaluation": evaluation,
        "model_blessing": blessing,
    }
    if top_eigenvalue is not None:
        sharpness = artifact(SharpnessReport, os.path.join(root, "sharpness"), 5)
        os.makedirs(sharpness.uri)
        with open(os.path.join(sharpness.uri, REPORT_FILE), "w") as file:
            json.dump({"candidate": {"top_eigenvalue": top_eigenvalue}}, file)
        inputs["sharpness"] = sharpness
    return inputs


def run_pusher(job, inputs, tmp_path, attempt=1):
    """The Pusher task; its gs:// serving folder becomes a local one, the rest as compiled."""
    job = json.loads(json.dumps(job))
    parameters = job["pipelineSpec"]["root"]["dag"]["tasks"]["Pusher"]["inputs"]["parameters"]
    parameters["serving_model_dir"]["runtimeValue"]["constantValue"]["stringValue"] = str(
        tmp_path / "serving"
    )
    output = run_in_process(job, "Pusher", inputs, task_dir(tmp_path, "Pusher", attempt))
    [pushed] = output["artifacts"]["pushed_model"]["artifacts"]
    return pushed["metadata"]


def serving_versions(tmp_path):
    folder = tmp_path / "serving"
    return sorted(os.listdir(folder)) if folder.exists() else []


def test_a_model_that_is_not_blessed_is_not_uploaded(endpoint_job, cloud, tmp_path):
    inputs = candidate_inputs(str(tmp_path / "in"), blessed=False)
    metadata = run_pusher(endpoint_job, inputs, tmp_path)
    assert metadata["pushed"] == 0
    assert cloud.calls == []
    assert serving_versions(tmp_path) == []


def test_upload_then_deploy_then_undeploy_the_previous_version(endpoint_job, cloud, tmp_path):
    cloud.init(location="europe-west4")
    old = cloud.add_deployed_version("gsam-tfx", "gsam-tfx")
    cloud.calls.clear()
    metadata = run_pusher(endpoint_job, candidate_inputs(str(tmp_path / "in")), tmp_path)

    [version] = serving_versions(tmp_path)
    assert cloud.names() == [
        "init",
        "Model",  # the version with the alias v<version>: none yet
        "Model",  # the model's default version: the previous one, so a new version
        "Model.upload",
        "Endpoint.list",
        "Endpoint.list_models",
        "Model.deploy",
        "Endpoint.list_models",
        "Endpoint.traffic_split",
        "Endpoint.undeploy",
    ]
    assert cloud.calls[0][1] == {"project": "my-project", "location": "europe-west4"}
    [upload] = calls_named(cloud, "Model.upload")
    assert upload["parent_model"] == "gsam-tfx" and upload["model_id"] is None
    assert upload["artifact_uri"] == str(tmp_path / "serving" / version)
    assert upload["version_aliases"] == [f"v{version}"] and upload["is_default_version"]
    assert upload["labels"] == {
        "method": "gsam",
        "rho_max": "0_05",
        "rho_min": "0_01",
        "alpha": "0_02",
        "learning_rate": "0_1",
        "base_optimizer": "sgd",
        "eval_accuracy": "0_86",
    }
    assert "rho_max 0.05" in upload["version_description"]
    [deploy] = calls_named(cloud, "Model.deploy")
    assert (deploy["model"], deploy["traffic_percentage"]) == ("gsam-tfx@2", 100)
    assert (deploy["machine_type"], deploy["max_replica_count"]) == ("n1-standard-4", 3)
    assert calls_named(cloud, "Endpoint.undeploy") == [{"deployed_model_id": old, "sync": True}]
    [endpoint] = cloud.endpoints
    [serving] = endpoint.deployed
    assert serving.model_version_id == "2" and endpoint.traffic == {serving.id: 100}
    assert metadata["pushed"] == 1
    assert metadata["pushed_destination"].endswith("/models/gsam-tfx@2")
    assert metadata["deployed_model_id"] == serving.id


def test_a_failed_deploy_leaves_the_old_version_serving_and_a_rerun_finishes(
    endpoint_job, cloud, tmp_path
):
    cloud.init(location="europe-west4")
    old = cloud.add_deployed_version("gsam-tfx", "gsam-tfx")
    cloud.deploy_error = exceptions.InternalServerError("deployment failed")
    inputs = candidate_inputs(str(tmp_path / "in"))
    with pytest.raises(exceptions.InternalServerError):
        run_pusher(endpoint_job, inputs, tmp_path)
    [endpoint] = cloud.endpoints
    assert [deployed.id for deployed in endpoint.deployed] == [old]
    assert endpoint.traffic == {old: 100}
    assert calls_named(cloud, "Endpoint.undeploy") == []

    # The rerun finds the uploaded version by its alias, deploys it, then undeploys the old.
    cloud.calls.clear()
    run_pusher(endpoint_job, inputs, tmp_path, attempt=2)
    assert calls_named(cloud, "Model.upload") == []
    assert len(serving_versions(tmp_path)) == 1
    assert [d.model_version_id for d in endpoint.deployed] == ["2"]
    assert cloud.names().index("Model.deploy") < cloud.names().index("Endpoint.undeploy")


def test_the_same_model_pushed_again_adds_nothing(endpoint_job, cloud, tmp_path):
    inputs = candidate_inputs(str(tmp_path / "in"))
    run_pusher(endpoint_job, inputs, tmp_path)
    assert calls_named(cloud, "Endpoint.create") == [
        {"display_name": "gsam-tfx", "labels": {"model": "gsam-tfx"}, "sync": True}
    ]
    [upload] = calls_named(cloud, "Model.upload")
    assert upload["model_id"] == "gsam-tfx" and upload["parent_model"] is None
    cloud.calls.clear()
    run_pusher(endpoint_job, inputs, tmp_path, attempt=2)
    assert "Model.upload" not in cloud.names() and "Model.deploy" not in cloud.names()
    assert "Endpoint.undeploy" not in cloud.names()
    assert len(serving_versions(tmp_path)) == 1


def test_a_registry_push_labels_the_top_eigenvalue_and_touches_no_endpoint(tmp_path, cloud):
    job = compile_job(tmp_path, "--push-to", "vertex-model", "--sharpness")
    inputs = candidate_inputs(str(tmp_path / "in"), top_eigenvalue=123.456789)
    metadata = run_pusher(job, inputs, tmp_path)
    [upload] = calls_named(cloud, "Model.upload")
    assert upload["labels"]["top_eigenvalue"] == "123_457"
    assert not [name for name in cloud.names() if name.startswith("Endpoint")]
    assert metadata["pushed_destination"].endswith("/models/gsam-tfx@1")
    assert "deployed_model_id" not in metadata


def test_label_values_follow_vertex_label_rules():
    assert label_value(0.05) == "0_05"
    assert label_value(1e-05) == "1e-05"
    assert label_value("GSAM-k5") == "gsam-k5"
    assert label_value("a" * 80) == "a" * 63
    for value in (0.123456789, -3.5, "Adam W", 1234567.0):
        assert re.fullmatch(r"[a-z0-9_-]{1,63}", label_value(value)), value
