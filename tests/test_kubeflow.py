"""Kubeflow Pipelines without Docker: the compiled YAML against the open-source backend's
compiler rules, the image's entrypoint on the executor input KFP sends, the PushedBaseline
component, and --run-local's checks and console lines.

tests/test_kubeflow_local.py runs the YAML end to end with kfp.local's DockerRunner."""

import copy
import io
import json
import re
from pathlib import Path

import pytest
import tensorflow as tf
import yaml
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2
from tfx.orchestration.kubeflow.v2.container import kubeflow_v2_entrypoint_utils
from tfx.types import standard_artifacts

from components.release import pushed_baseline
from components.sharpness.probe import ProbeSettings
from pipelines import kubeflow_runner
from pipelines.cloud import kfp_entrypoint, kfp_local, kubeflow_spec
from pipelines.stages.release import ReleaseSettings
from tests.test_cloud import COMMON_FLAGS, ROOT

# Argo's workflowFieldNameFmt (argoproj/argo-workflows), which the backend's task names meet.
ARGO_NAME = re.compile(r"^[a-zA-Z0-9][-a-zA-Z0-9]*$")
EXAMPLES_SCHEMA = "title: tfx.Examples\ntype: object\n"
REPORT_VIEW_MODULE = "components.vertex.report_view"


def compiled(tmp_path, *flags) -> dict:
    output = tmp_path / "pipeline.yaml"
    kubeflow_runner.main(["--output-file", str(output), *COMMON_FLAGS, *flags])
    [document] = yaml.safe_load_all(output.read_text())
    json_format.ParseDict(document, pipeline_spec_pb2.PipelineSpec())  # strictly: no stray key
    return document


@pytest.mark.parametrize(
    "flags",
    [[], ["--compare", "--seeds", "2", "--methods", "plain,gsam", "--sharpness"]],
    ids=["default", "comparison-with-sharpness"],
)
def test_the_yaml_holds_only_container_and_importer_executors_and_argo_names(tmp_path, flags):
    spec = compiled(tmp_path, *flags)
    assert spec["schemaVersion"] == "2.1.0"
    assert "resolver" not in json.dumps(spec)
    executors = spec["deploymentSpec"]["executors"]
    assert {kind for executor in executors.values() for kind in executor} == {"container"}
    commands = {
        name: tuple(executor["container"]["command"]) for name, executor in executors.items()
    }
    # TFX's components run through the patched entrypoint; the report views (kfp container
    # components with Markdown and HTML outputs, pipelines/cloud/report_views.py) run alone.
    views = {name for name, command in commands.items() if command[-1] == REPORT_VIEW_MODULE}
    assert {commands[name] for name in set(commands) - views} == {
        ("python", "-m", kubeflow_spec.ENTRYPOINT_MODULE)
    }
    assert len(views) == (2 if "--sharpness" in flags and "--compare" in flags else 0)
    tasks = spec["root"]["dag"]["tasks"]
    for name, task in tasks.items():
        assert ARGO_NAME.match(name) and len(name + "-driver") <= 128, name
        assert task["componentRef"]["name"] == f"comp-{name}"
        assert task["taskInfo"]["name"] == name
        assert spec["components"][f"comp-{name}"]["executorLabel"] in executors
        assert set(task.get("dependentTasks", [])) <= set(tasks)
        for source in task.get("inputs", {}).get("artifacts", {}).values():
            assert source["taskOutputArtifact"]["producerTask"] in tasks
    kubeflow_spec.check_accepted(spec)


def test_the_evaluator_baseline_comes_from_the_push_destination(tmp_path):
    tasks = compiled(tmp_path)["root"]["dag"]["tasks"]
    baseline = tasks["PushedBaseline"]
    assert baseline["inputs"]["artifacts"]["candidate"]["taskOutputArtifact"] == {
        "producerTask": "Trainer",
        "outputArtifactKey": "model",
    }
    assert baseline["inputs"]["parameters"]["serving_model_dir"]["runtimeValue"] == {
        "constant": f"{ROOT}/serving"
    }
    evaluator = tasks["Evaluator"]["inputs"]["artifacts"]["baseline_model"]
    assert evaluator["taskOutputArtifact"]["producerTask"] == "PushedBaseline"


def test_what_the_backend_refuses_is_named():
    spec = {
        "pipelineInfo": {"name": "gsam-tfx"},
        "components": {"comp-a": {"executorLabel": "a"}},
        "deploymentSpec": {"executors": {"a": {"container": {}}}},
        "root": {"dag": {"tasks": {"a": {"componentRef": {"name": "comp-a"}}}}},
    }
    kubeflow_spec.check_accepted(spec)
    with_resolver = copy.deepcopy(spec)
    with_resolver["deploymentSpec"]["executors"]["a"] = {"resolver": {}}
    with pytest.raises(ValueError, match="a is a resolver executor: the open-source"):
        kubeflow_spec.check_accepted(with_resolver)
    dotted = copy.deepcopy(spec)
    dotted["root"]["dag"]["tasks"]["Trainer.gsam"] = dotted["root"]["dag"]["tasks"].pop("a")
    with pytest.raises(ValueError, match="task 'Trainer.gsam': Argo takes task names"):
        kubeflow_spec.check_accepted(dotted)
    named = copy.deepcopy(spec)
    named["pipelineInfo"]["name"] = "GSAM_tfx"
    with pytest.raises(ValueError, match="the pipeline name 'GSAM_tfx' cannot name"):
        kubeflow_spec.check_accepted(named)


def test_adapt_renames_tasks_and_every_reference_and_refuses_clashes():
    spec = {
        "components": {"A.b": {"executorLabel": "x"}, "A_b": {"executorLabel": "x"}},
        "deploymentSpec": {"executors": {"x": {"container": {"command": ["sh"]}}}},
        "root": {
            "dag": {
                "tasks": {
                    "A.b": {"componentRef": {"name": "A.b"}, "taskInfo": {"name": "A.b"}},
                    "c": {
                        "componentRef": {"name": "A.b"},
                        "dependentTasks": ["A.b"],
                        "inputs": {
                            "artifacts": {"m": {"taskOutputArtifact": {"producerTask": "A.b"}}}
                        },
                    },
                }
            }
        },
    }
    adapted = kubeflow_spec.adapt(spec)
    tasks = adapted["root"]["dag"]["tasks"]
    assert set(tasks) == {"A-b", "c"}
    assert tasks["c"]["dependentTasks"] == ["A-b"]
    assert tasks["c"]["inputs"]["artifacts"]["m"]["taskOutputArtifact"]["producerTask"] == "A-b"
    assert set(adapted["components"]) == {"comp-A-b", "comp-c"}
    assert adapted["deploymentSpec"] == spec["deploymentSpec"]  # not TFX's command: kept
    spec["root"]["dag"]["tasks"]["A_b"] = {"componentRef": {"name": "A_b"}}
    with pytest.raises(ValueError, match="task names clash once made Argo-valid: A-b"):
        kubeflow_spec.adapt(spec)


# The image's entrypoint.


def examples_input(artifact_type: dict | None, metadata=None) -> pipeline_spec_pb2.ExecutorInput:
    artifact = {"name": "examples-1", "uri": "/root/ImportExampleGen/examples"}
    if artifact_type is not None:
        artifact["type"] = artifact_type
    artifact["metadata"] = metadata or {"split_names": '["train", "eval"]', "span": 0.0}
    return json_format.ParseDict(
        {"inputs": {"artifacts": {"examples": {"artifacts": [artifact]}}}},
        pipeline_spec_pb2.ExecutorInput(),
    )


INPUTS_SPEC = json_format.ParseDict(
    {"artifacts": {"examples": {"artifactType": {"instanceSchema": EXAMPLES_SCHEMA}}}},
    pipeline_spec_pb2.ComponentInputsSpec(),
)


def parse_inputs(executor_input):
    return kubeflow_v2_entrypoint_utils.parse_raw_artifact_dict(executor_input.inputs.artifacts)


@pytest.mark.parametrize(
    "artifact_type, tfx_error",
    [
        ({"schemaTitle": "system.Artifact"}, "Could not import system.Artifact"),  # kfp.local
        ({"instanceSchema": ""}, "'NoneType' object has no attribute 'get'"),  # KFP driver
        (None, "cannot access local variable 'title'"),  # KFP driver, untyped
    ],
    ids=["system-title", "empty-instance-schema", "untyped"],
)
def test_the_entrypoint_gives_inputs_the_declared_type(artifact_type, tfx_error):
    with pytest.raises(Exception, match=re.escape(tfx_error)):
        parse_inputs(examples_input(artifact_type))  # what TFX alone does
    fixed = examples_input(artifact_type)
    changes = kfp_entrypoint.fix_executor_input(fixed, INPUTS_SPEC)
    assert len(changes) == 1 and "read as declared" in changes[0]
    [examples] = parse_inputs(fixed)["examples"]
    assert isinstance(examples, standard_artifacts.Examples)
    assert examples.split_names == '["train", "eval"]'
    assert examples.uri == "/root/ImportExampleGen/examples"


def test_the_entrypoint_leaves_tfx_types_and_undeclared_inputs_alone():
    typed = examples_input({"instanceSchema": EXAMPLES_SCHEMA})
    assert kfp_entrypoint.fix_executor_input(typed, INPUTS_SPEC) == []
    assert typed == examples_input({"instanceSchema": EXAMPLES_SCHEMA})
    undeclared = examples_input({"schemaTitle": "system.Artifact"})
    assert kfp_entrypoint.fix_executor_input(undeclared, None) == []
    assert undeclared.inputs.artifacts["examples"].artifacts[0].type.schema_title == (
        "system.Artifact"
    )


def test_the_entrypoint_leaves_out_a_model_marked_as_none():
    marked = examples_input(
        {"schemaTitle": "system.Artifact"}, {pushed_baseline.NO_MODEL_PROPERTY: 1.0}
    )
    assert kfp_entrypoint.fix_executor_input(marked, INPUTS_SPEC) == [
        "examples: /root/ImportExampleGen/examples stands for no model; left out"
    ]
    assert parse_inputs(marked) == {"examples": []}
    found = examples_input(
        {"schemaTitle": "system.Artifact"}, {pushed_baseline.NO_MODEL_PROPERTY: 0.0}
    )
    kfp_entrypoint.fix_executor_input(found, INPUTS_SPEC)
    assert len(parse_inputs(found)["examples"]) == 1


def test_the_entrypoint_flags_carry_the_fixed_executor_input():
    argv = [
        "kfp_entrypoint",
        "--executor_class_path",
        "tfx.components.statistics_gen.executor.Executor",
        "--json_serialized_invocation_args",
        json_format.MessageToJson(examples_input({"schemaTitle": "system.Artifact"})),
        "--json_serialized_inputs_spec_args",
        json_format.MessageToJson(INPUTS_SPEC),
        "--direct_running_mode=in_memory",
    ]
    args, beam_args = kfp_entrypoint.parse_flags(argv)
    fixed = json_format.Parse(
        args.json_serialized_invocation_args, pipeline_spec_pb2.ExecutorInput()
    )
    assert fixed.inputs.artifacts["examples"].artifacts[0].type.instance_schema == EXAMPLES_SCHEMA
    assert "--direct_running_mode=in_memory" in beam_args


# The PushedBaseline component.


def saved_model(path: Path, fingerprint: bytes) -> str:
    path.mkdir(parents=True)
    (path / "saved_model.pb").write_bytes(b"graph")
    (path / "fingerprint.pb").write_bytes(fingerprint)
    return str(path)


def run_baseline(tmp_path, serving: Path, candidate_fingerprint: bytes):
    candidate = standard_artifacts.Model()
    candidate.uri = str(tmp_path / "candidate")
    saved_model(tmp_path / "candidate" / "Format-Serving", candidate_fingerprint)
    output = standard_artifacts.Model()
    output.uri = str(tmp_path / "baseline")
    executor = pushed_baseline.PushedBaseline.EXECUTOR_SPEC.executor_class()
    executor.Do(
        {"candidate": [candidate]}, {"model": [output]}, {"serving_model_dir": str(serving)}
    )
    return output


def test_the_baseline_is_the_newest_pushed_version_other_than_the_candidate(tmp_path):
    serving = tmp_path / "serving"
    saved_model(serving / "100", b"first")
    saved_model(serving / "150", b"second")
    saved_model(serving / "200", b"candidate")  # a cached candidate, pushed before
    (serving / "300").mkdir()  # no SavedModel: not a model
    saved_model(serving / ".400.abc.incomplete", b"staging")
    baseline = run_baseline(tmp_path, serving, b"candidate")
    assert baseline.get_int_custom_property(pushed_baseline.NO_MODEL_PROPERTY) == 0
    assert baseline.get_string_custom_property(pushed_baseline.VERSION_PROPERTY) == "150"
    copied = Path(baseline.uri, "Format-Serving")
    assert (copied / "fingerprint.pb").read_bytes() == b"second"
    assert (copied / "saved_model.pb").read_bytes() == b"graph"


@pytest.mark.parametrize("pushed", [[], ["candidate"]], ids=["nothing-pushed", "only-candidate"])
def test_without_another_pushed_model_the_baseline_is_marked_none(tmp_path, pushed):
    serving = tmp_path / "serving"
    for index, fingerprint in enumerate(pushed):
        saved_model(serving / str(index + 1), fingerprint.encode())
    baseline = run_baseline(tmp_path, serving, b"candidate")
    assert baseline.get_int_custom_property(pushed_baseline.NO_MODEL_PROPERTY) == 1
    assert not tf.io.gfile.exists(baseline.uri)


def test_a_sharpness_increase_limit_is_refused_with_the_pushed_baseline(tmp_path):
    with pytest.raises(ValueError, match="max_sharpness_increase compares with the baseline"):
        ReleaseSettings(
            str(tmp_path),
            0.5,
            0.01,
            sharpness=ProbeSettings(max_sharpness_increase=1.0),
            baseline="latest-pushed",
        )
    with pytest.raises(SystemExit):
        compiled(tmp_path, "--sharpness", "--max-sharpness-increase", "1")


# --run-local.


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--run-local"], "--pipeline-root must be a local folder with --run-local"),
        (["--run-local", "--submit"], "--run-local runs here: it does not go with --submit"),
        (["--pipeline-name", "My_Pipeline"], "--pipeline-name must be lowercase letters"),
    ],
)
def test_run_local_flags_are_checked(tmp_path, capsys, flags, message):
    with pytest.raises(SystemExit):
        kubeflow_runner.main(["--output-file", str(tmp_path / "p.yaml"), *COMMON_FLAGS, *flags])
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    "flags, message",
    [
        (
            ["--serving-model-dir", "/elsewhere/serving"],
            "--serving-model-dir /elsewhere/serving must be under --pipeline-root",
        ),
        (
            ["--data-root", "/elsewhere/data", "--data-format", "tfrecord"],
            "--data-root /elsewhere/data is neither in the image (/pipeline) nor under",
        ),
    ],
)
def test_run_local_paths_must_be_mounted(tmp_path, capsys, flags, message):
    argv = ["--run-local", "--image", "gsam-tfx:x", "--pipeline-root", str(tmp_path / "root")]
    with pytest.raises(SystemExit):
        kubeflow_runner.main(["--output-file", str(tmp_path / "p.yaml"), *argv, *flags])
    assert message in capsys.readouterr().err
    assert not (tmp_path / "p.yaml").exists()


def write_output(run_dir: Path, task: str, key: str, metadata: dict) -> None:
    (run_dir / task).mkdir(parents=True)
    output = {"artifacts": {key: {"artifacts": [{"uri": "/x", "metadata": metadata}]}}}
    (run_dir / task / kfp_local.EXECUTOR_OUTPUT).write_text(json.dumps(output))


def test_task_lines_show_starts_verdicts_cache_hits_and_a_failure_tail(tmp_path):
    run_dir = tmp_path / "gsam-tfx-2026"
    write_output(run_dir, "PushedBaseline", "model", {"no_model": 0.0, "pushed_version": "17"})
    write_output(run_dir, "Evaluator", "blessing", {"blessed": 1.0, "baseline_model": "/b"})
    write_output(run_dir, "Pusher", "pushed_model", {"pushed": 1.0, "pushed_destination": "/s/9"})
    console, log = io.StringIO(), io.StringIO()
    lines = kfp_local.TaskLines(log, console, lambda: str(run_dir))

    def task(name):  # as kfp.local colours it
        return f"\x1b[96m'{name}'\x1b[0m"

    lines.write("10:00:00.000 - INFO - Task ImportExampleGen cache hit (key=abc); skipping.\n")
    for name in ("PushedBaseline", "Evaluator", "Pusher"):
        lines.write(f"10:00:01.000 - INFO - Executing task {task(name)}\n    container says hi\n")
        lines.write(f"10:00:02.000 - INFO - Task {task(name)} finished with status SUCCESS\n")
    lines.write(f"10:00:03.000 - INFO - Executing task {task('Trainer')}\n    Traceback: boom\n")
    lines.write(f"10:00:04.000 - INFO - Task {task('Trainer')} finished with status FAILURE")
    lines.close_line()
    shown = [re.sub(r" +[0-9.]+ s", " N s", line) for line in console.getvalue().splitlines()]
    assert shown == [
        "  cached ImportExampleGen",
        "  start  PushedBaseline",
        "  done   PushedBaseline N s  baseline: pushed version 17",
        "  start  Evaluator",
        "  done   Evaluator N s  blessed (against the baseline)",
        "  start  Pusher",
        "  done   Pusher N s  pushed /s/9",
        "  start  Trainer",
        "  FAILED Trainer N s",
        "    |     Traceback: boom",
    ]
    assert lines.ran == ["PushedBaseline", "Evaluator", "Pusher", "Trainer"]
    assert lines.cached == ["ImportExampleGen"]
    assert lines.failure == "task Trainer failed (FAILURE)"
    assert "container says hi" in log.getvalue()
    assert kfp_local.pushed_version(str(run_dir), lines.ran) == "/s/9"


def test_a_success_without_executor_output_is_a_failure(tmp_path):
    """kfp.local reports SUCCESS when the container was removed before it asked how it ended."""
    console = io.StringIO()
    lines = kfp_local.TaskLines(io.StringIO(), console, lambda: str(tmp_path))
    lines.write("Executing task 'Trainer'\n    Killed\n")
    lines.write("Task 'Trainer' finished with status SUCCESS\n")
    assert lines.failure == (
        "task Trainer failed (SUCCESS reported, but it wrote no executor_output.json)"
    )
    [_, failed, tail] = console.getvalue().splitlines()
    assert failed.startswith("  FAILED Trainer") and tail == "    |     Killed"
