"""Production on Vertex AI besides the push: --experiment, --schedule, --enable-cache,
--tensorboard, the console views of the reports, and the flags that fail before compiling.

Each flag is compiled offline into a strictly parsed Vertex AI JSON; the ExperimentLogger task
runs as Vertex AI starts it (tests/vertex_task.py), in this process, and submissions go to the
recording fake of google.cloud.aiplatform (tests/fake_aiplatform.py) installed where every
cloud call goes (components/vertex/client.py). Nothing reaches a cloud.
"""

import json
import os
import re

import numpy as np
import pytest
import yaml
from google.protobuf import json_format
from kfp import compiler as kfp_compiler
from kfp import dsl
from kfp.pipeline_spec import pipeline_spec_pb2
from tfx.extensions.google_cloud_ai_platform import runner as ai_platform_runner
from tfx.orchestration.kubeflow.v2.container import kubeflow_v2_entrypoint_utils
from tfx.types import standard_artifacts
from tfx.utils import import_utils

from components.sharpness.probe import SUMMARY_FILE
from components.vertex import report_view
from components.vertex.experiments import run_name
from components.vertex.training import TensorBoardTrainerExecutor
from pipelines import vertex_runner
from pipelines.cloud.report_views import add_report_views
from pipelines.cloud.schedule import ScheduleSettings
from tests import trainer_examples
from tests.vertex_support import (
    IMAGE,
    JOB_ID,
    ROOT,
    SERVICE_ACCOUNT,
    artifact,
    calls_named,
    compile_job,
    executor_class,
    task_dir,
    task_parameter,
)
from tests.vertex_task import run_in_process
from trainer.config import TrainingConfig
from trainer.training import tensorboard
from trainer.training.history import HISTORY_FILE, write_history

TENSORBOARD = "projects/my-project/locations/us-central1/tensorboards/42"


# Experiments


def test_each_trainer_of_a_comparison_is_an_experiment_run(tmp_path, cloud):
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
    plain = cloud.runs["sweep", f"{JOB_ID}-trainer-plain-seed1"]
    gsam = cloud.runs["sweep", f"{JOB_ID}-trainer-gsam-seed1"]
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
    assert cloud.names()[:6] == [
        "init", "Experiment.get_or_create", "ExperimentRun.get", "ExperimentRun.create",
        "ExperimentRun.log_params", "ExperimentRun.log_metrics",
    ]  # fmt: skip
    [runs] = output["artifacts"]["experiment_runs"]["artifacts"]
    with open(os.path.join(runs["uri"], "runs.json")) as file:
        logged = json.load(file)
    assert logged["Trainer.gsam.seed1"] == gsam.resource_name

    # A rerun of the task updates the same runs.
    cloud.calls.clear()
    run_in_process(job, "ExperimentLogger", inputs, task_dir(tmp_path, "ExperimentLogger", 2))
    assert "ExperimentRun.create" not in cloud.names()
    assert len(cloud.runs) == 2


def test_run_names_fit_vertex_limits():
    name = run_name("e" * 80, "gsam-tfx-compare-20250101120000", "Trainer.gsam-k5.seed12")
    assert name.endswith("-trainer-gsam-k5-seed12") and "20250101120000" in name
    assert len("e" * 80) + 1 + len(name) <= 121
    assert re.fullmatch(r"[a-z0-9][a-z0-9-]*", name)


# Submission: one run or a schedule, the cache and the experiment.


def test_submit_passes_the_cache_flag_and_the_experiment(tmp_path, cloud):
    compile_job(
        tmp_path, "--enable-cache", "--experiment", "sweep", "--submit",
        "--service-account", SERVICE_ACCOUNT,
    )  # fmt: skip
    assert cloud.calls == [
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


def test_the_cache_stays_off_unless_asked(tmp_path, cloud):
    job = compile_job(tmp_path, "--submit")
    [job_arguments] = calls_named(cloud, "PipelineJob")
    assert job_arguments["enable_caching"] is False
    assert calls_named(cloud, "PipelineJob.submit") == [{"service_account": None}]
    tasks = job["pipelineSpec"]["root"]["dag"]["tasks"]
    assert not any(task.get("cachingOptions", {}).get("enableCache") for task in tasks.values())


def test_a_schedule_is_created_instead_of_a_run(tmp_path, cloud, capsys):
    compile_job(
        tmp_path, "--submit", "--schedule", "CRON_TZ=Europe/Berlin 0 3 * * MON-FRI",
        "--schedule-max-runs", "30", "--service-account", SERVICE_ACCOUNT,
    )  # fmt: skip
    assert cloud.names() == ["init", "PipelineJob", "PipelineJob.create_schedule"]
    assert calls_named(cloud, "PipelineJob.create_schedule") == [
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
        (
            ["--serving-image", "europe-docker.pkg.dev/p/r/serving:1"],
            "--serving-image needs --push-to vertex-model or vertex-endpoint",
        ),
        (
            ["--project", "my-project", "--push-to", "vertex-model", "--serving-image", "tf"],
            "serving_image must be a container image",
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
def test_bad_production_flags_fail_before_compiling(argv, message, tmp_path, capsys, cloud):
    output = tmp_path / "p.json"
    with pytest.raises(SystemExit):
        vertex_runner.main(
            ["--output-file", str(output), "--image", IMAGE, "--pipeline-root", ROOT, *argv]
        )
    assert message in capsys.readouterr().err
    assert not output.exists()
    assert cloud.calls == []


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
