"""Production on Vertex AI: --push-to, --experiment, --schedule, --tensorboard, --enable-cache
and the console views of the reports.

Each flag is compiled offline into a strictly parsed Vertex AI JSON. The compiled VertexPusher
and ExperimentLogger tasks then run as Vertex AI would start them (TFX's Kubeflow V2 entry
point, with the executor input Vertex builds; tests/vertex_task.py), in this process, against
tests/fake_aiplatform.py: a recording fake of google.cloud.aiplatform, installed in the one
place every cloud call goes through (components/vertex/client.py). Nothing reaches a cloud.
"""

import json
import os
import re

import numpy as np
import pytest
import yaml
from google.api_core import exceptions
from google.protobuf import json_format
from kfp import compiler as kfp_compiler
from kfp import dsl
from kfp.pipeline_spec import pipeline_spec_pb2
from tfx.extensions.google_cloud_ai_platform import runner as ai_platform_runner
from tfx.orchestration.kubeflow.v2.container import kubeflow_v2_entrypoint_utils
from tfx.types import standard_artifacts
from tfx.utils import import_utils

from components.sharpness.probe import REPORT_FILE, SUMMARY_FILE, SharpnessReport
from components.vertex import client, report_view
from components.vertex.experiments import run_name
from components.vertex.push import label_value
from components.vertex.training import TensorBoardTrainerExecutor
from pipelines import vertex_runner
from pipelines.cloud.report_views import add_report_views
from pipelines.cloud.schedule import ScheduleSettings
from tests import trainer_examples
from tests.fake_aiplatform import PROJECT_NUMBER, FakeAiplatform
from tests.test_comparison_report import metric, slice_metrics, write_metrics
from tests.vertex_task import run_in_process
from trainer.config import TrainingConfig
from trainer.training import tensorboard
from trainer.training.history import HISTORY_FILE, write_history

IMAGE = "us-docker.pkg.dev/my-project/gsam/gsam-tfx:1"
ROOT = "gs://my-bucket/gsam-tfx"
FLAGS = ["--image", IMAGE, "--pipeline-root", ROOT, "--project", "my-project"]
# How the candidate trained (its history.json) and scored (its evaluation).
CANDIDATE = TrainingConfig(
    optimizer="gsam", rho_max=0.05, rho_min=0.01, alpha=0.02, learning_rate=0.1
)
EVAL_ACCURACY = 0.86
TENSORBOARD = "projects/my-project/locations/us-central1/tensorboards/42"
SERVICE_ACCOUNT = "pipelines@my-project.iam.gserviceaccount.com"
JOB_ID = "gsam-tfx-20250101120000"


@pytest.fixture
def fake(monkeypatch):
    platform = FakeAiplatform()
    monkeypatch.setattr(client, "load_aiplatform", lambda: platform)
    return platform


def compile_job(tmp_path, *flags, name="pipeline.json") -> dict:
    """Compiles with `flags` and parses the file strictly, as a PipelineJob and its spec."""
    output = tmp_path / name
    vertex_runner.main(["--output-file", str(output), *FLAGS, *flags])
    job = json.loads(output.read_text())
    json_format.ParseDict(job, pipeline_spec_pb2.PipelineJob())
    json_format.ParseDict(job["pipelineSpec"], pipeline_spec_pb2.PipelineSpec())
    return job


def task_parameter(job, task, name) -> str:
    parameters = job["pipelineSpec"]["root"]["dag"]["tasks"][task]["inputs"]["parameters"]
    return parameters[name]["runtimeValue"]["constantValue"]["stringValue"]


def executor_class(job, task) -> str:
    tasks, spec = job["pipelineSpec"]["root"]["dag"]["tasks"], job["pipelineSpec"]
    label = spec["components"][tasks[task]["componentRef"]["name"]]["executorLabel"]
    args = spec["deploymentSpec"]["executors"][label]["container"]["args"]
    return args[args.index("--executor_class_path") + 1]


def task_dir(tmp_path, task, attempt=1) -> str:
    """A task's folder as Vertex AI lays it out under the pipeline root."""
    return str(tmp_path / "root" / PROJECT_NUMBER / JOB_ID / f"{task}_{attempt}")


# What each --push-to compiles to.


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


def artifact(artifact_type, uri, artifact_id):
    instance = artifact_type()
    instance.uri, instance.id = uri, artifact_id
    return instance


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


def calls_named(fake, name):
    return [arguments for call, arguments in fake.calls if call == name]


def test_a_model_that_is_not_blessed_is_not_uploaded(endpoint_job, fake, tmp_path):
    inputs = candidate_inputs(str(tmp_path / "in"), blessed=False)
    metadata = run_pusher(endpoint_job, inputs, tmp_path)
    assert metadata["pushed"] == 0
    assert fake.calls == []
    assert serving_versions(tmp_path) == []


def test_upload_then_deploy_then_undeploy_the_previous_version(endpoint_job, fake, tmp_path):
    fake.init(location="europe-west4")
    old = fake.add_deployed_version("gsam-tfx", "gsam-tfx")
    fake.calls.clear()
    metadata = run_pusher(endpoint_job, candidate_inputs(str(tmp_path / "in")), tmp_path)

    [version] = serving_versions(tmp_path)
    assert fake.names() == [
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
    assert fake.calls[0][1] == {"project": "my-project", "location": "europe-west4"}
    [upload] = calls_named(fake, "Model.upload")
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
    [deploy] = calls_named(fake, "Model.deploy")
    assert (deploy["model"], deploy["traffic_percentage"]) == ("gsam-tfx@2", 100)
    assert (deploy["machine_type"], deploy["max_replica_count"]) == ("n1-standard-4", 3)
    assert calls_named(fake, "Endpoint.undeploy") == [{"deployed_model_id": old, "sync": True}]
    [endpoint] = fake.endpoints
    [serving] = endpoint.deployed
    assert serving.model_version_id == "2" and endpoint._traffic == {serving.id: 100}
    assert metadata["pushed"] == 1
    assert metadata["pushed_destination"].endswith("/models/gsam-tfx@2")
    assert metadata["deployed_model_id"] == serving.id


def test_a_failed_deploy_leaves_the_old_version_serving_and_a_rerun_finishes(
    endpoint_job, fake, tmp_path
):
    fake.init(location="europe-west4")
    old = fake.add_deployed_version("gsam-tfx", "gsam-tfx")
    fake.deploy_error = exceptions.InternalServerError("deployment failed")
    inputs = candidate_inputs(str(tmp_path / "in"))
    with pytest.raises(exceptions.InternalServerError):
        run_pusher(endpoint_job, inputs, tmp_path)
    [endpoint] = fake.endpoints
    assert [deployed.id for deployed in endpoint.deployed] == [old]
    assert endpoint._traffic == {old: 100}
    assert calls_named(fake, "Endpoint.undeploy") == []

    # The rerun finds the uploaded version by its alias, deploys it, then undeploys the old.
    fake.calls.clear()
    run_pusher(endpoint_job, inputs, tmp_path, attempt=2)
    assert calls_named(fake, "Model.upload") == []
    assert len(serving_versions(tmp_path)) == 1
    assert [d.model_version_id for d in endpoint.deployed] == ["2"]
    assert fake.names().index("Model.deploy") < fake.names().index("Endpoint.undeploy")


def test_the_same_model_pushed_again_adds_nothing(endpoint_job, fake, tmp_path):
    inputs = candidate_inputs(str(tmp_path / "in"))
    run_pusher(endpoint_job, inputs, tmp_path)
    assert calls_named(fake, "Endpoint.create") == [
        {"display_name": "gsam-tfx", "labels": {"model": "gsam-tfx"}, "sync": True}
    ]
    [upload] = calls_named(fake, "Model.upload")
    assert upload["model_id"] == "gsam-tfx" and upload["parent_model"] is None
    fake.calls.clear()
    run_pusher(endpoint_job, inputs, tmp_path, attempt=2)
    assert "Model.upload" not in fake.names() and "Model.deploy" not in fake.names()
    assert "Endpoint.undeploy" not in fake.names()
    assert len(serving_versions(tmp_path)) == 1


def test_a_registry_push_labels_the_top_eigenvalue_and_touches_no_endpoint(tmp_path, fake):
    job = compile_job(tmp_path, "--push-to", "vertex-model", "--sharpness")
    inputs = candidate_inputs(str(tmp_path / "in"), top_eigenvalue=123.456789)
    metadata = run_pusher(job, inputs, tmp_path)
    [upload] = calls_named(fake, "Model.upload")
    assert upload["labels"]["top_eigenvalue"] == "123_457"
    assert not [name for name in fake.names() if name.startswith("Endpoint")]
    assert metadata["pushed_destination"].endswith("/models/gsam-tfx@1")
    assert "deployed_model_id" not in metadata


def test_label_values_follow_vertex_label_rules():
    assert label_value(0.05) == "0_05"
    assert label_value(1e-05) == "1e-05"
    assert label_value("GSAM-k5") == "gsam-k5"
    assert label_value("a" * 80) == "a" * 63
    for value in (0.123456789, -3.5, "Adam W", 1234567.0):
        assert re.fullmatch(r"[a-z0-9_-]{1,63}", label_value(value)), value


# Experiments


def test_each_trainer_of_a_comparison_is_an_experiment_run(tmp_path, fake):
    job = compile_job(
        tmp_path, "--compare", "--methods", "plain,gsam", "--seeds", "1", "--experiment",
        "sweep", "--learning-rate", "0.1",
    )  # fmt: skip
    logger = job["pipelineSpec"]["root"]["dag"]["tasks"]["ExperimentLogger"]
    trainers = json.loads(task_parameter(job, "ExperimentLogger", "trainers"))
    producers = {
        trainers[key]: value["taskOutputArtifact"]
        for key, value in logger["inputs"]["artifacts"].items()
    }
    assert producers == {
        trainer: {"outputArtifactKey": "model_run", "producerTask": trainer}
        for trainer in ("Trainer.plain.seed1", "Trainer.gsam.seed1")
    }
    inputs = {}
    for key, trainer in trainers.items():
        config = TrainingConfig(optimizer=trainer.split(".")[1], seed=1, learning_rate=0.1)
        uri = str(tmp_path / trainer)
        os.makedirs(uri)
        epochs = [{"epoch": e, "val_accuracy": 0.5 + e / 10, "seconds": 2.0} for e in (1, 2)]
        write_history(os.path.join(uri, HISTORY_FILE), config, epochs)
        inputs[key] = artifact(standard_artifacts.ModelRun, uri, len(inputs) + 1)

    output = run_in_process(job, "ExperimentLogger", inputs, task_dir(tmp_path, "ExperimentLogger"))
    plain = fake.runs["sweep", f"{JOB_ID}-trainer-plain-seed1"]
    gsam = fake.runs["sweep", f"{JOB_ID}-trainer-gsam-seed1"]
    assert plain.params == {
        "method": "plain", "seed": 1, "learning_rate": 0.1, "base_optimizer": "sgd",
        "epochs": 3, "batch_size": 64,
    }  # fmt: skip
    assert (gsam.params["rho_max"], gsam.params["rho_min"], gsam.params["alpha"]) == (
        0.04,
        0.02,
        0.01,
    )
    assert gsam.metrics == {"val_accuracy": 0.7, "epochs_trained": 2, "training_seconds": 4.0}
    assert plain.state == gsam.state == "COMPLETE"
    assert fake.names()[:6] == [
        "init", "Experiment.get_or_create", "ExperimentRun.get", "ExperimentRun.create",
        "ExperimentRun.log_params", "ExperimentRun.log_metrics",
    ]  # fmt: skip
    [runs] = output["artifacts"]["experiment_runs"]["artifacts"]
    with open(os.path.join(runs["uri"], "runs.json")) as file:
        logged = json.load(file)
    assert logged["Trainer.gsam.seed1"] == gsam.resource_name

    # A rerun of the task updates the same runs.
    fake.calls.clear()
    run_in_process(job, "ExperimentLogger", inputs, task_dir(tmp_path, "ExperimentLogger", 2))
    assert "ExperimentRun.create" not in fake.names()
    assert len(fake.runs) == 2


def test_run_names_fit_vertex_limits():
    name = run_name("e" * 80, "gsam-tfx-compare-20250101120000", "Trainer.gsam-k5.seed12")
    assert name.endswith("-trainer-gsam-k5-seed12") and "20250101120000" in name
    assert len("e" * 80) + 1 + len(name) <= 121
    assert re.fullmatch(r"[a-z0-9][a-z0-9-]*", name)


# Submission: one run or a schedule, the cache and the experiment.


def test_submit_passes_the_cache_flag_and_the_experiment(tmp_path, fake):
    compile_job(
        tmp_path, "--enable-cache", "--experiment", "sweep", "--submit",
        "--service-account", SERVICE_ACCOUNT,
    )  # fmt: skip
    assert fake.calls == [
        ("init", {"project": "my-project", "location": "us-central1"}),
        (
            "PipelineJob",
            {
                "display_name": "gsam-tfx",
                "template_path": str(tmp_path / "pipeline.json"),
                "pipeline_root": ROOT,
                "parameter_values": {},
                "enable_caching": True,
            },
        ),
        ("PipelineJob.submit", {"service_account": SERVICE_ACCOUNT, "experiment": "sweep"}),
    ]


def test_the_cache_stays_off_unless_asked(tmp_path, fake):
    job = compile_job(tmp_path, "--submit")
    [job_arguments] = calls_named(fake, "PipelineJob")
    assert job_arguments["enable_caching"] is False
    assert calls_named(fake, "PipelineJob.submit") == [{"service_account": None}]
    tasks = job["pipelineSpec"]["root"]["dag"]["tasks"]
    assert not any(task.get("cachingOptions", {}).get("enableCache") for task in tasks.values())


def test_a_schedule_is_created_instead_of_a_run(tmp_path, fake, capsys):
    compile_job(
        tmp_path, "--submit", "--schedule", "CRON_TZ=Europe/Berlin 0 3 * * MON-FRI",
        "--schedule-max-runs", "30", "--service-account", SERVICE_ACCOUNT,
    )  # fmt: skip
    assert fake.names() == ["init", "PipelineJob", "PipelineJob.create_schedule"]
    assert calls_named(fake, "PipelineJob.create_schedule") == [
        {
            "cron": "CRON_TZ=Europe/Berlin 0 3 * * MON-FRI",
            "display_name": "gsam-tfx",
            "max_run_count": 30,
            "max_concurrent_run_count": 1,
            "service_account": SERVICE_ACCOUNT,
        }
    ]
    assert "created schedule projects/" in capsys.readouterr().out


@pytest.mark.parametrize(
    "cron",
    [
        "0 3 * * 1",
        "*/15 * * * *",
        "0 0 1,15 * *",
        "30 2 * JAN-MAR SUN",
        "TZ=America/New_York 0 9-17/2 * * 1-5",
    ],
)
def test_cron_expressions_that_vertex_takes(cron):
    assert ScheduleSettings(cron).cron == cron


# Bad values fail before compiling, naming the flag.


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--push-to", "vertex-endpoint"], "--push-to vertex-endpoint needs --project"),
        (
            ["--push-to", "vertex-model", "--vertex-endpoint", "x"],
            "--vertex-endpoint needs --push-to vertex-endpoint",
        ),
        (
            ["--serving-machine-type", "n1-standard-8"],
            "--serving-machine-type needs --push-to vertex-endpoint",
        ),
        (["--experiment", "sweep"], "--experiment needs --project"),
        (
            ["--project", "my-project", "--experiment", "Sweep_1"],
            "experiment must be lowercase letters, digits and -",
        ),
        (
            ["--project", "My_Project", "--push-to", "vertex-model"],
            "project must be a Google Cloud project ID",
        ),
        (
            ["--project", "my-project", "--push-to", "vertex-model", "--pipeline-name", "GSAM"],
            "(flag: --pipeline-name)",
        ),
        (
            [
                "--project",
                "my-project",
                "--push-to",
                "vertex-model",
                "--serving-model-dir",
                "s3://bucket/serving",
            ],
            "serving_model_dir must be on gs:// to push to vertex-model",
        ),
        (
            [
                "--project",
                "my-project",
                "--push-to",
                "vertex-endpoint",
                "--serving-accelerator-count",
                "2",
            ],
            "accelerator_type and accelerator_count go together",
        ),
        (["--schedule", "0 3 * * 1"], "--schedule needs --submit"),
        (["--submit", "--schedule", "0 3 * *"], "needs five fields"),
        (["--submit", "--schedule", "0 25 * * *"], "its hour field (25) must be within 0-23"),
        (["--submit", "--schedule", "*/0 * * * *"], "its minute field has '*/0'"),
        (["--submit", "--schedule", "0 3 * * FUNDAY"], "its day-of-week field (FUNDAY)"),
        (["--submit", "--schedule", "0 5-3 * * *"], "its hour range 5-3 runs backwards"),
        (["--submit", "--wait", "--schedule", "0 3 * * 1"], "drop --wait"),
        (
            ["--submit", "--schedule", "0 3 * * 1", "--schedule-max-runs", "0"],
            "max_runs must be an integer >= 1, got 0. (flag: --schedule-max-runs)",
        ),
        (["--schedule-max-runs", "3"], "--schedule-max-runs needs --schedule"),
        (["--tensorboard", TENSORBOARD], "--tensorboard needs --vertex-training"),
        (
            ["--vertex-training", "--project", "my-project", "--tensorboard", TENSORBOARD],
            "tensorboard needs a service_account",
        ),
        (
            [
                "--vertex-training",
                "--project",
                "my-project",
                "--service-account",
                SERVICE_ACCOUNT,
                "--tensorboard",
                "my-tensorboard",
            ],
            "tensorboard must be a Vertex TensorBoard resource name",
        ),
    ],
)
def test_bad_production_flags_fail_before_compiling(argv, message, tmp_path, capsys, fake):
    output = tmp_path / "p.json"
    with pytest.raises(SystemExit):
        vertex_runner.main(
            ["--output-file", str(output), "--image", IMAGE, "--pipeline-root", ROOT, *argv]
        )
    assert message in capsys.readouterr().err
    assert not output.exists()
    assert fake.calls == []


# Vertex TensorBoard


def test_tensorboard_sends_the_trainer_job_to_it_with_its_own_log_folder(tmp_path, monkeypatch):
    job = compile_job(
        tmp_path, "--vertex-training", "--tensorboard", TENSORBOARD,
        "--service-account", SERVICE_ACCOUNT,
    )  # fmt: skip
    assert executor_class(job, "Trainer") == (
        "components.vertex.training.TensorBoardTrainerExecutor"
    )
    custom_config = task_parameter(job, "Trainer", "custom_config")
    job_args = json.loads(custom_config)["ai_platform_training_args"]
    assert (job_args["tensorboard"], job_args["service_account"]) == (TENSORBOARD, SERVICE_ACCOUNT)

    started = []
    monkeypatch.setattr(
        ai_platform_runner, "start_cloud_training", lambda *args: started.append(args)
    )
    model_run = artifact(standard_artifacts.ModelRun, "gs://my-bucket/run/model_run", 1)
    TensorBoardTrainerExecutor().Do(
        {}, {"model_run": [model_run]}, {"custom_config": custom_config}
    )
    [(_, _, _, _, started_args, *_)] = started
    assert started_args["base_output_directory"] == {
        "output_uri_prefix": "gs://my-bucket/run/model_run"
    }
    assert started_args["tensorboard"] == TENSORBOARD


def test_without_tensorboard_the_trainer_job_is_tfx_own(tmp_path):
    job = compile_job(tmp_path, "--vertex-training")
    assert executor_class(job, "Trainer") == (
        "tfx.extensions.google_cloud_ai_platform.trainer.executor.GenericExecutor"
    )
    job_args = json.loads(task_parameter(job, "Trainer", "custom_config"))
    assert "tensorboard" not in job_args["ai_platform_training_args"]


def test_the_trainer_writes_its_tensorboard_logs_where_vertex_reads_them(tmp_path, monkeypatch):
    vertex_logs = tmp_path / "model_run" / "logs"
    monkeypatch.setenv(tensorboard.VERTEX_LOG_DIR, str(vertex_logs))
    rng = np.random.default_rng(0)
    splits = {
        "train": trainer_examples.random_image_examples(rng, 32),
        "eval": trainer_examples.random_image_examples(rng, 16),
    }
    config = TrainingConfig(optimizer="plain", epochs=1, batch_size=16, model_widths=(4, 8, 8))
    with open(trainer_examples.SAMPLE_SCHEMA) as file:
        trainer_examples.run_trainer(tmp_path, config, splits, file.read())
    for split in ("train", "validation"):
        assert any(
            name.startswith("events.out.tfevents") for name in os.listdir(vertex_logs / split)
        )
    assert tensorboard.log_dir("/runs/7", environ={}) == "/runs/7"


# The reports in the console


def kfp_view_pipeline():
    """A pipeline of one kfp 2 container component with the view task's artifacts, to compare
    with what report_views adds."""

    @dsl.container_component
    def view(
        source: dsl.Input[dsl.Artifact],
        markdown: dsl.Output[dsl.Markdown],
        html: dsl.Output[dsl.HTML],
    ):
        return dsl.ContainerSpec(
            image=IMAGE,
            command=["python", "-m", "components.vertex.report_view"],
            args=[
                "--source", source.path, "--markdown", "report.md", markdown.path,
                "--html", "report.html", html.path,
            ],
        )  # fmt: skip

    @dsl.pipeline(name="view")
    def pipeline():
        view(source=dsl.importer(artifact_uri=ROOT, artifact_class=dsl.Artifact).output)

    return pipeline


def test_the_report_views_are_tasks_in_kfp_form_after_their_reports(tmp_path):
    job = compile_job(
        tmp_path, "--compare", "--methods", "plain,gsam", "--seeds", "1", "--sharpness"
    )
    spec = job["pipelineSpec"]
    tasks = spec["root"]["dag"]["tasks"]
    views = sorted(name for name in tasks if name.endswith(".view"))
    assert views == ["ComparisonReport.view", "SharpnessProbe.view"]

    kfp_file = tmp_path / "kfp.yaml"
    kfp_compiler.Compiler().compile(kfp_view_pipeline(), str(kfp_file))
    kfp_spec = yaml.safe_load(kfp_file.read_text())
    kfp_component = kfp_spec["components"]["comp-view"]
    component = spec["components"]["ComparisonReport.view"]
    assert component["outputDefinitions"] == kfp_component["outputDefinitions"]
    report_type = spec["components"]["ComparisonReport"]["outputDefinitions"]["artifacts"]["report"]
    assert component["inputDefinitions"]["artifacts"]["source"] == report_type
    executor = spec["deploymentSpec"]["executors"][component["executorLabel"]]
    assert executor == kfp_spec["deploymentSpec"]["executors"]["exec-view"]
    task = tasks["ComparisonReport.view"]
    assert task["dependentTasks"] == ["ComparisonReport"]
    assert task["inputs"]["artifacts"]["source"]["taskOutputArtifact"] == {
        "outputArtifactKey": "report",
        "producerTask": "ComparisonReport",
    }
    sharpness = spec["components"]["SharpnessProbe.view"]["outputDefinitions"]["artifacts"]
    assert set(sharpness) == {"markdown"}


def test_every_artifact_type_a_tfx_task_reads_imports_in_its_container(tmp_path):
    job = compile_job(
        tmp_path, "--compare", "--methods", "plain,gsam", "--seeds", "1", "--sharpness",
        "--push-to", "vertex-model", "--experiment", "sweep",
    )  # fmt: skip
    spec = json_format.ParseDict(job["pipelineSpec"], pipeline_spec_pb2.PipelineSpec())
    for name, component in spec.components.items():
        if name.endswith(".view"):
            continue  # not TFX: report_view reads paths, not artifact types
        for definitions in (component.input_definitions, component.output_definitions):
            for key, definition in definitions.artifacts.items():
                path = kubeflow_v2_entrypoint_utils._retrieve_class_path(definition.artifact_type)
                assert import_utils.import_class_by_path(path), (name, key, path)


def test_the_view_task_writes_the_files_vertex_renders(tmp_path):
    job = compile_job(tmp_path, "--compare", "--methods", "plain,gsam", "--seeds", "1")
    spec = job["pipelineSpec"]
    component = spec["components"]["ComparisonReport.view"]
    container = spec["deploymentSpec"]["executors"][component["executorLabel"]]["container"]
    report = tmp_path / "gcs" / "report"
    report.mkdir(parents=True)
    (report / "report.md").write_text("# Report\n\n![Eval accuracy per epoch](eval_accuracy.png)\n")
    (report / "report.html").write_text("<html><img src='data:image/png;base64,AA'></html>")
    paths = {
        "{{$.inputs.artifacts['source'].path}}": str(report),
        "{{$.outputs.artifacts['markdown'].path}}": str(tmp_path / "gcs" / "view" / "markdown"),
        "{{$.outputs.artifacts['html'].path}}": str(tmp_path / "gcs" / "view" / "html"),
    }
    assert container["command"] == ["python", "-m", "components.vertex.report_view"]
    assert report_view.main([paths.get(arg, arg) for arg in container["args"]]) == 0
    markdown = (tmp_path / "gcs" / "view" / "markdown").read_text()
    assert markdown == "# Report\n\n*Figure: Eval accuracy per epoch (in the HTML view).*\n"
    assert (tmp_path / "gcs" / "view" / "html").read_text() == (report / "report.html").read_text()


def test_a_spec_without_reports_gets_no_views():
    spec = {"root": {"dag": {"tasks": {"Trainer": {}}}}, "components": {}, "deploymentSpec": {}}
    assert add_report_views(spec, IMAGE) == []


def test_the_sharpness_view_reads_the_probe_summary(tmp_path):
    probe = tmp_path / "sharpness"
    probe.mkdir()
    (probe / SUMMARY_FILE).write_text("# Sharpness\n\n| measure | candidate |\n")
    destination = tmp_path / "markdown"
    report_view.main(["--source", str(probe), "--markdown", SUMMARY_FILE, str(destination)])
    assert destination.read_text() == (probe / SUMMARY_FILE).read_text()
    with pytest.raises(SystemExit):
        report_view.main(["--source", str(tmp_path / "missing"), "--markdown", "x.md", "out"])
