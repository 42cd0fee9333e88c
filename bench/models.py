"""The two models the step-time benchmark trains.

- `resnet20`: the CIFAR ResNet-20 of He et al. (2016): a 3x3 stem, three
  stages of three basic blocks (16, 32, 64 filters; stride 2 and a 1x1
  projection at the start of stages 2 and 3), global average pooling and a
  10-way linear head; about 0.27M parameters.
- `mlp`: the same 32x32x3 images flattened through two hidden layers of 512.

Example:

```python
from bench import models

model = models.build("resnet20")  # input (32, 32, 3), 10 logits
```
"""

import keras

INPUT_SHAPE = (32, 32, 3)
NUM_CLASSES = 10
MODELS = ("resnet20", "mlp")


def build(name, seed=0):
    """A freshly initialized `name` model; equal seeds give equal weights."""
    if name not in MODELS:
        raise ValueError(f"`name` must be one of {MODELS}. Received: {name!r}")
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(INPUT_SHAPE)
    if name == "mlp":
        x = keras.layers.Flatten()(inputs)
        for _ in range(2):
            x = keras.layers.Dense(512, activation="relu")(x)
        return keras.Model(
            inputs, keras.layers.Dense(NUM_CLASSES)(x), name=name
        )
    x = _conv_bn(inputs, 16, strides=1)
    x = keras.layers.ReLU()(x)
    for stage, filters in enumerate((16, 32, 64)):
        for block in range(3):
            strides = 2 if stage > 0 and block == 0 else 1
            x = _basic_block(x, filters, strides)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(NUM_CLASSES)(x), name=name)


def _conv_bn(x, filters, strides, kernel_size=3):
    x = keras.layers.Conv2D(
        filters, kernel_size, strides=strides, padding="same", use_bias=False
    )(x)
    return keras.layers.BatchNormalization()(x)


def _basic_block(x, filters, strides):
    shortcut = x
    if strides != 1 or x.shape[-1] != filters:
        shortcut = _conv_bn(x, filters, strides, kernel_size=1)
    y = keras.layers.ReLU()(_conv_bn(x, filters, strides))
    y = _conv_bn(y, filters, 1)
    return keras.layers.ReLU()(keras.layers.Add()([y, shortcut]))
