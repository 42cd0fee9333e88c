"""The TFX Trainer module (`task.run_fn`, `tuning.tuner_fn`) and the GSAM library (`gsam/`).

- `gsam/`: GSAM and SAM for any Keras 3 model: the wrapper, the gradient math, rho schedules
  and sharpness measures; it imports TensorFlow and Keras only.
- `task.py`, `tuning.py`: the entry points TFX's Trainer and Tuner call; `config.py` and
  `search_space.py`: what they train and search, validated.
- `inputs/`: from tf.Examples to model inputs; `models/`: the built-in models and the export;
  `training/`: the training run around `fit` (history, resume, several workers).
"""
