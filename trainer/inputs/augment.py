"""Training-time image augmentation: random crop, horizontal flip and brightness, seeded.

`ImageAugmentation` changes a batch of float images in [0, 1], `[batch, height, width,
channels]`, as keras-gsam's comparison did (and as CIFAR ResNets are trained):

- `"crop"`: zero-pad each side by 1/8 of the image's size (rounded, at least 1 pixel: 4 for
  32 pixels, as keras-gsam's 32 -> 40 -> 32) and cut the original size back out at a random
  offset;
- `"flip"`: mirror left-right with probability 1/2;
- `"brightness"`: add a random delta in [-0.5, 0.5) (`tf.image.random_brightness`'s
  `max_delta=0.5`), then clip to [0, 1].

The randomness is stateless: each batch's draws come from the seed and the batch's index in
the training stream (`tf.random.experimental.stateless_fold_in`), one independent draw per
example. The same seed therefore gives the same batches in every run, while every epoch (a
later stretch of the stream) sees other crops, flips and brightness. All three are vectorized
over the batch: three or four ops per batch, not per image.

Only the training dataset is augmented (`trainer.inputs.features.ModelInputs.dataset` with
`training=True`); evaluation, serving, the Evaluator and the SharpnessProbe never are.

Example:

>>> augment = ImageAugmentation(("crop", "flip"), seed=0)
>>> images = tf.random.uniform((8, 28, 28, 1))
>>> augment(images, batch_index=0).shape
TensorShape([8, 28, 28, 1])
"""

from __future__ import annotations

import random

import tensorflow as tf

from trainer.config import AUGMENTATIONS

BRIGHTNESS_MAX_DELTA = 0.5
CROP_PADDING_FRACTION = 1 / 8


def crop_padding(side: int) -> int:
    """Pixels of zero padding on each side of an image side of `side` pixels, for `"crop"`."""
    return max(1, round(side * CROP_PADDING_FRACTION))


class ImageAugmentation:
    """Augments batches of images in [0, 1] with the named augmentations, seeded.

    Args:
        augmentations: names from `trainer.config.AUGMENTATIONS`; applied in that order
            (crop, flip, brightness) whatever order they are given in.
        seed: an integer seeding every draw; `None` draws one at random (runs differ).
    """

    def __init__(self, augmentations, seed: int | None = None):
        unknown = [name for name in augmentations if name not in AUGMENTATIONS]
        if unknown or not augmentations:
            raise ValueError(
                f"augmentations must name one or more of {', '.join(AUGMENTATIONS)}, "
                f"got {list(augmentations)!r}."
            )
        self.augmentations = tuple(name for name in AUGMENTATIONS if name in augmentations)
        self.seed = random.SystemRandom().randrange(2**31) if seed is None else int(seed)

    def __call__(self, images: tf.Tensor, batch_index) -> tf.Tensor:
        """`images` augmented with the draws of the `batch_index`-th training batch."""
        if images.shape.rank != 4:
            raise ValueError(
                f"augment takes a batch of images [batch, height, width, channels], got a "
                f"tensor of shape {images.shape}."
            )
        batch_seed = tf.random.experimental.stateless_fold_in(
            tf.constant([self.seed, 0], tf.int64), tf.cast(batch_index, tf.int64)
        )
        seeds = tf.random.experimental.stateless_split(batch_seed, num=len(AUGMENTATIONS))
        batch = tf.shape(images)[0]
        for name, seed in zip(AUGMENTATIONS, tf.unstack(seeds)):
            if name in self.augmentations:
                images = getattr(self, f"_{name}")(images, batch, seed)
        return images

    @staticmethod
    def _crop(images, batch, seed):
        height, width = images.shape[1], images.shape[2]
        pad_y, pad_x = crop_padding(height), crop_padding(width)
        padded = tf.pad(images, [[0, 0], [pad_y, pad_y], [pad_x, pad_x], [0, 0]])
        seed_y, seed_x = tf.unstack(tf.random.experimental.stateless_split(seed, num=2))
        top = tf.random.stateless_uniform([batch], seed_y, 0, 2 * pad_y + 1, dtype=tf.int32)
        left = tf.random.stateless_uniform([batch], seed_x, 0, 2 * pad_x + 1, dtype=tf.int32)
        rows = top[:, None] + tf.range(height)[None, :]
        columns = left[:, None] + tf.range(width)[None, :]
        cropped = tf.gather(padded, rows, axis=1, batch_dims=1)
        return tf.gather(cropped, columns, axis=2, batch_dims=1)

    @staticmethod
    def _flip(images, batch, seed):
        mirror = tf.random.stateless_uniform([batch], seed) < 0.5
        return tf.where(mirror[:, None, None, None], tf.reverse(images, axis=[2]), images)

    @staticmethod
    def _brightness(images, batch, seed):
        delta = tf.random.stateless_uniform(
            [batch], seed, -BRIGHTNESS_MAX_DELTA, BRIGHTNESS_MAX_DELTA, dtype=images.dtype
        )
        return tf.clip_by_value(images + delta[:, None, None, None], 0.0, 1.0)
