"""Vertex AI JSON, Kubeflow Pipelines YAML, and what a submission would send."""

import json

import pytest
import yaml
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2
from tfx.utils import import_utils

from components.data_checks.artifact import RecordCheckReport
from pipelines import kubeflow_runner, vertex_runner
from pipelines.cloud import submit
from tests.pipeline_support import ALL_NODES
from trainer.config import TrainingConfig
from trainer.search_space import SearchSpace

IMAGE = "us-docker.pkg.dev/my-project/gsam/gsam-tfx:1"
ROOT = "gs://my-bucket/gsam-tfx"
# The compiled pipeline splits the resolver into its two queries.
RESOLVER = "latest_blessed_model_resolver"
COMPONENTS = ALL_NODES - {RESOLVER} | {
    f"{RESOLVER}-model-resolver",
    f"{RESOLVER}-model-blessing-resolver",
}
# Kubeflow's baseline is a container component; components are named as KFP's SDK names them.
KUBEFLOW_COMPONENTS = {f"comp-{name}" for name in ALL_NODES - {RESOLVER} | {"PushedBaseline"}}
COMMON_FLAGS = [
    "--image",
    IMAGE,
    "--pipeline-root",
    ROOT,
    "--optimizer",
    "gsam",
    "--rho-max",
    "0.05",
    "--rho-min",
    "0.01",
    "--alpha",
    "0.02",
    "--epochs",
    "7",
]


def task_parameters(spec: pipeline_spec_pb2.PipelineSpec, task: str) -> dict[str, str]:
    """A task's string constants: pipeline spec 2.0's `constantValue` (Vertex AI), 2.1's
    `constant` (Kubeflow)."""
    return {
        name: value.runtime_value.constant.string_value
        or value.runtime_value.constant_value.string_value
        for name, value in spec.root.dag.tasks[task].inputs.parameters.items()
    }


def check_spec(
    spec: pipeline_spec_pb2.PipelineSpec,
    executor_class="GenericExecutor",
    extra_components=(),
    components=COMPONENTS,
):
    assert set(spec.components) == components | set(extra_components)
    executors = json_format.MessageToDict(spec.deployment_spec)["executors"]
    images = {name: e["container"]["image"] for name, e in executors.items() if "container" in e}
    containers = {name for name in components if "resolver" not in name}
    assert set(images.values()) == {IMAGE}
    assert len(images) == len(containers) + len(extra_components)
    assert executors["Trainer_executor"]["container"]["args"][1].endswith(executor_class)
    parameters = task_parameters(spec, "Trainer")
    assert parameters["run_fn"] == "trainer.task.run_fn"
    custom_config = json.loads(parameters["custom_config"])
    training = TrainingConfig.from_custom_config(custom_config)
    assert (
        training.optimizer,
        training.rho_max,
        training.rho_min,
        training.alpha,
        training.epochs,
    ) == ("gsam", 0.05, 0.01, 0.02, 7)
    return custom_config


def test_vertex_json_parses_strictly_and_holds_the_whole_pipeline(tmp_path):
    output = tmp_path / "pipeline.json"
    vertex_runner.main(["--output-file", str(output), *COMMON_FLAGS])
    document = json.loads(output.read_text())
    job = json_format.ParseDict(document, pipeline_spec_pb2.PipelineJob())
    spec = json_format.ParseDict(document["pipelineSpec"], pipeline_spec_pb2.PipelineSpec())
    assert spec.pipeline_info.name == "gsam-tfx"
    assert job.runtime_config.gcs_output_directory == ROOT
    check_spec(spec)


def test_the_record_checks_report_type_is_importable_where_it_runs(tmp_path):
    """Vertex AI and Kubeflow import a custom artifact type by its schema title."""
    output = tmp_path / "pipeline.json"
    vertex_runner.main(["--output-file", str(output), *COMMON_FLAGS])
    spec = json_format.ParseDict(
        json.loads(output.read_text())["pipelineSpec"], pipeline_spec_pb2.PipelineSpec()
    )
    outputs = spec.components["RecordCheck"].output_definitions.artifacts
    title = yaml.safe_load(outputs["report"].artifact_type.instance_schema)["title"]
    assert import_utils.import_class_by_path(title) is RecordCheckReport
    [gate_input] = [
        name
        for name, artifact in spec.root.dag.tasks["ValidationGate"].inputs.artifacts.items()
        if artifact.task_output_artifact.producer_task == "RecordCheck"
    ]
    assert gate_input == "record_check"


def test_vertex_json_with_sharpness_puts_the_probe_between_evaluator_and_pusher(tmp_path):
    output = tmp_path / "pipeline.json"
    vertex_runner.main(
        ["--output-file", str(output), *COMMON_FLAGS, "--sharpness", "--max-top-eigenvalue", "250"]
    )
    document = json.loads(output.read_text())
    json_format.ParseDict(document, pipeline_spec_pb2.PipelineJob())
    spec = json_format.ParseDict(document["pipelineSpec"], pipeline_spec_pb2.PipelineSpec())
    # The probe, and the task that shows its summary in the console (report_views.py).
    check_spec(spec, extra_components=["SharpnessProbe", "SharpnessProbe.view"])
    probe = spec.root.dag.tasks["SharpnessProbe"]
    producers = {
        name: artifact.task_output_artifact.producer_task
        for name, artifact in probe.inputs.artifacts.items()
    }
    assert producers == {
        "model": "Trainer",
        "examples": "ImportExampleGen",
        "baseline_model": f"{RESOLVER}-model-resolver",
        "evaluator_blessing": "Evaluator",
    }
    parameters = {
        name: value.runtime_value.constant_value for name, value in probe.inputs.parameters.items()
    }
    assert parameters["max_top_eigenvalue"].double_value == 250.0
    assert "max_sharpness_increase" not in parameters
    training = json.loads(parameters["training_config"].string_value)
    assert TrainingConfig.from_dict(training).epochs == 7
    pusher_blessing = spec.root.dag.tasks["Pusher"].inputs.artifacts["model_blessing"]
    assert pusher_blessing.task_output_artifact.producer_task == "SharpnessProbe"


def test_vertex_training_sends_the_trainer_to_vertex(tmp_path):
    output = tmp_path / "pipeline.json"
    vertex_runner.main(
        [
            "--output-file",
            str(output),
            *COMMON_FLAGS,
            "--vertex-training",
            "--project",
            "my-project",
            "--region",
            "europe-west4",
            "--accelerator-type",
            "NVIDIA_L4",
            "--accelerator-count",
            "2",
            "--workers",
            "3",
        ]
    )
    document = json.loads(output.read_text())
    spec = json_format.ParseDict(document["pipelineSpec"], pipeline_spec_pb2.PipelineSpec())
    custom_config = check_spec(
        spec, "tfx.extensions.google_cloud_ai_platform.trainer.executor.GenericExecutor"
    )
    assert custom_config["ai_platform_enable_vertex"] is True
    assert custom_config["ai_platform_vertex_region"] == "europe-west4"
    pools = custom_config["ai_platform_training_args"]["worker_pool_specs"]
    assert [pool["replica_count"] for pool in pools] == [1, 2]
    assert pools[0]["machine_spec"]["accelerator_count"] == 2
    assert pools[1]["container_spec"]["image_uri"] == IMAGE


def test_vertex_tuning_runs_parallel_trials_and_feeds_the_trainer(tmp_path):
    output = tmp_path / "pipeline.json"
    vertex_runner.main(
        [
            "--output-file", str(output), *COMMON_FLAGS,
            "--tune", "--tune-trials", "6", "--tune-rho-max", "0.02", "0.5",
            "--vertex-training", "--project", "my-project", "--machine-type", "n1-standard-4",
            "--parallel-trials", "3",
        ]
    )  # fmt: skip
    document = json.loads(output.read_text())
    json_format.ParseDict(document, pipeline_spec_pb2.PipelineJob())
    spec = json_format.ParseDict(document["pipelineSpec"], pipeline_spec_pb2.PipelineSpec())
    check_spec(
        spec,
        "tfx.extensions.google_cloud_ai_platform.trainer.executor.GenericExecutor",
        extra_components={"Tuner"},
    )
    executors = json_format.MessageToDict(spec.deployment_spec)["executors"]
    assert executors["Tuner_executor"]["container"]["args"][1] == (
        "tfx.extensions.google_cloud_ai_platform.tuner.executor.Executor"
    )
    parameters = task_parameters(spec, "Tuner")
    assert parameters["tuner_fn"] == "trainer.tuning.tuner_fn"
    assert json.loads(parameters["tune_args"]) == {"num_parallel_trials": 3}
    custom_config = json.loads(parameters["custom_config"])
    assert TrainingConfig.from_custom_config(custom_config).rho_max == 0.05
    space = SearchSpace.from_custom_config(custom_config)
    assert (space.max_trials, space.rho_max_range) == (6, (0.02, 0.5))
    assert custom_config["ai_platform_enable_vertex"] is True
    tuning_args = custom_config["ai_platform_tuning_args"]
    assert tuning_args["project"] == "my-project"
    pools = tuning_args["job_spec"]["worker_pool_specs"]
    assert [pool["replica_count"] for pool in pools] == [1, 2]
    assert {pool["machine_spec"]["machine_type"] for pool in pools} == {"n1-standard-4"}
    assert {pool["container_spec"]["image_uri"] for pool in pools} == {IMAGE}
    trainer = spec.root.dag.tasks["Trainer"]
    assert "Tuner" in trainer.dependent_tasks
    consumed = trainer.inputs.artifacts["hyperparameters"].task_output_artifact
    assert (consumed.producer_task, consumed.output_artifact_key) == (
        "Tuner",
        "best_hyperparameters",
    )


@pytest.mark.parametrize(
    "runner, file_name", [(vertex_runner, "p.json"), (kubeflow_runner, "p.yaml")]
)
def test_cloud_data_schema_and_output_uris_reach_the_compiled_pipeline_unchanged(
    runner, file_name, tmp_path
):
    runner.main(
        [
            "--output-file",
            str(tmp_path / file_name),
            *COMMON_FLAGS,
            "--data-root",
            "gs://my-bucket/cifar",
            "--data-format",
            "tfrecord",
            "--schema",
            "gs://my-bucket/cifar/schema.pbtxt",
            "--serving-model-dir",
            "s3://other-bucket/serving",
        ]
    )
    [document] = yaml.safe_load_all((tmp_path / file_name).read_text())
    spec = json_format.ParseDict(
        document.get("pipelineSpec", document), pipeline_spec_pb2.PipelineSpec()
    )
    assert task_parameters(spec, "ImportExampleGen")["input_base"] == "gs://my-bucket/cifar"
    assert task_parameters(spec, "ImportSchemaGen")["schema_file"] == (
        "gs://my-bucket/cifar/schema.pbtxt"
    )
    destination = json.loads(task_parameters(spec, "Pusher")["push_destination"])
    assert destination["filesystem"]["base_directory"] == "s3://other-bucket/serving"
    root = document.get("runtimeConfig", {}).get("gcsOutputDirectory")
    assert (root or spec.default_pipeline_root) == ROOT


def test_kubeflow_yaml_parses_strictly_and_holds_the_whole_pipeline(tmp_path):
    output = tmp_path / "pipeline.yaml"
    kubeflow_runner.main(["--output-file", str(output), *COMMON_FLAGS])
    [document] = yaml.safe_load_all(output.read_text())
    spec = json_format.ParseDict(document, pipeline_spec_pb2.PipelineSpec())
    assert spec.default_pipeline_root == ROOT
    check_spec(spec, components=KUBEFLOW_COMPONENTS)


@pytest.mark.parametrize(
    "runner, argv, message",
    [
        (vertex_runner, ["--pipeline-root", "/local/root"], "--pipeline-root must be a bucket URI"),
        (vertex_runner, ["--vertex-training"], "--vertex-training needs --project, even to"),
        (
            vertex_runner,
            ["--vertex-training", "--project", "p-1234", "--accelerator-count", "2"],
            "accelerator_type and accelerator_count go together",
        ),
        (vertex_runner, ["--rho-min", "0.9"], "rho_min (0.9) must not exceed rho_max"),
        (
            vertex_runner,
            ["--tune", "--parallel-trials", "3"],
            "needs tuning on Vertex AI Training (tuning and vertex_training); elsewhere the "
            "Tuner runs one trial at a time. (flag: --parallel-trials)",
        ),
        (
            vertex_runner,
            ["--tune", "--tune-rho-max", "1", "0.1"],
            "rho_max_range low (1.0) must not exceed its high (0.1). (flag: --tune-rho-max)",
        ),
        (
            vertex_runner,
            ["--data-root", "gs://bucket/data"],
            "--data-root gs://bucket/data needs --data-format tfrecord or --data-format csv",
        ),
        (kubeflow_runner, [], "--output-file must end in .yaml"),
        (
            vertex_runner,
            ["--max-top-eigenvalue", "5"],
            "--max-top-eigenvalue gates the SharpnessProbe: add --sharpness",
        ),
        (
            vertex_runner,
            ["--sharpness", "--max-sharpness-increase", "-1"],
            "max_sharpness_increase must be >= 0, got -1.0. (flag: --max-sharpness-increase)",
        ),
    ],
)
def test_bad_flags_are_named_before_compiling(runner, argv, message, tmp_path, capsys):
    with pytest.raises(SystemExit):
        runner.main(["--output-file", str(tmp_path / "p.json"), *COMMON_FLAGS, *argv])
    assert message in capsys.readouterr().err
    assert not (tmp_path / "p.json").exists()


class RecordingAiplatform:
    """Stands in for google.cloud.aiplatform: records the calls, plays back job states."""

    def __init__(self, states=("PIPELINE_STATE_RUNNING", "PIPELINE_STATE_SUCCEEDED")):
        self.calls, self.states = [], list(states)

    def init(self, **kwargs):
        self.calls.append(("init", kwargs))

    def PipelineJob(self, **kwargs):
        self.calls.append(("PipelineJob", kwargs))
        platform = self

        class Job:
            resource_name = "projects/1/locations/europe-west4/pipelineJobs/gsam-tfx-1"

            def submit(self, **kwargs):
                platform.calls.append(("submit", kwargs))

            @property
            def state(self):
                return type("State", (), {"name": platform.states.pop(0)})

        return Job()


@pytest.fixture(scope="module")
def vertex_template(tmp_path_factory):
    path = tmp_path_factory.mktemp("vertex") / "pipeline.json"
    vertex_runner.main(["--output-file", str(path), *COMMON_FLAGS])
    return str(path)


def test_vertex_submission_sends_project_region_template_and_parameters(vertex_template):
    platform, log = RecordingAiplatform(), []
    submit.submit_to_vertex(
        vertex_template,
        project="my-project",
        region="europe-west4",
        pipeline_root=ROOT,
        display_name="gsam-tfx",
        service_account="runner@my-project.iam.gserviceaccount.com",
        wait=True,
        poll_seconds=0,
        aiplatform=platform,
        log=log.append,
    )
    assert platform.calls == [
        ("init", {"project": "my-project", "location": "europe-west4"}),
        (
            "PipelineJob",
            {
                "display_name": "gsam-tfx",
                "template_path": vertex_template,
                "pipeline_root": ROOT,
                "parameter_values": {},
                "enable_caching": False,
            },
        ),
        ("submit", {"service_account": "runner@my-project.iam.gserviceaccount.com"}),
    ]
    assert log[-1] == "job state: PIPELINE_STATE_SUCCEEDED"


def test_a_failed_vertex_job_is_an_error(vertex_template):
    platform = RecordingAiplatform(states=["PIPELINE_STATE_FAILED"])
    with pytest.raises(RuntimeError, match="ended PIPELINE_STATE_FAILED"):
        submit.submit_to_vertex(
            vertex_template,
            project="my-project",
            region="us-central1",
            pipeline_root=ROOT,
            display_name="x",
            wait=True,
            poll_seconds=0,
            aiplatform=platform,
            log=lambda message: None,
        )


@pytest.mark.parametrize(
    "arguments, message",
    [
        (dict(project="My_Project"), "--project must be a Google Cloud project ID"),
        (dict(project=""), "--project must be a Google Cloud project ID"),
        (dict(region="us central"), "--region must be a Vertex AI region"),
        (dict(service_account="runner"), "--service-account must be an email"),
        (dict(parameter_values={"data_root": "gs://x"}), "--parameter data_root: not declared by"),
    ],
)
def test_bad_submission_values_fail_before_any_call(vertex_template, arguments, message):
    platform = RecordingAiplatform()
    values = (
        dict(
            project="my-project",
            region="us-central1",
            pipeline_root=ROOT,
            display_name="x",
            aiplatform=platform,
        )
        | arguments
    )
    with pytest.raises(ValueError, match=message):
        submit.submit_to_vertex(vertex_template, **values)
    assert platform.calls == []


def test_parameters_are_checked_against_the_template(tmp_path):
    template = tmp_path / "declared.json"
    template.write_text(
        json.dumps(
            {
                "pipelineSpec": {
                    "root": {
                        "inputDefinitions": {
                            "parameters": {"data_root": {"parameterType": "STRING"}}
                        }
                    }
                }
            }
        )
    )
    submit.check_parameters(str(template), {"data_root": "gs://bucket/data"})
    with pytest.raises(ValueError, match=r"--parameter epochs: .* \(declared: data_root\)"):
        submit.check_parameters(str(template), {"epochs": "3"})
    assert submit.parse_parameters(["a=1", "b=x=y"]) == {"a": "1", "b": "x=y"}
    with pytest.raises(ValueError, match="--parameter must be NAME=VALUE"):
        submit.parse_parameters(["novalue"])


class RecordingKfpClient:
    calls = []

    def __init__(self, host):
        self.calls.append(("Client", {"host": host}))

    def create_run_from_pipeline_package(self, package_path, **kwargs):
        self.calls.append(("create_run_from_pipeline_package", {"package": package_path, **kwargs}))
        return type("Run", (), {"run_id": "run-1"})

    def wait_for_run_completion(self, run_id, timeout):
        self.calls.append(("wait_for_run_completion", {"run_id": run_id}))
        return type("Result", (), {"state": "SUCCEEDED"})


def test_kubeflow_submission_sends_host_package_and_root(tmp_path):
    package = tmp_path / "pipeline.yaml"
    kubeflow_runner.main(["--output-file", str(package), *COMMON_FLAGS])
    RecordingKfpClient.calls = []
    submit.submit_to_kubeflow(
        str(package),
        host="http://localhost:8080",
        run_name="gsam-tfx",
        pipeline_root=ROOT,
        experiment_name="exp",
        wait=True,
        kfp_client=RecordingKfpClient,
        log=lambda message: None,
    )
    assert RecordingKfpClient.calls == [
        ("Client", {"host": "http://localhost:8080"}),
        (
            "create_run_from_pipeline_package",
            {
                "package": str(package),
                "arguments": {},
                "run_name": "gsam-tfx",
                "experiment_name": "exp",
                "pipeline_root": ROOT,
            },
        ),
        ("wait_for_run_completion", {"run_id": "run-1"}),
    ]
    RecordingKfpClient.calls = []
    with pytest.raises(ValueError, match="--host must be the Kubeflow Pipelines URL"):
        submit.submit_to_kubeflow(
            str(package),
            host="localhost:8080",
            run_name="x",
            pipeline_root=ROOT,
            kfp_client=RecordingKfpClient,
        )
    assert RecordingKfpClient.calls == []
