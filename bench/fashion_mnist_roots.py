"""Fashion-MNIST data roots of a given train size, for the pipeline benchmark, cached.

Each root is what `data/fashion_mnist/make_sample.py` writes (it runs that script): a
stratified, seeded draw of `train_size` of the 60,000 IDX train images in `train/`, and all
10,000 test images (shuffled) in `eval/`, as TFRecords of tf.Example (PNG `image`, int64
`label`). Roots are built once and kept under the cache folder, outside the checkout; the
script writes each file whole (renamed into place), so a root with both files is complete.

The IDX files come from Debian's `dataset-fashion-mnist` package
(`apt-get install dataset-fashion-mnist`, which `make bench-pipeline` runs when they are
missing), in /usr/share/datasets/fashion-mnist.

Example:

    root = data_root(30000, os.path.expanduser("~/.cache/gsam-tfx/bench-data"))
"""

from __future__ import annotations

import os
import subprocess
import sys

from pipelines import configs

IDX_DIR = "/usr/share/datasets/fashion-mnist"
MAKE_SAMPLE = os.path.join(configs.DATA_ROOT, "make_sample.py")
TRAIN_IMAGES = 60000
EVAL_SIZE = 10000
DEFAULT_CACHE_DIR = os.path.join(os.path.expanduser("~"), ".cache", "gsam-tfx", "bench-data")


def data_root(train_size: int, cache_dir: str = DEFAULT_CACHE_DIR, idx_dir: str = IDX_DIR) -> str:
    """The cached root with `train_size` train images and the 10,000 eval images; built
    first (tens of seconds at 60,000 images) when missing."""
    if isinstance(train_size, bool) or not isinstance(train_size, int):
        raise ValueError(f"train_size must be an integer, got {train_size!r}.")
    if not 10 <= train_size <= TRAIN_IMAGES:
        raise ValueError(
            f"train_size must be in 10..{TRAIN_IMAGES} (the Fashion-MNIST train images), "
            f"got {train_size}."
        )
    root = os.path.join(cache_dir, f"fashion_mnist-train{train_size}-eval{EVAL_SIZE}")
    files = [os.path.join(root, split, "data.tfrecord") for split in ("train", "eval")]
    if all(os.path.exists(path) for path in files):
        return root
    if not os.path.isdir(idx_dir):
        raise FileNotFoundError(
            f"No Fashion-MNIST IDX files at {idx_dir}: install them with "
            f"`sudo apt-get install dataset-fashion-mnist` (Debian, Ubuntu)."
        )
    print(f"building {root} ({train_size} train, {EVAL_SIZE} eval images)", flush=True)
    subprocess.run(
        [
            sys.executable, MAKE_SAMPLE,
            "--idx-dir", idx_dir,
            "--output-dir", root,
            "--train-size", str(train_size),
            "--eval-size", str(EVAL_SIZE),
        ],
        check=True,
    )  # fmt: skip
    return root
