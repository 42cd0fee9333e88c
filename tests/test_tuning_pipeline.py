"""--tune: the Tuner in the DAG, its flags, its summary, and a whole tuned local run."""

import glob
import json
import os

import pytest
from tfx import v1 as tfx

from pipelines import configs
from pipelines.flags import settings as flag_settings
from pipelines.local import run_here, summary
from pipelines.local.layout import OutputLayout
from pipelines.stages.comparison import ComparisonSpec
from tests.pipeline_support import ALL_NODES, executed_nodes, versions
from tests.pipeline_support import build_pipeline as build
from trainer import search_space
from trainer.config import TrainingConfig
from trainer.search_space import SearchSpace
from trainer.training.history import HISTORY_FILE, read_history


def test_the_tuner_sits_between_the_gate_and_the_trainer(tmp_path):
    space = SearchSpace(max_trials=4, epochs_per_trial=1)
    nodes = {node.id: node for node in build(tmp_path, tuning=space).components}
    assert set(nodes) == ALL_NODES | {"Tuner"}
    upstream = {name: {node.id for node in nodes[name].upstream_nodes} for name in nodes}
    assert upstream["Tuner"] == {"ImportExampleGen", "ValidationGate"}
    assert upstream["Trainer"] == {"ImportExampleGen", "ValidationGate", "Tuner"}
    tuner, trainer = nodes["Tuner"], nodes["Trainer"]
    assert tuner.exec_properties["tuner_fn"] == "trainer.tuning.tuner_fn"
    custom_config = json.loads(tuner.exec_properties["custom_config"])
    assert TrainingConfig.from_custom_config(custom_config) == configs.TRAINING
    assert SearchSpace.from_custom_config(custom_config) == space
    hyperparameters = trainer.inputs["hyperparameters"]
    assert (hyperparameters.producer_component_id, hyperparameters.output_key) == (
        "Tuner",
        "best_hyperparameters",
    )


def test_without_tuning_the_trainer_takes_no_hyperparameters(tmp_path):
    nodes = {node.id: node for node in build(tmp_path).components}
    assert "Tuner" not in nodes and "hyperparameters" not in nodes["Trainer"].inputs


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(tuning={"max_trials": 3}), "tuning must be a SearchSpace"),
        (
            dict(tuning=SearchSpace(epochs_per_trial=1), training=TrainingConfig(warmup_epochs=1)),
            "epochs_per_trial (1) must be longer than the learning rate warmup",
        ),
        (dict(tuning=SearchSpace(), parallel_trials=3), "parallel_trials (3) needs tuning on"),
        (dict(tuning=SearchSpace(), parallel_trials=0), "parallel_trials must be an integer"),
        (
            dict(tuning=SearchSpace(method_choices=("sam",)), comparison=ComparisonSpec()),
            "tuning's method_choices and perturb_every_choices cannot be searched in a comparison",
        ),
    ],
)
def test_bad_tuning_arguments_are_named(tmp_path, overrides, message):
    with pytest.raises(ValueError) as error:
        build(tmp_path, **overrides)
    assert message in str(error.value)


class NeverRun:
    """A runner that fails the test if the pipeline gets as far as running."""

    def run(self, dag):
        raise AssertionError("the pipeline ran")


@pytest.mark.parametrize(
    "argv, named",
    [
        (["--tune", "--tune-rho-max", "0.5", "0.1"], "(flag: --tune-rho-max)"),
        (["--tune", "--tune-rho-max", "-0.1", "0.1"], "(flag: --tune-rho-max)"),
        (["--tune", "--tune-rho-min-fraction", "0.5", "1.5"], "(flag: --tune-rho-min-fraction)"),
        (["--tune", "--tune-alpha", "-1", "0.1"], "(flag: --tune-alpha)"),
        (["--tune", "--tune-learning-rate", "0", "0.1"], "(flag: --tune-learning-rate)"),
        (["--tune", "--tune-trials", "0"], "(flag: --tune-trials)"),
        (["--tune", "--tune-epochs", "0"], "(flag: --tune-epochs)"),
        (["--tune", "--tune-algorithm", "grid"], "argument --tune-algorithm: invalid choice"),
        (["--tune", "--tune-methods", "adam"], "argument --tune-methods: invalid choice"),
        (["--tune", "--tune-perturb-every", "5", "0"], "(flag: --tune-perturb-every)"),
        (["--tune", "--tune-perturb-budget", "0.1", "2"], "(flag: --tune-perturb-budget)"),
        (["--tune-trials", "3"], "--tune-trials needs --tune."),
        (["--tune-seed", "1", "--tune-epochs", "1"], "--tune-epochs, --tune-seed need --tune."),
    ],
)
def test_bad_search_space_flags_exit_2_naming_the_flag_before_running(
    argv, named, tmp_path, capsys
):
    with pytest.raises(SystemExit) as exit:
        run_here.run(NeverRun(), "test", ["--output-dir", str(tmp_path), *argv])
    assert exit.value.code == 2
    assert named in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "metadata.sqlite")


def test_search_space_flags_reach_the_tuner(tmp_path):
    parser = run_here.local_parser("test")
    args = parser.parse_args(
        [
            "--output-dir", str(tmp_path), "--tune", "--tune-rho-max", "0.02", "0.4",
            "--tune-methods", "sam", "gsam", "--tune-perturb-every", "1", "5",
            "--tune-algorithm", "bayesian",
            "--tune-trials", "5", "--tune-objective", "val_loss",
        ]
    )  # fmt: skip
    [tuner] = [node for node in run_here.build_local(args, parser).components if node.id == "Tuner"]
    space = SearchSpace.from_custom_config(json.loads(tuner.exec_properties["custom_config"]))
    assert space == SearchSpace(
        rho_max_range=(0.02, 0.4),
        method_choices=("sam", "gsam"),
        perturb_every_choices=(1, 5),
        algorithm="bayesian",
        max_trials=5,
        objective="val_loss",
    )


def test_the_summary_shows_the_best_values_and_the_trials_best_first():
    rows = [
        {"trial_id": "2", "score": 0.91, "method": "gsam", "learning_rate": 0.05,
         "rho_max": 0.1, "rho_min_fraction": 0.5, "alpha": 0.02},
        {"trial_id": "0", "score": 0.85, "method": "sam", "learning_rate": 0.02,
         "rho_max": 0.04, "rho_min_fraction": 1.0},
    ]  # fmt: skip
    run = summary.RunSummary(
        run_id="r", tuner_trials=[rows], seconds_per_component={"Tuner": 30, "Trainer": 10}
    )
    lines = run.render().splitlines()
    assert lines[1] == "  time:           tuning 30 s, training 10 s, other components 0 s"
    assert lines[2] == (
        "  tuned:          method gsam, rho_max 0.1, rho_min 0.05, alpha 0.02, "
        "learning_rate 0.05 (objective 0.91)"
    )
    assert lines[3] == "  trials:         2, best first"
    assert lines[4].split() == [
        "trial", "method", "rho_max", "rho_min", "alpha", "learning_rate", "objective"
    ]  # fmt: skip
    assert lines[5].split() == ["2", "gsam", "0.1", "0.05", "0.02", "0.05", "0.91"]
    assert lines[6].split() == ["0", "sam", "0.04", "0.04", "-", "0.02", "0.85"]


def test_the_trials_table_shows_perturb_every_when_it_was_searched():
    rows = [
        {"trial_id": "1", "score": 0.9, "method": "gsam", "learning_rate": 0.05,
         "rho_max": 0.1, "rho_min_fraction": 1.0, "alpha": 0.02, "perturb_every": 5},
    ]  # fmt: skip
    lines = summary.RunSummary(run_id="r", tuner_trials=[rows]).render().splitlines()
    [header] = [line for line in lines if line.split()[:1] == ["trial"]]
    assert header.split()[-2:] == ["perturb_every", "objective"]
    assert "perturb_every 5 (objective 0.9)" in "\n".join(lines)


def test_a_tuned_local_run_trains_with_the_best_values(sample, tmp_path, capsys):
    """2 trials of 1 epoch; rho and alpha ranges exclude the flag defaults."""
    output_dir = tmp_path / "out"
    status = run_here.run(
        tfx.orchestration.LocalDagRunner(),
        "test",
        [
            "--data-root", str(sample), "--schema", configs.SCHEMA_PATH,
            "--output-dir", str(output_dir), "--pipeline-name", "tune-e2e",
            "--epochs", "1", "--batch-size", "32", "--train-steps-per-epoch", "2",
            "--accuracy-threshold", "0",
            "--tune", "--tune-trials", "2", "--tune-epochs", "1", "--tune-seed", "7",
            "--tune-rho-max", "0.1", "0.3", "--tune-alpha", "0.05", "0.2",
        ],
    )  # fmt: skip
    assert status == 0
    layout = OutputLayout(str(output_dir))
    assert executed_nodes(layout) == ALL_NODES | {"Tuner"}
    assert len(versions(layout)) == 1
    [best_file] = glob.glob(f"{layout.pipeline_root}/Tuner/best_hyperparameters/*/*")
    with open(best_file) as file:
        best = json.load(file)["values"]
    [history_file] = glob.glob(f"{layout.pipeline_root}/Trainer/model_run/*/{HISTORY_FILE}")
    trained = TrainingConfig.from_dict(read_history(history_file)["config"])
    flags = flag_settings.training_config(
        run_here.local_parser("test").parse_args(["--epochs", "1"]), "tfrecord"
    )
    tuned = search_space.tuned_fields(best)
    assert 0.1 <= trained.rho_max <= 0.3 and 0.05 <= trained.alpha <= 0.2
    assert (trained.rho_max, trained.rho_min, trained.alpha, trained.learning_rate) == (
        tuned["rho_max"],
        tuned["rho_min"],
        tuned["alpha"],
        tuned["learning_rate"],
    )
    assert (trained.rho_max, trained.alpha) != (flags.rho_max, flags.alpha)
    run = summary.latest_run(layout.metadata_path, "tune-e2e")
    [trials] = run.tuner_trials
    assert len(trials) == 2 and trials[0]["rho_max"] == best["rho_max"]
    printed = capsys.readouterr().out
    assert f"rho_max {trained.rho_max:.4g}, rho_min {trained.rho_min:.4g}" in printed
    assert "  trials:         2, best first" in printed
