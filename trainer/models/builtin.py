"""The Keras 3 functional models the Trainer builds: a small ResNet for images, an MLP for tabular.

Both output class probabilities (softmax), so the exported signature returns them as they are
and the loss is `SparseCategoricalCrossentropy()` (not from logits): `training_loss()`, or
with label smoothing `SmoothedSparseCategoricalCrossentropy`.

Example:

>>> model = build_model(TrainingConfig(model="resnet"), num_classes=10,
...                     input_shape=(28, 28, 1))
>>> model.output_shape
(None, 10)
"""

from __future__ import annotations

import keras
from keras import ops

from trainer.config import TrainingConfig

RESNET_WIDTHS = (16, 32, 64)
MLP_UNITS = (64, 64)


def training_loss(label_smoothing: float = 0.0) -> keras.losses.Loss:
    """The loss the Trainer minimizes, on probabilities: cross-entropy, with `label_smoothing`
    if > 0. The SharpnessProbe measures the plain one."""
    if label_smoothing:
        return SmoothedSparseCategoricalCrossentropy(label_smoothing)
    return keras.losses.SparseCategoricalCrossentropy()


@keras.saving.register_keras_serializable(package="gsam_tfx")
class SmoothedSparseCategoricalCrossentropy(keras.losses.Loss):
    """Cross-entropy of integer labels with label smoothing, on probabilities.

    Keras's `SparseCategoricalCrossentropy` has no label smoothing; this is its
    `CategoricalCrossentropy(label_smoothing=...)` of the one-hot labels: the target puts
    `1 - label_smoothing + label_smoothing / classes` on the true class and
    `label_smoothing / classes` on every other.

    Example:

    >>> loss = SmoothedSparseCategoricalCrossentropy(0.1)
    >>> float(loss([0], [[0.9, 0.1]]))  # -(0.95 log 0.9 + 0.05 log 0.1)
    0.2152...
    """

    def __init__(
        self,
        label_smoothing: float,
        reduction="sum_over_batch_size",
        name="smoothed_sparse_categorical_crossentropy",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        if not 0 <= label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}.")
        self.label_smoothing = float(label_smoothing)

    def call(self, y_true, y_pred):
        labels = ops.reshape(ops.cast(y_true, "int32"), ops.shape(y_pred)[:-1])
        one_hot = ops.one_hot(labels, ops.shape(y_pred)[-1], dtype=y_pred.dtype)
        return keras.losses.categorical_crossentropy(
            one_hot, y_pred, label_smoothing=self.label_smoothing
        )

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


def build_model(
    config: TrainingConfig,
    num_classes: int,
    input_shape: tuple[int, ...],
    input_moments: tuple[list[float], list[float]] | None = None,
) -> keras.Model:
    """Builds the model named by `config.model` for `input_shape` (see
    `trainer.inputs.data.model_input_shape`); the MLP standardizes its input with
    `input_moments` (see `build_mlp`)."""
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}.")
    if config.model == "resnet":
        return build_resnet(input_shape, num_classes, widths=config.model_widths or RESNET_WIDTHS)
    return build_mlp(
        input_shape, num_classes, units=config.model_widths or MLP_UNITS, moments=input_moments
    )


def build_resnet(
    input_shape: tuple[int, ...],
    num_classes: int,
    widths: tuple[int, ...] = RESNET_WIDTHS,
    blocks_per_stage: int = 1,
) -> keras.Model:
    """A small ResNet: 3x3 conv stem, one stage per width (each after the first halves the
    resolution), basic residual blocks with BatchNorm, global average pooling, softmax.

    With the defaults it has ~80k parameters, sized for 28x28 images on a CPU.
    """
    if len(input_shape) != 3:
        raise ValueError(f"input_shape must be (height, width, channels), got {input_shape!r}.")
    inputs = keras.Input(shape=input_shape, name="image")
    x = _conv_bn(inputs, widths[0], strides=1)
    x = keras.layers.ReLU()(x)
    for stage, width in enumerate(widths):
        for block in range(blocks_per_stage):
            x = _residual_block(x, width, strides=2 if stage > 0 and block == 0 else 1)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="resnet")


def build_mlp(
    input_shape: tuple[int, ...],
    num_classes: int,
    units: tuple[int, ...] = MLP_UNITS,
    moments: tuple[list[float], list[float]] | None = None,
) -> keras.Model:
    """An MLP on one float vector of raw numeric features, standardized inside the model (so
    serving takes raw values): with `moments`, the mean and variance of each value (the
    training split's, from StatisticsGen: `trainer.inputs.data.input_moments`), fixed; without
    them, by BatchNormalization.
    """
    if len(input_shape) != 1:
        raise ValueError(f"input_shape must be (num_features,), got {input_shape!r}.")
    inputs = keras.Input(shape=input_shape, name="features")
    if moments is None:
        x = keras.layers.BatchNormalization()(inputs)
    else:
        mean, variance = moments
        if len(mean) != input_shape[0] or len(variance) != input_shape[0]:
            raise ValueError(
                f"moments must give a mean and a variance per input value ({input_shape[0]}), "
                f"got {len(mean)} and {len(variance)}."
            )
        x = keras.layers.Normalization(mean=mean, variance=variance, name="standardize")(inputs)
    for width in units:
        x = keras.layers.Dense(width, activation="relu")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="mlp")


def _conv_bn(x, filters, strides, kernel_size=3):
    x = keras.layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="same",
        use_bias=False,
        kernel_initializer="he_normal",
    )(x)
    return keras.layers.BatchNormalization()(x)


def _residual_block(x, filters, strides):
    shortcut = x
    if strides != 1 or x.shape[-1] != filters:
        shortcut = _conv_bn(x, filters, strides, kernel_size=1)
    x = keras.layers.ReLU()(_conv_bn(x, filters, strides))
    x = _conv_bn(x, filters, strides=1)
    return keras.layers.ReLU()(keras.layers.Add()([x, shortcut]))
