"""GSAM and SAM training for Keras 3 models: the library.

`GSAM` wraps a Keras model and trains it with Surrogate Gap Guided
Sharpness-Aware Minimization (Zhuang et al., ICLR 2022); `alpha=0` is SAM
(Foret et al., ICLR 2021). The update is big_vision's `gsam_gradient`
(`big_vision/trainers/proj/gsam/gsam.py`), implemented once:
`sharpness_aware_gradients` computes it and `apply_sharpness_aware_gradients`
applies it. `GSAM.train_step` calls both, and so can a custom distributed
loop inside `strategy.run`.

Example:

```python
import keras
from trainer.gsam import GSAM

model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3)])
gsam_model = GSAM(model, rho=0.05, alpha=0.01)
gsam_model.compile(
    optimizer="sgd",
    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    metrics=["accuracy"],
)
x = keras.random.normal((64, 8))
y = keras.random.randint((64,), 0, 3)
history = gsam_model.fit(x, y, epochs=2, verbose=0)
# history.history has loss, accuracy, perturbed_loss, surrogate_gap, rho,
# grad_norm, grad_cosine and skipped_steps.
```
"""

from trainer.gsam.gradients import (
    SharpnessAwareGradients,
    apply_sharpness_aware_gradients,
    sharpness_aware_gradients,
)
from trainer.gsam.wrapper import GSAM, PERTURBED_PASS_LOGS

__all__ = [
    "GSAM",
    "PERTURBED_PASS_LOGS",
    "SharpnessAwareGradients",
    "apply_sharpness_aware_gradients",
    "sharpness_aware_gradients",
]
