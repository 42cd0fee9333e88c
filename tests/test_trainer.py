"""run_fn end to end, called by TFX's own Trainer executor on tiny Examples artifacts."""

import glob
import os
import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests import trainer_examples
from trainer import task
from trainer.config import TrainingConfig
from trainer.gsam import GSAM
from trainer.gsam.rho import rho_from_learning_rate
from trainer.inputs import data
from trainer.models import export
from trainer.models.builtin import build_model
from trainer.training import fit


def assert_probabilities(probabilities, count, num_classes):
    assert probabilities.shape == (count, num_classes)
    assert np.all(probabilities >= 0)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def image_splits(rng):
    return {
        "train": trainer_examples.random_image_examples(rng, 64),
        "eval": trainer_examples.random_image_examples(rng, 16),
    }


def test_plain_training_exports_serving_model_and_tensorboard_logs(tmp_path):
    splits = image_splits(np.random.default_rng(0))
    config = TrainingConfig(optimizer="plain", epochs=1, batch_size=16)
    with open(trainer_examples.SAMPLE_SCHEMA) as f:
        serving_dir, run_dir = trainer_examples.run_trainer(tmp_path, config, splits, f.read())

    assert tf.io.gfile.exists(os.path.join(serving_dir, "saved_model.pb"))
    assert_probabilities(trainer_examples.serve(serving_dir, splits["eval"][:5]), 5, 10)
    assert glob.glob(os.path.join(run_dir, "train", "events.out.tfevents.*"))
    assert glob.glob(os.path.join(run_dir, "validation", "events.out.tfevents.*"))
    # The resume backup is removed after the export.
    assert os.listdir(os.path.join(os.path.dirname(run_dir), "resume")) == []
    assert not glob.glob(serving_dir + ".tmp-*")


def test_gsam_training_logs_gsam_metrics_and_exports_inner_model(tmp_path, capsys):
    splits = image_splits(np.random.default_rng(1))
    config = TrainingConfig(optimizer="gsam", epochs=2, batch_size=16, warmup_epochs=0.5)
    with open(trainer_examples.SAMPLE_SCHEMA) as f:
        # TrainArgs.num_steps is the total: 2 epochs x 2 steps.
        serving_dir, _ = trainer_examples.run_trainer(
            tmp_path, config, splits, f.read(), train_steps=4
        )

    output = capsys.readouterr().out
    assert "Epoch 2/2" in output and "2/2 - " in output
    for name in ("surrogate_gap", "rho", "perturbed_loss", "val_loss"):
        assert name in output
    signature = tf.saved_model.load(serving_dir).signatures["serving_default"]
    assert set(signature.structured_input_signature[1]) == {"examples"}
    served = trainer_examples.serve(serving_dir, splits["eval"])
    assert_probabilities(served, 16, 10)
    # The Keras model beside the serving export is the same inner model.
    keras_model = keras.saving.load_model(export.keras_model_path(os.path.dirname(serving_dir)))
    assert keras_model.name == "resnet"
    schema = data.load_schema(trainer_examples.SAMPLE_SCHEMA)
    features = tf.io.parse_example(splits["eval"], data.parse_spec(config, schema))
    inputs = data.features_to_inputs(features, config, schema)
    np.testing.assert_allclose(keras_model(inputs, training=False), served, atol=1e-5)


class FitSpy:
    """What run_fn trains: the model `fit` runs on (the inner model for plain training, else
    its GSAM wrapper) and the logs of every training step.

    TFX's executor reloads trainer.task, so the spy sits on `keras.Model.fit`.
    """

    def __init__(self, monkeypatch):
        self.trained = None
        self.step_logs = []
        fit = keras.Model.fit

        def spy_fit(model, *args, callbacks=(), **kwargs):
            self.trained = model
            record = keras.callbacks.LambdaCallback(
                on_train_batch_end=lambda batch, logs: self.step_logs.append(
                    {name: float(value) for name, value in logs.items()}
                )
            )
            return fit(model, *args, callbacks=[*callbacks, record], **kwargs)

        monkeypatch.setattr(keras.Model, "fit", spy_fit)

    @property
    def inner_model(self):
        return self.trained.model if isinstance(self.trained, GSAM) else self.trained


def tabular_splits(rng):
    return {
        "train": trainer_examples.random_tabular_examples(rng, 48),
        "eval": trainer_examples.random_tabular_examples(rng, 8),
    }


def exported_model_variables(serving_dir):
    """Checkpoint key -> value of the SavedModel's variables, less the optimizer's (a model
    compiled itself, as in plain training, carries its optimizer into the export)."""
    reader = tf.train.load_checkpoint(os.path.join(serving_dir, "variables", "variables"))
    return {
        key: reader.get_tensor(key)
        for key in reader.get_variable_to_shape_map()
        if key != "_CHECKPOINTABLE_OBJECT_GRAPH" and not key.startswith("model/optimizer/")
    }


# 48 examples in batches of 16: 3 steps an epoch, 6 in all; the first is the warmup.
TABULAR = dict(
    model="mlp", epochs=2, batch_size=16, warmup_epochs=1 / 3, learning_rate=0.05, min_train_steps=0
)


@pytest.mark.parametrize(
    "config",
    [
        TrainingConfig(optimizer="plain", **TABULAR),
        TrainingConfig(optimizer="sam", base_optimizer="adam", rho_max=0.08, **TABULAR),
        TrainingConfig(
            optimizer="gsam", alpha=0.05, adaptive=True, rho_max=0.05, rho_min=0.01, **TABULAR
        ),
    ],
    ids=lambda config: config.optimizer,
)
def test_run_fn_trains_what_the_config_asks_and_exports_the_inner_model(
    tmp_path, monkeypatch, config
):
    spy = FitSpy(monkeypatch)
    splits = tabular_splits(np.random.default_rng(2))
    serving_dir, _ = trainer_examples.run_trainer(
        tmp_path, config, splits, trainer_examples.TABULAR_SCHEMA
    )

    assert len(spy.step_logs) == 6
    if config.optimizer == "plain":
        assert not isinstance(spy.trained, GSAM)
        assert not any("rho" in logs for logs in spy.step_logs)
    else:
        trained = spy.trained
        assert isinstance(trained, GSAM)
        assert float(trained.alpha.numpy()) == pytest.approx(config.effective_alpha)
        assert config.effective_alpha == (0.0 if config.optimizer == "sam" else 0.05)
        assert trained.adaptive is config.adaptive and trained.asam is False
        assert float(trained.rho_max.numpy()) == pytest.approx(config.rho_max)
        assert float(trained.rho_min.numpy()) == pytest.approx(config.rho_min)
        # rho follows the Trainer's learning rate, step by step.
        schedule, lr_max, lr_min = fit.learning_rate_schedule(config, steps_per_epoch=3)
        bounds = (config.rho_max, config.rho_min, lr_max, lr_min)
        expected = [float(rho_from_learning_rate(schedule(step), *bounds)) for step in range(6)]
        np.testing.assert_allclose([logs["rho"] for logs in spy.step_logs], expected, rtol=1e-5)
        assert expected[0] == pytest.approx(config.rho_min)  # warmup starts at the floor
        assert expected[1] == pytest.approx(config.rho_max)  # the first step after warmup
        assert expected[1] > expected[3] > expected[5] > config.rho_min
        # After the last step the schedule is at its floor: so is rho.
        assert int(trained.optimizer.iterations.numpy()) == 6
        assert float(trained.current_rho()) == pytest.approx(config.rho_min)

    # The SavedModel holds the trained inner model's weights and nothing of the wrapper.
    variables = exported_model_variables(serving_dir)
    assert not [key for key in variables if re.search("rho|alpha|skipped_steps", key)]
    assert len(variables) == len(spy.inner_model.weights)
    for weight in spy.inner_model.weights:
        assert any(
            value.shape == tuple(weight.shape) and np.array_equal(value, weight.numpy())
            for value in variables.values()
        ), weight.path
    assert_probabilities(trainer_examples.serve(serving_dir, splits["eval"]), 8, 3)


@pytest.mark.parametrize(
    "perturb_every, reuse_scale, expected",
    [(5, 0.25, 0.25), (5, None, None), (1, 0.25, None)],
    ids=["fixed", "adaptive", "exact"],
)
def test_the_reuse_coefficient_reaches_gsam_when_steps_reuse(perturb_every, reuse_scale, expected):
    config = TrainingConfig(optimizer="gsam", perturb_every=perturb_every, reuse_scale=reuse_scale)
    model = build_model(TrainingConfig(model="mlp"), num_classes=3, input_shape=(4,))
    trained = fit.wrap_for_training(model, config, lr_max=0.1, lr_min=0.1)
    assert (trained.perturb_every, trained.reuse_scale) == (perturb_every, expected)


def test_a_constant_learning_rate_gives_a_constant_rho_max():
    config = TrainingConfig(model="mlp", lr_schedule="constant", rho_max=0.06, rho_min=0.02)
    model = build_model(config, 3, (3,))
    trained = fit.wrap_for_training(model, config, lr_max=0.1, lr_min=0.1)
    trained.compile(optimizer=fit.make_optimizer(config, 0.1), loss="mse")
    assert trained.lr_max is None and float(trained.current_rho()) == pytest.approx(0.06)


def test_total_train_steps_and_steps_per_epoch_conflict(tmp_path):
    splits = image_splits(np.random.default_rng(3))
    config = TrainingConfig(optimizer="plain", train_steps_per_epoch=2)
    with (
        open(trainer_examples.SAMPLE_SCHEMA) as f,
        pytest.raises(ValueError, match="TrainArgs.num_steps .*train_steps_per_epoch"),
    ):
        trainer_examples.run_trainer(tmp_path, config, splits, f.read(), train_steps=4)


class FakeFnArgs:
    def __init__(self, train_steps=None, eval_steps=None):
        self.train_steps = train_steps
        self.eval_steps = eval_steps
        self.train_files = ["train/*"]
        self.eval_files = ["eval/*"]
        self.data_accessor = None


class FortyExamples:
    """The ModelInputs of a split of 40 examples, as far as counting goes."""

    def count_examples(self, file_patterns, data_accessor):
        return 40


@pytest.mark.parametrize("train_steps, per_epoch, expected", [(10, None, 4), (None, 7, 7)])
def test_steps_per_epoch_from_total_steps_or_config(train_steps, per_epoch, expected):
    config = TrainingConfig(epochs=3, train_steps_per_epoch=per_epoch)
    assert task.training_steps_per_epoch(FakeFnArgs(train_steps), config, inputs=None) == expected


@pytest.mark.parametrize(
    "eval_steps_arg, eval_steps_config, expected",
    [(0, None, 3), (2, None, 2), (0, 2, 2), (10, None, 3), (0, 10, 3)],
    ids=["full-pass", "eval-args", "config", "eval-args-capped", "config-capped"],
)
def test_eval_batches_are_capped_at_one_pass(
    monkeypatch, eval_steps_arg, eval_steps_config, expected
):
    config = TrainingConfig(batch_size=16, eval_steps=eval_steps_config)
    assert task.eval_batches(FakeFnArgs(eval_steps=eval_steps_arg), config, FortyExamples()) == (
        expected
    )


def test_eval_steps_from_eval_args_and_config_conflict(monkeypatch):
    with pytest.raises(ValueError, match=r"EvalArgs.num_steps \(5\) or eval_steps \(2\), not both"):
        task.eval_batches(FakeFnArgs(eval_steps=5), TrainingConfig(eval_steps=2), FortyExamples())


@pytest.mark.parametrize(
    "split, message", [("train", "No training examples"), ("eval", "No eval examples")]
)
def test_an_empty_split_is_an_error_naming_it(tmp_path, split, message):
    splits = image_splits(np.random.default_rng(4))
    splits[split] = []
    config = TrainingConfig(optimizer="plain", epochs=1, batch_size=16)
    with (
        open(trainer_examples.SAMPLE_SCHEMA) as f,
        pytest.raises(ValueError, match=f"{message} in .*Split-{split}"),
    ):
        trainer_examples.run_trainer(tmp_path, config, splits, f.read())


def test_cosine_schedule_warms_up_from_and_decays_to_the_floor():
    config = TrainingConfig(learning_rate=0.1, lr_min_ratio=0.01, warmup_epochs=1, epochs=4)
    schedule, lr_max, lr_min = fit.learning_rate_schedule(config, steps_per_epoch=10)
    assert (lr_max, lr_min) == (0.1, pytest.approx(0.001))
    values = [float(schedule(step)) for step in (0, 5, 10, 25, 40)]
    assert values[0] == pytest.approx(0.001)
    assert values[1] == pytest.approx(0.0505)
    assert values[2] == pytest.approx(0.1)
    assert lr_min < values[3] < lr_max
    assert values[4] == pytest.approx(0.001)


def test_constant_schedule_is_a_number_and_keeps_warmup():
    assert fit.learning_rate_schedule(
        TrainingConfig(learning_rate=0.1, lr_schedule="constant"), 10
    ) == (0.1, 0.1, 0.1)
    config = TrainingConfig(
        learning_rate=0.1, lr_schedule="constant", warmup_epochs=1, lr_min_ratio=0.1, epochs=2
    )
    schedule, lr_max, lr_min = fit.learning_rate_schedule(config, 10)
    assert [round(float(schedule(s)), 6) for s in (0, 10, 20)] == [0.01, 0.1, 0.1]
    assert (lr_max, lr_min) == (0.1, pytest.approx(0.01))


def test_warmup_longer_than_training_is_rejected():
    with pytest.raises(ValueError, match="warmup_epochs"):
        fit.learning_rate_schedule(TrainingConfig(epochs=2, warmup_epochs=2), 10)


def test_optimizers():
    sgd = fit.make_optimizer(TrainingConfig(base_optimizer="sgd"), 0.1)
    assert sgd.__class__.__name__ == "SGD" and sgd.momentum == 0.9
    assert (
        fit.make_optimizer(TrainingConfig(base_optimizer="adam"), 0.1).__class__.__name__ == "Adam"
    )
