"""Fashion-MNIST data roots of a given train size, for the pipeline benchmark, cached.

Each root is what `data/fashion_mnist/make_sample.py` writes (it runs that script): a
stratified, seeded draw of `train_size` of the 60,000 IDX train images in `train/`, and all
10,000 test images (shuffled) in `eval/`, as TFRecords of tf.Example (PNG `image`, int64
`label`). Beyond the 60,000 train images, a root holds a whole multiple of them: all 60,000,
repeated with a distinct shifted crop each time (`make_sample.py --repeats`), one shard per
repeat, e.g. 600,000 images in ten files. Roots are built once and kept under the cache
folder, outside the checkout; the script writes each file whole (renamed into place), so a
root with all its files is complete.

The IDX files come from Debian's `dataset-fashion-mnist` package
(`apt-get install dataset-fashion-mnist`, which `make bench-pipeline` runs when they are
missing), in /usr/share/datasets/fashion-mnist.

Example:

    root = data_root(30000, os.path.expanduser("~/.cache/gsam-tfx/bench-data"))
    big = data_root(600000)  # the 60,000 train images ten times, shifted
"""

from __future__ import annotations

import os
import subprocess
import sys

from pipelines import configs

IDX_DIR = "/usr/share/datasets/fashion-mnist"
MAKE_SAMPLE = os.path.join(configs.DATA_ROOT, "make_sample.py")
TRAIN_IMAGES = 60000
# make_sample.py's --repeats at most (its shifts).
MAX_REPEATS = 25
EVAL_SIZE = 10000
DEFAULT_CACHE_DIR = os.path.join(os.path.expanduser("~"), ".cache", "gsam-tfx", "bench-data")


def data_root(train_size: int, cache_dir: str = DEFAULT_CACHE_DIR, idx_dir: str = IDX_DIR) -> str:
    """The cached root with `train_size` train images and the 10,000 eval images; built
    first (tens of seconds at 60,000 images, minutes at 600,000) when missing."""
    repeats = check_train_size(train_size)
    root = os.path.join(cache_dir, f"fashion_mnist-train{train_size}-eval{EVAL_SIZE}")
    shards = [f"data-{r:05d}-of-{repeats:05d}" for r in range(repeats)] if repeats > 1 else ["data"]
    files = [os.path.join(root, "train", f"{shard}.tfrecord") for shard in shards]
    files.append(os.path.join(root, "eval", "data.tfrecord"))
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
            "--train-size", str(train_size // repeats),
            "--eval-size", str(EVAL_SIZE),
            "--repeats", str(repeats),
        ],
        check=True,
    )  # fmt: skip
    return root


def check_train_size(train_size: int) -> int:
    """How many times a root of `train_size` train images repeats its draw; a bad size
    raises, naming the sizes there are."""
    if isinstance(train_size, bool) or not isinstance(train_size, int):
        raise ValueError(f"train_size must be an integer, got {train_size!r}.")
    if 10 <= train_size <= TRAIN_IMAGES:
        return 1
    repeats, left = divmod(train_size, TRAIN_IMAGES)
    if left or not 1 < repeats <= MAX_REPEATS:
        raise ValueError(
            f"train_size must be in 10..{TRAIN_IMAGES} (the Fashion-MNIST train images) or a "
            f"multiple of {TRAIN_IMAGES} up to {MAX_REPEATS * TRAIN_IMAGES} (them, repeated), "
            f"got {train_size}."
        )
    return repeats
