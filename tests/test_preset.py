"""`--preset keras-gsam`: the notebook's protocol as flag defaults (explicit flags win), its
compiled form for Vertex AI and Kubeflow, and a small local run of it."""

import json
import os

import pytest
from tfx import v1 as tfx

from pipelines import configs, kubeflow_runner, vertex_runner
from pipelines.flags import settings
from pipelines.local import run_here, summary
from pipelines.local.layout import OutputLayout
from tests import pipeline_support
from tests.pipeline_support import compiled_tasks, executed_nodes, node_outputs
from trainer.config import TrainingConfig
from trainer.training import history

IMAGE = "us-docker.pkg.dev/my-project/gsam/gsam-tfx:1"
ROOT = "gs://my-bucket/gsam-tfx"


def parse(*flags):
    parser = run_here.local_parser("test")
    return parser.parse_args(list(flags))


def test_the_preset_sets_the_notebooks_protocol_and_explicit_flags_win():
    args = parse("--preset", "keras-gsam")
    assert args.compare and args.budget == "equal-compute" and args.seeds == 3
    assert args.validation_split == 0.1
    config = settings.training_config(args, "tfrecord")
    assert config.augment == ("crop", "brightness")
    assert (config.base_optimizer, config.learning_rate, config.warmup_epochs) == ("adam", 1e-3, 0)
    assert (config.lr_schedule, config.plateau_factor, config.plateau_patience) == (
        "plateau",
        0.5,
        3,
    )
    assert (config.min_learning_rate, config.early_stopping) == (0.0, 10)
    assert (config.rho_max, config.rho_min, config.alpha, config.epochs) == (0.05, 0.05, 0.005, 100)
    spec = settings.comparison_spec(args)
    epochs = {run: c.epochs for run, c in spec.training_configs(config).items()}
    assert epochs[("plain", 1)] == 200 and epochs[("gsam", 1)] == epochs[("sam", 1)] == 100
    # Flags given explicitly win, before or after the preset.
    args = parse("--epochs", "4", "--preset", "keras-gsam", "--seeds", "1", "--augment", "flip")
    config = settings.training_config(args, "tfrecord")
    assert (config.epochs, args.seeds, config.augment) == (4, 1, ("flip",))
    assert config.early_stopping == 10
    # Without the preset, the defaults are the project's.
    assert settings.training_config(parse(), "tfrecord").lr_schedule == configs.TRAINING.lr_schedule


def test_an_unknown_preset_or_bad_value_names_the_flag(capsys, tmp_path):
    with pytest.raises(SystemExit):
        parse("--preset", "keras")
    assert "--preset: invalid choice: 'keras'" in capsys.readouterr().err
    parser = run_here.local_parser("test")
    flags = ["--preset", "keras-gsam", "--plateau-factor", "2", "--output-dir", str(tmp_path)]
    args = parser.parse_args(flags)
    with pytest.raises(SystemExit):
        run_here.build_local(args, parser)
    assert "plateau_factor must be < 1, got 2.0. (flag: --plateau-factor)" in (
        capsys.readouterr().err
    )


def constant(task, name):
    return pipeline_support.constant(task.inputs.parameters[name])


@pytest.mark.parametrize(
    "runner, output_file",
    [(vertex_runner, "pipeline.json"), (kubeflow_runner, "pipeline.yaml")],
    ids=["vertex", "kubeflow"],
)
def test_the_preset_compiles_with_a_held_out_validation_split(runner, output_file, tmp_path):
    output = tmp_path / output_file
    flags = ["--image", IMAGE, "--pipeline-root", ROOT, "--preset", "keras-gsam", "--seeds", "1"]
    runner.main(["--output-file", str(output), *flags])
    tasks = compiled_tasks(output)
    [split] = [name for name in tasks if name.startswith("ValidationSplit")]
    trainers = sorted(name for name in tasks if name.startswith("Trainer"))
    assert len(trainers) == 3
    for name in trainers:
        task = tasks[name]
        assert task.inputs.artifacts["examples"].task_output_artifact.producer_task == split
        assert json.loads(constant(task, "train_args")) == {"splits": ["train"]}
        assert json.loads(constant(task, "eval_args")) == {"splits": ["validation"]}
        config = TrainingConfig.from_custom_config(json.loads(constant(task, "custom_config")))
        assert (config.lr_schedule, config.early_stopping) == ("plateau", 10)
        assert config.augment == ("crop", "brightness")
        assert config.epochs == (200 if "plain" in name else 100)
    for name in (name for name in tasks if name.startswith("Evaluator")):
        producer = tasks[name].inputs.artifacts["examples"].task_output_artifact.producer_task
        assert producer.startswith("ImportExampleGen"), name


def test_a_small_preset_comparison_runs_locally(sample, tmp_path, capsys):
    layout = OutputLayout(str(tmp_path / "out"))
    status = run_here.run(
        tfx.orchestration.LocalDagRunner(),
        "test",
        [
            "--data-root", str(sample), "--schema", configs.SCHEMA_PATH,
            "--output-dir", layout.output_dir, "--pipeline-name", "preset",
            "--preset", "keras-gsam", "--methods", "plain,gsam", "--seeds", "1",
            "--epochs", "2", "--budget", "equal-epochs", "--validation-split", "0.25",
            "--batch-size", "16", "--train-steps-per-epoch", "2", "--input-size", "14x14",
            "--accuracy-threshold", "0",
        ],
    )  # fmt: skip
    assert status == 0
    assert {"ValidationSplit", "Trainer.plain.seed1", "Trainer.gsam.seed1"} <= executed_nodes(
        layout
    )
    [split] = node_outputs(layout, "ValidationSplit", "split_examples")
    held_out = split.get_int_custom_property("validation_examples")
    assert 0 < held_out < 96 and held_out + split.get_int_custom_property("train_examples") == 96
    for method in ("plain", "gsam"):
        [run_dir] = node_outputs(layout, f"Trainer.{method}.seed1", "model_run")
        document = history.read_history(os.path.join(run_dir.uri, history.HISTORY_FILE))
        assert [record["epoch"] for record in document["epochs"]] == [1, 2]
        assert document["early_stopping"]["best_epoch"] in (1, 2)
    run = summary.latest_run(layout.metadata_path, "preset")
    report = open(os.path.join(os.path.dirname(run.comparison.report_path), "report.md")).read()
    assert "on 'validation', 25% of the train split held out" in report
    assert "every method stops early after 10 epochs without a lower val_loss" in report


def test_the_training_practice_flags_compile_for_vertex_into_the_trainers_config(tmp_path):
    output = tmp_path / "pipeline.json"
    practice = [
        "--augment", "crop,flip,brightness", "--early-stopping", "4", "--lr-schedule", "plateau",
        "--class-weights", "balanced", "--label-smoothing", "0.1", "--weight-decay", "0.0001",
    ]  # fmt: skip
    vertex_runner.main(
        ["--output-file", str(output), "--image", IMAGE, "--pipeline-root", ROOT, *practice]
    )
    trainer = compiled_tasks(output)["Trainer"]
    config = TrainingConfig.from_custom_config(json.loads(constant(trainer, "custom_config")))
    assert config.augment == ("crop", "flip", "brightness")
    assert (config.early_stopping, config.lr_schedule) == (4, "plateau")
    assert (config.class_weights, config.label_smoothing, config.weight_decay) == (
        "balanced",
        0.1,
        0.0001,
    )
