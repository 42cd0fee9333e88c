"""Training-time augmentation (trainer/inputs/augment.py): what each augmentation does, that
it is seeded by the seed and the batch's place in the stream, and that only the training
dataset gets it (evaluation and serving stay bit-identical)."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from tfx.components.trainer import fn_args_utils
from tfx.types import standard_component_specs as specs

from tests import trainer_examples
from trainer.config import TrainingConfig
from trainer.inputs import data
from trainer.inputs.augment import BRIGHTNESS_MAX_DELTA, ImageAugmentation, crop_padding
from trainer.inputs.features import ModelInputs
from trainer.models import builtin, export

IMAGES = tf.random.stateless_uniform((16, 12, 10, 1), seed=[1, 2])


def test_crop_shifts_each_image_within_its_zero_padding():
    cropped = ImageAugmentation(("crop",), seed=3)(IMAGES, batch_index=0).numpy()
    pad_y, pad_x = crop_padding(12), crop_padding(10)
    assert (pad_y, pad_x) == (2, 1) and crop_padding(32) == 4  # keras-gsam: 32 -> 40 -> 32
    shifts = set()
    for image, out in zip(IMAGES.numpy(), cropped):
        padded = np.pad(image, [(pad_y, pad_y), (pad_x, pad_x), (0, 0)])
        windows = [
            (dy, dx)
            for dy in range(2 * pad_y + 1)
            for dx in range(2 * pad_x + 1)
            if np.array_equal(padded[dy : dy + 12, dx : dx + 10], out)
        ]
        assert len(windows) == 1
        shifts.add(windows[0])
    assert len(shifts) > 3, "each example draws its own offset"


def test_flip_mirrors_some_images_and_brightness_shifts_each_by_its_own_delta():
    flipped = ImageAugmentation(("flip",), seed=3)(IMAGES, batch_index=0).numpy()
    mirrored = [np.array_equal(out, image[:, ::-1]) for image, out in zip(IMAGES.numpy(), flipped)]
    kept = [np.array_equal(out, image) for image, out in zip(IMAGES.numpy(), flipped)]
    assert all(m or k for m, k in zip(mirrored, kept)) and 0 < sum(mirrored) < len(mirrored)

    brighter = ImageAugmentation(("brightness",), seed=3)(IMAGES, batch_index=0).numpy()
    assert brighter.min() >= 0 and brighter.max() <= 1
    deltas = []
    for image, out in zip(IMAGES.numpy(), brighter):
        inside = (out > 0) & (out < 1)  # not clipped
        delta = (out - image)[inside]
        np.testing.assert_allclose(delta, delta[0], atol=1e-6)
        deltas.append(delta[0])
    assert max(np.abs(deltas)) <= BRIGHTNESS_MAX_DELTA and len(set(np.round(deltas, 5))) > 8


def test_the_draws_follow_the_seed_and_the_batch_index_not_the_call():
    augment = ImageAugmentation(("crop", "flip", "brightness"), seed=5)
    first = augment(IMAGES, batch_index=4).numpy()
    np.testing.assert_array_equal(first, augment(IMAGES, batch_index=4).numpy())
    again = ImageAugmentation(("brightness", "flip", "crop"), seed=5)(IMAGES, 4).numpy()
    np.testing.assert_array_equal(first, again)  # the order given does not matter
    assert not np.array_equal(first, augment(IMAGES, batch_index=5).numpy())
    assert not np.array_equal(first, ImageAugmentation(augment.augmentations, 6)(IMAGES, 4))


def test_unknown_or_no_augmentations_are_errors():
    with pytest.raises(ValueError, match="one or more of crop, flip, brightness"):
        ImageAugmentation(("rotate",))
    with pytest.raises(ValueError, match="augment must be a list of distinct names"):
        TrainingConfig(augment=("crop", "crop"))


@pytest.fixture(scope="module")
def examples(tmp_path_factory):
    """24 train and 8 eval random images, with the sample's schema, as TFX's Trainer reads
    them (`FnArgs`)."""
    root = tmp_path_factory.mktemp("augment")
    rng = np.random.default_rng(0)
    artifact = trainer_examples.examples_artifact(
        str(root / "examples"),
        {
            "train": trainer_examples.random_image_examples(rng, 24),
            "eval": trainer_examples.random_image_examples(rng, 8),
        },
    )
    with open(trainer_examples.SAMPLE_SCHEMA) as schema_file:
        schema = trainer_examples.schema_artifact(str(root / "schema"), schema_file.read())
    return fn_args_utils.get_common_fn_args(
        {specs.EXAMPLES_KEY: [artifact], specs.SCHEMA_KEY: [schema]},
        {specs.TRAIN_ARGS_KEY: "{}", specs.EVAL_ARGS_KEY: "{}"},
    )


def batches(fn_args, config, training, count, feature_dict=False):
    inputs = ModelInputs(config, data.load_schema(fn_args.schema_path), feature_dict=feature_dict)
    files = fn_args.train_files if training else fn_args.eval_files
    dataset = inputs.dataset(files, fn_args.data_accessor, training=training, shuffle_seed=1)
    return [(x, y.numpy()) for x, y in dataset.take(count)]


def test_training_batches_are_the_plain_batches_augmented_by_their_index(examples):
    plain = TrainingConfig(batch_size=8, seed=1)
    augmented = TrainingConfig(batch_size=8, seed=1, augment=("crop", "flip", "brightness"))
    unchanged = batches(examples, plain, training=True, count=6)
    changed = batches(examples, augmented, training=True, count=6)
    augment = ImageAugmentation(augmented.augment, seed=1)
    for index, ((x, y), (x_aug, y_aug)) in enumerate(zip(unchanged, changed)):
        np.testing.assert_array_equal(y, y_aug)  # the same examples, in the same order
        np.testing.assert_array_equal(augment(x, index).numpy(), x_aug.numpy())
        assert not np.array_equal(x.numpy(), x_aug.numpy())
    # An epoch is 3 batches of the 24 images: the same image is augmented otherwise in the
    # next epoch's batch (index + 3), wherever it falls.
    for x, _ in unchanged[:3]:
        for index in range(3):
            assert not np.array_equal(augment(x, index), augment(x, index + 3))
    # The same seed gives the same batches in a new dataset; another seed other ones.
    for (x, _), (x_again, _) in zip(changed, batches(examples, augmented, True, 6)):
        np.testing.assert_array_equal(x.numpy(), x_again.numpy())
    other = TrainingConfig(batch_size=8, seed=2, augment=augmented.augment)
    assert not np.array_equal(changed[0][0], batches(examples, other, True, 1)[0][0])


def test_evaluation_and_serving_are_bit_identical_with_and_without_augment(examples, tmp_path):
    plain = TrainingConfig(batch_size=8, seed=1, input_size=(14, 14))
    augmented = TrainingConfig(
        batch_size=8, seed=1, input_size=(14, 14), augment=("crop", "flip", "brightness")
    )
    schema = data.load_schema(examples.schema_path)
    keras.utils.set_random_seed(0)
    model = builtin.build_model(plain, 10, (14, 14, 1))
    predictions = {}
    for name, config in (("plain", plain), ("augmented", augmented)):
        evaluation = batches(examples, config, training=False, count=1)
        predictions[name, "eval"] = model.predict(evaluation[0][0], verbose=0)
        serving_dir = os.path.join(tmp_path, name)
        export.export_serving_model(
            model, serving_dir, export.serving_signatures(model, ModelInputs(config, schema))
        )
        serialized = [
            record.numpy()
            for record in tf.data.TFRecordDataset(
                tf.io.gfile.glob(examples.eval_files[0]), compression_type="GZIP"
            )
        ]
        predictions[name, "serving"] = trainer_examples.serve(serving_dir, serialized)
    for path in ("eval", "serving"):
        np.testing.assert_array_equal(predictions["plain", path], predictions["augmented", path])
    # The training path differs: a negative control of the comparison above.
    train = {
        name: batches(examples, config, training=True, count=1)[0][0]
        for name, config in (("plain", plain), ("augmented", augmented))
    }
    assert not np.array_equal(
        model.predict(train["plain"], verbose=0), model.predict(train["augmented"], verbose=0)
    )


def test_a_user_model_gets_its_image_feature_augmented_and_nothing_else(examples):
    config = TrainingConfig(batch_size=8, seed=1, augment=("flip",))
    plain = batches(examples, TrainingConfig(batch_size=8, seed=1), True, 2, feature_dict=True)
    augmented = batches(examples, config, True, 2, feature_dict=True)
    augment = ImageAugmentation(("flip",), seed=1)
    for index, ((x, _), (x_aug, _)) in enumerate(zip(plain, augmented)):
        assert set(x_aug) == set(x)
        expected = augment(x["image"], index).numpy()
        np.testing.assert_array_equal(x_aug["image"].numpy(), expected)


def test_augment_names_what_it_cannot_augment(examples):
    with pytest.raises(ValueError, match="augment applies to images; the built-in model 'mlp'"):
        ModelInputs(
            TrainingConfig(model="mlp", augment=("flip",)),
            data.load_schema(examples.schema_path),
        ).augmentation()
