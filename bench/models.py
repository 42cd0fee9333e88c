"""The two models the step-time benchmark trains.

- `resnet20`: the CIFAR ResNet-20 of He et al. (2016): a 3x3 stem, three
  stages of three basic blocks (16, 32, 64 filters; stride 2 and a 1x1
  projection at the start of stages 2 and 3), global average pooling and a
  10-way softmax head; about 0.27M parameters. It is the Trainer's own
  `trainer.models.builtin.build_resnet` with three blocks per stage.
- `mlp`: the same 32x32x3 images flattened through two hidden layers of 512.

Example:

```python
from bench import models

model = models.build("resnet20")  # input (32, 32, 3), 10 probabilities
```
"""

import keras

from trainer.models.builtin import build_resnet

INPUT_SHAPE = (32, 32, 3)
NUM_CLASSES = 10
MODELS = ("resnet20", "mlp")


def build(name, seed=0):
    """A freshly initialized `name` model; equal seeds give equal weights."""
    if name not in MODELS:
        raise ValueError(f"`name` must be one of {MODELS}. Received: {name!r}")
    keras.utils.set_random_seed(seed)
    if name == "resnet20":
        return build_resnet(INPUT_SHAPE, NUM_CLASSES, blocks_per_stage=3)
    inputs = keras.Input(INPUT_SHAPE)
    x = keras.layers.Flatten()(inputs)
    for _ in range(2):
        x = keras.layers.Dense(512, activation="relu")(x)
    outputs = keras.layers.Dense(NUM_CLASSES, activation="softmax")(x)
    return keras.Model(inputs, outputs, name=name)
