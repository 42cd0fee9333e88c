"""run_fn end to end, called by TFX's own Trainer executor on tiny Examples artifacts."""

import glob
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests import trainer_examples
from trainer import data, export, task
from trainer.config import TrainingConfig


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


def test_sam_training_of_mlp_on_tabular_features(tmp_path):
    rng = np.random.default_rng(2)
    splits = {
        "train": trainer_examples.random_tabular_examples(rng, 48),
        "eval": trainer_examples.random_tabular_examples(rng, 8),
    }
    config = TrainingConfig(
        model="mlp",
        optimizer="sam",
        base_optimizer="adam",
        epochs=1,
        batch_size=16,
        learning_rate=0.01,
        lr_schedule="constant",
    )
    serving_dir, _ = trainer_examples.run_trainer(
        tmp_path, config, splits, trainer_examples.TABULAR_SCHEMA
    )

    assert_probabilities(trainer_examples.serve(serving_dir, splits["eval"]), 8, 3)


def test_total_train_steps_and_steps_per_epoch_conflict(tmp_path):
    splits = image_splits(np.random.default_rng(3))
    config = TrainingConfig(optimizer="plain", train_steps_per_epoch=2)
    with (
        open(trainer_examples.SAMPLE_SCHEMA) as f,
        pytest.raises(ValueError, match="TrainArgs.num_steps .*train_steps_per_epoch"),
    ):
        trainer_examples.run_trainer(tmp_path, config, splits, f.read(), train_steps=4)


class FakeFnArgs:
    def __init__(self, train_steps=None):
        self.train_steps = train_steps


@pytest.mark.parametrize("train_steps, per_epoch, expected", [(10, None, 4), (None, 7, 7)])
def test_steps_per_epoch_from_total_steps_or_config(train_steps, per_epoch, expected):
    config = TrainingConfig(epochs=3, train_steps_per_epoch=per_epoch)
    assert task.training_steps_per_epoch(FakeFnArgs(train_steps), config, schema=None) == expected


def test_cosine_schedule_warms_up_from_and_decays_to_the_floor():
    config = TrainingConfig(learning_rate=0.1, lr_min_ratio=0.01, warmup_epochs=1, epochs=4)
    schedule, lr_max, lr_min = task.learning_rate_schedule(config, steps_per_epoch=10)
    assert (lr_max, lr_min) == (0.1, pytest.approx(0.001))
    values = [float(schedule(step)) for step in (0, 5, 10, 25, 40)]
    assert values[0] == pytest.approx(0.001)
    assert values[1] == pytest.approx(0.0505)
    assert values[2] == pytest.approx(0.1)
    assert lr_min < values[3] < lr_max
    assert values[4] == pytest.approx(0.001)


def test_constant_schedule_is_a_number_and_keeps_warmup():
    assert task.learning_rate_schedule(
        TrainingConfig(learning_rate=0.1, lr_schedule="constant"), 10
    ) == (0.1, 0.1, 0.1)
    config = TrainingConfig(
        learning_rate=0.1, lr_schedule="constant", warmup_epochs=1, lr_min_ratio=0.1, epochs=2
    )
    schedule, lr_max, lr_min = task.learning_rate_schedule(config, 10)
    assert [round(float(schedule(s)), 6) for s in (0, 10, 20)] == [0.01, 0.1, 0.1]
    assert (lr_max, lr_min) == (0.1, pytest.approx(0.01))


def test_warmup_longer_than_training_is_rejected():
    with pytest.raises(ValueError, match="warmup_epochs"):
        task.learning_rate_schedule(TrainingConfig(epochs=2, warmup_epochs=2), 10)


def test_optimizers():
    sgd = task.make_optimizer(TrainingConfig(base_optimizer="sgd"), 0.1)
    assert sgd.__class__.__name__ == "SGD" and sgd.momentum == 0.9
    assert (
        task.make_optimizer(TrainingConfig(base_optimizer="adam"), 0.1).__class__.__name__ == "Adam"
    )
