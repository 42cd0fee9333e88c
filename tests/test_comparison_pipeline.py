"""The comparison variant of the pipeline: its DAG, its compiled forms, and a local run."""

import functools
import glob
import json
import math
import os
import re
from pathlib import Path

import pytest
import yaml
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2
from tfx import v1 as tfx

from components.comparison.rendering import MEASURES_TITLE, POWER_TITLE
from components.comparison.report import input_key
from components.sharpness.probe import ProbeSettings
from pipelines import configs, kubeflow_runner, vertex_runner
from pipelines.flags import settings as flag_settings
from pipelines.local import run_here, summary
from pipelines.local.layout import OutputLayout
from pipelines.stages.comparison import ComparisonSpec
from tests.pipeline_support import (
    SMALL_PROBE,
    TRAINING,
    build_pipeline,
    compiled_tasks,
    constant,
    executed_nodes,
    versions,
)
from trainer.config import TrainingConfig
from trainer.search_space import SearchSpace

IMAGE = "us-docker.pkg.dev/my-project/gsam/gsam-tfx:1"
ROOT = "gs://my-bucket/gsam-tfx"
RUNS = [f"{method}.seed{seed}" for method in ("plain", "sam", "gsam") for seed in (1, 2)]
SHARPNESS_COLUMNS = [
    "top Hessian eigenvalue",
    "Hessian trace",
    "perturbed loss increase",
    "worst-case loss increase",
]


def build(tmp_path, spec, **overrides):
    return build_pipeline(tmp_path, pipeline_name="compare", comparison=spec, **overrides)


def test_every_run_trains_independently_on_the_same_noisy_examples(tmp_path):
    dag = build(tmp_path, ComparisonSpec(seeds=2, label_noise=0.3, label_noise_seed=7))
    nodes = {node.id: node for node in dag.components}
    trainers = {node_id for node_id in nodes if node_id.startswith("Trainer.")}
    assert trainers == {f"Trainer.{run}" for run in RUNS}
    for run in RUNS:
        upstream = {node.id for node in nodes[f"Trainer.{run}"].upstream_nodes}
        assert upstream == {"LabelNoise", "ValidationGate"}, run
        config = TrainingConfig.from_custom_config(
            json.loads(nodes[f"Trainer.{run}"].exec_properties["custom_config"])
        )
        method, seed = run.split(".seed")
        assert (config.optimizer, config.seed) == (method, int(seed))
        evaluator = {node.id for node in nodes[f"Evaluator.{run}"].upstream_nodes}
        assert evaluator == {"ImportExampleGen", f"Trainer.{run}"}
    assert nodes["LabelNoise"].exec_properties["noise_rate"] == 0.3
    report_inputs = {node.id for node in nodes["ComparisonReport"].upstream_nodes}
    assert report_inputs == {f"{kind}.{run}" for kind in ("Trainer", "Evaluator") for run in RUNS}
    assert not [node_id for node_id in nodes if node_id.startswith("SharpnessProbe")]
    assert "sharpness" not in json.loads(nodes["ComparisonReport"].exec_properties["settings"])
    # The winner goes through the same release stage as a single model.
    assert {node.id for node in nodes["Evaluator"].upstream_nodes} == {
        "ImportExampleGen",
        "ComparisonReport",
        "latest_blessed_model_resolver",
    }
    assert {node.id for node in nodes["Pusher"].upstream_nodes} == {"ComparisonReport", "Evaluator"}


def test_with_sharpness_every_run_is_probed_for_the_report_and_only_the_release_gates(tmp_path):
    settings = ProbeSettings(max_top_eigenvalue=50.0, max_examples=64)
    dag = build(tmp_path, ComparisonSpec(seeds=2, label_noise=0.3), sharpness=settings)
    nodes = {node.id: node for node in dag.components}
    report = nodes["ComparisonReport"]
    for run in RUNS:
        probe = nodes[f"SharpnessProbe.{run}"]
        upstream = {node.id for node in probe.upstream_nodes}
        # The clean examples: label noise leaves the eval split the probe reads unchanged.
        assert upstream == {f"Trainer.{run}", "ImportExampleGen"}, run
        assert probe.exec_properties.get("max_top_eigenvalue") is None
        assert json.loads(probe.exec_properties["measure_settings"])["max_examples"] == 64
        method, seed = run.split(".seed")
        config = TrainingConfig.from_dict(json.loads(probe.exec_properties["training_config"]))
        assert (config.optimizer, config.seed) == (method, int(seed))
        assert report.inputs[input_key("sharpness", method, int(seed))] is (
            probe.outputs["sharpness"]
        )
    assert {node.id for node in report.upstream_nodes} == {
        f"{kind}.{run}" for kind in ("Trainer", "Evaluator", "SharpnessProbe") for run in RUNS
    }
    reported = json.loads(report.exec_properties["settings"])["sharpness"]
    assert reported == {"split": "eval", **settings.measure_arguments()}
    # The winner's release probe keeps the limit and feeds the Pusher.
    release = nodes["SharpnessProbe"]
    assert release.exec_properties["max_top_eigenvalue"] == 50.0
    assert {node.id for node in release.upstream_nodes} >= {"ComparisonReport", "Evaluator"}
    assert {node.id for node in nodes["Pusher"].upstream_nodes} == {
        "ComparisonReport",
        "SharpnessProbe",
    }


@pytest.mark.parametrize(
    "runner, output_file",
    [(vertex_runner, "pipeline.json"), (kubeflow_runner, "pipeline.yaml")],
    ids=["vertex", "kubeflow"],
)
def test_with_sharpness_the_probes_compile_and_feed_the_report(runner, output_file, tmp_path):
    output = tmp_path / output_file
    flags = ["--image", IMAGE, "--pipeline-root", ROOT, "--compare", "--seeds", "1"]
    runner.main(["--output-file", str(output), *flags, "--methods", "plain,gsam", "--sharpness"])
    tasks = compiled_tasks(output)
    # The report, not the task that shows it in the console (ComparisonReport.view, on
    # Kubeflow ComparisonReport-view).
    [report] = [
        n for n in tasks if n.startswith("ComparisonReport") and not n.endswith((".view", "-view"))
    ]
    artifacts = tasks[report].inputs.artifacts
    for method in ("plain", "gsam"):
        probe = artifacts[input_key("sharpness", method, 1)].task_output_artifact.producer_task
        model = artifacts[input_key("model", method, 1)].task_output_artifact.producer_task
        assert probe.startswith("SharpnessProbe") and method in probe, probe
        assert tasks[probe].inputs.artifacts["model"].task_output_artifact.producer_task == model
        assert set(tasks[probe].inputs.artifacts) == {"model", "examples"}


def test_without_label_noise_the_trainers_read_the_examples():
    dag = build(Path("/tmp"), ComparisonSpec(methods=("plain", "gsam"), seeds=1))
    nodes = {node.id: node for node in dag.components}
    assert "LabelNoise" not in nodes
    upstream = {node.id for node in nodes["Trainer.gsam.seed1"].upstream_nodes}
    assert upstream == {"ImportExampleGen", "ValidationGate"}


def test_with_tuning_each_method_is_tuned_once_and_every_seed_trains_with_it(tmp_path):
    methods = ("plain", "sam", "gsam", "gsam-k5")
    dag = build(
        tmp_path, ComparisonSpec(methods=methods, seeds=2), tuning=SearchSpace(max_trials=2)
    )
    nodes = {node.id: node for node in dag.components}
    assert {n for n in nodes if n.startswith("Tuner")} == {f"Tuner.{m}" for m in methods}
    for method in methods:
        tuner = nodes[f"Tuner.{method}"]
        custom_config = json.loads(tuner.exec_properties["custom_config"])
        # The trials start from the method's own config and never choose another method.
        assert custom_config["tuning"]["method_choices"] == []
        assert TrainingConfig.from_custom_config(custom_config).method == method
        for seed in (1, 2):
            upstream = {node.id for node in nodes[f"Trainer.{method}.seed{seed}"].upstream_nodes}
            assert f"Tuner.{method}" in upstream


def test_a_method_search_is_refused_in_a_comparison(tmp_path):
    refused = "method_choices and perturb_every_choices cannot be searched in a comparison"
    searches = (SearchSpace(method_choices=("sam",)), SearchSpace(perturb_every_choices=(5,)))
    for space in searches:
        with pytest.raises(ValueError, match=refused):
            build(tmp_path, ComparisonSpec(), tuning=space)


def test_compiles_for_kubeflow_with_independent_trainers(tmp_path):
    output = tmp_path / "pipeline.yaml"
    flags = ["--image", IMAGE, "--pipeline-root", ROOT, "--compare", "--seeds", "2"]
    flags += ["--label-noise", "0.2", "--target-difference", "0.005"]
    kubeflow_runner.main(["--output-file", str(output), *flags])
    [document] = yaml.safe_load_all(output.read_text())
    spec = json_format.ParseDict(document, pipeline_spec_pb2.PipelineSpec())
    check_independent_trainers(spec)
    report = spec.root.dag.tasks["ComparisonReport"].inputs.parameters
    assert constant(report["target_difference"]) == 0.005
    assert json.loads(constant(report["settings"]))[
        "target_difference"
    ] == 0.005


def test_a_bad_target_difference_names_its_flag(tmp_path, capsys):
    flags = ["--image", IMAGE, "--pipeline-root", ROOT, "--compare", "--target-difference", "1"]
    with pytest.raises(SystemExit):
        kubeflow_runner.main(["--output-file", str(tmp_path / "pipeline.yaml"), *flags])
    assert "(flag: --target-difference)" in capsys.readouterr().err


def test_a_lookahead_method_compiles_beside_exact_gsam(tmp_path):
    output = tmp_path / "pipeline.json"
    flags = ["--image", IMAGE, "--pipeline-root", ROOT, "--compare", "--seeds", "1"]
    vertex_runner.main(["--output-file", str(output), *flags, "--methods", "gsam,gsam-k5"])
    document = json.loads(output.read_text())
    spec = json_format.ParseDict(document["pipelineSpec"], pipeline_spec_pb2.PipelineSpec())
    [trainer] = [name for name in spec.root.dag.tasks if "k5" in name and "rainer" in name]
    custom = spec.root.dag.tasks[trainer].inputs.parameters["custom_config"]
    config = TrainingConfig.from_custom_config(
        json.loads(custom.runtime_value.constant_value.string_value)
    )
    assert (config.optimizer, config.perturb_every) == ("gsam", 5)


def test_compiles_for_vertex_with_independent_trainers(tmp_path):
    output = tmp_path / "pipeline.json"
    flags = ["--image", IMAGE, "--pipeline-root", ROOT, "--compare", "--seeds", "2"]
    vertex_runner.main(["--output-file", str(output), *flags, "--budget", "equal-compute"])
    document = json.loads(output.read_text())
    json_format.ParseDict(document, pipeline_spec_pb2.PipelineJob())
    spec = json_format.ParseDict(document["pipelineSpec"], pipeline_spec_pb2.PipelineSpec())
    check_independent_trainers(spec)
    epochs = {}
    for name, task in spec.root.dag.tasks.items():
        if name.startswith("Trainer"):
            custom = task.inputs.parameters["custom_config"].runtime_value.constant_value
            epochs[name] = TrainingConfig.from_custom_config(json.loads(custom.string_value)).epochs
    assert {e for name, e in epochs.items() if "plain" in name} == {2 * configs.TRAINING.epochs}
    assert {e for name, e in epochs.items() if "plain" not in name} == {configs.TRAINING.epochs}


def check_independent_trainers(spec):
    tasks = spec.root.dag.tasks
    trainers = sorted(name for name in tasks if name.startswith("Trainer"))
    assert len(trainers) == 6, trainers
    for name in trainers:
        assert not set(tasks[name].dependent_tasks) & set(trainers), name
    assert any(name.startswith("ComparisonReport") for name in tasks)


def test_a_local_comparison_reports_both_methods_their_sharpness_and_pushes_the_winner(
    sample, tmp_path, capsys, monkeypatch
):
    # --sharpness with the probe's settings made small: the defaults take about a minute here.
    monkeypatch.setattr(
        flag_settings, "ProbeSettings", functools.partial(ProbeSettings, **SMALL_PROBE)
    )
    layout = OutputLayout(str(tmp_path / "out"))
    status = run_here.run(
        tfx.orchestration.LocalDagRunner(),
        "test",
        [
            "--data-root",
            str(sample),
            "--schema",
            configs.SCHEMA_PATH,
            "--output-dir",
            layout.output_dir,
            "--pipeline-name",
            "compare-e2e",
            "--compare",
            "--methods",
            "plain,gsam",
            "--seeds",
            "1",
            "--label-noise",
            "0.2",
            "--epochs",
            "1",
            "--batch-size",
            "32",
            "--train-steps-per-epoch",
            str(TRAINING.train_steps_per_epoch),
            "--accuracy-threshold",
            "0",
            "--sharpness",
        ],
    )
    assert status == 0
    printed = capsys.readouterr().out
    assert "plain" in printed and "gsam" in printed
    run = summary.latest_run(layout.metadata_path, "compare-e2e")
    assert run.comparison is not None
    report_dir = os.path.dirname(run.comparison.report_path)
    markdown = open(os.path.join(report_dir, "report.md")).read()
    assert "plain" in markdown and "gsam" in markdown
    # Every run's model was probed; the report and the terminal show the measures per method.
    with open(os.path.join(report_dir, "results.json")) as file:
        results = json.load(file)
    for method in results["methods"]:
        measures = method["extra_metrics"]
        assert list(measures) == SHARPNESS_COLUMNS, method["method"]
        assert all(math.isfinite(measures[name]["mean"]) for name in SHARPNESS_COLUMNS)
    assert measures["top Hessian eigenvalue"]["mean"] > 0
    assert f"## {MEASURES_TITLE}" in markdown and MEASURES_TITLE in printed
    # One seed per method: what the seeds can tell apart is printed and reported, as nothing.
    one_seed = "no detectable difference can be computed: one seed has no spread."
    assert POWER_TITLE in printed and one_seed in printed
    assert f"### {POWER_TITLE}" in markdown and one_seed in markdown
    assert results["methods"][1]["gain"]["power"]["detectable_difference"] is None
    for node in ("SharpnessProbe.plain.seed1", "SharpnessProbe.gsam.seed1", "SharpnessProbe"):
        line = rf"^  done   {re.escape(node)} +\d+\.\d s  top eigenvalue \S+, surrogate gap \S+$"
        assert re.search(line, printed, re.MULTILINE), node
    header = f"| method | {' | '.join(SHARPNESS_COLUMNS)} |"
    assert header in markdown
    # The run summary's sharpness is the release probe's, on the winner, not a run's.
    assert os.path.basename(os.path.dirname(os.path.dirname(run.sharpness["uri"]))) == (
        "SharpnessProbe"
    )
    assert run.blessed is True
    [version] = versions(layout)
    assert run.pushed_model == os.path.join(layout.serving_model_dir, version)
    assert run.comparison.winner in ("plain", "gsam")
    winner = f"Trainer.{run.comparison.winner}.seed{run.comparison.winner_seed}"
    [trained] = glob.glob(os.path.join(layout.pipeline_root, winner, "model", "*", "Format-Serving"))
    pushed = os.path.join(layout.serving_model_dir, version)
    variables = os.path.join("variables", "variables.data-00000-of-00001")
    with open(os.path.join(trained, variables), "rb") as a, open(os.path.join(pushed, variables), "rb") as b:
        assert a.read() == b.read()
    done = executed_nodes(layout)
    assert {"LabelNoise", "Trainer.plain.seed1", "Trainer.gsam.seed1", "ComparisonReport"} <= done
    assert {"SharpnessProbe.plain.seed1", "SharpnessProbe.gsam.seed1", "SharpnessProbe"} <= done
