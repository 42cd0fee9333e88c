"""Named bundles of flag values: `--preset NAME` sets them as the defaults, and any flag given
explicitly wins (`parsing.FlagParser`).

`keras-gsam` is the protocol of keras-gsam's comparison notebook (`examples/gsam_comparison
.ipynb`: CIFAR-10, ResNet-20, plain 80.52, SAM 82.33, GSAM 83.04 with one seed each) on your
data and model, with two changes the notebook's single runs could not show: several seeds
(3), and a validation split held out of the training examples for val_loss, where the
notebook validated on the test set.

What the notebook did, and the flags that do it here:

- images in [0, 1], padded 32 -> 40, randomly cropped back, random brightness (max delta
  0.5), clipped: `--augment crop,brightness`;
- Adam at 1e-3: `--base-optimizer adam --learning-rate 0.001 --warmup-epochs 0`;
- `ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=3)` (Keras's min_lr 0):
  `--lr-schedule plateau --plateau-factor 0.5 --plateau-patience 3 --min-learning-rate 0`;
- `EarlyStopping(monitor="val_loss", patience=10, restore_best_weights=True)`:
  `--early-stopping 10`;
- GSAM rho 0.05 and alpha 0.005, SAM rho 0.05: `--rho-max 0.05 --rho-min 0.05 --alpha 0.005`;
- SAM and GSAM up to 100 epochs, plain up to 200: `--epochs 100 --budget equal-compute`;
- batch 128 per accelerator (1024 on 8 TPU cores): `--batch-size 128`;
- one run per method, the test set as validation: `--seeds 3 --validation-split 0.1`.

Example:

    python -m pipelines.local_runner --preset keras-gsam --epochs 20 --data-root DATA
"""

from __future__ import annotations

# Flag destinations (argparse's names) -> values.
PRESETS = {
    "keras-gsam": {
        "compare": True,
        "methods": "plain,sam,gsam",
        "seeds": 3,
        "budget": "equal-compute",
        "validation_split": 0.1,
        "epochs": 100,
        "batch_size": 128,
        "base_optimizer": "adam",
        "learning_rate": 1e-3,
        "warmup_epochs": 0.0,
        "lr_schedule": "plateau",
        "plateau_factor": 0.5,
        "plateau_patience": 3,
        "min_learning_rate": 0.0,
        "early_stopping": 10,
        "optimizer": "gsam",
        "rho_max": 0.05,
        "rho_min": 0.05,
        "alpha": 0.005,
        "augment": ("crop", "brightness"),
    },
}
