"""Draws the committed Fashion-MNIST sample: stratified, seeded, written as TFRecords of tf.Example.

Each example has `image` (one PNG-encoded 28x28 grayscale image, bytes) and `label` (int64,
0..9). The train split is drawn from the IDX train set, the eval split from the IDX test set,
with equal counts per class (+-1) and a fixed seed, so a rebuild gives the same files.

`--repeats R` writes the train draw R times, for benchmarks of more images than Fashion-MNIST
has: repeat r shifted by `SHIFTS[r]` (a crop of the image padded with `SHIFT_PAD` black
pixels; repeat 0 unshifted), so every record is distinct, each repeat in a shard of its own,
`train/data-0000r-of-0000R.tfrecord`.

Example (Debian/Ubuntu: `apt-get install dataset-fashion-mnist`):

    scripts/in-env python data/fashion_mnist/make_sample.py \
        --idx-dir /usr/share/datasets/fashion-mnist --output-dir data/fashion_mnist

Needs only numpy and tensorflow.
"""

from __future__ import annotations

import argparse
import gzip
import os

import numpy as np
import tensorflow as tf

NUM_CLASSES = 10
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "eval": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_IDX_MAGIC = {3: 2051, 1: 2049}  # images (rank 3), labels (rank 1); dtype ubyte
SHIFT_PAD = 2
# (down, right) pixel shifts of the repeats; each crop keeps the 28x28 size.
SHIFTS = [(dy, dx) for dy in (0, 1, -1, 2, -2) for dx in (0, 1, -1, 2, -2)]


def read_idx(idx_dir: str, name: str, rank: int) -> np.ndarray:
    """Reads one uint8 IDX file `name` or `name.gz` from `idx_dir`."""
    for path in (os.path.join(idx_dir, name), os.path.join(idx_dir, name + ".gz")):
        if os.path.exists(path):
            break
    else:
        raise FileNotFoundError(f"IDX file {name}[.gz] not found in --idx-dir {idx_dir!r}.")
    with (gzip.open if path.endswith(".gz") else open)(path, "rb") as f:
        data = f.read()
    magic = int.from_bytes(data[:4], "big")
    if magic != _IDX_MAGIC[rank]:
        raise ValueError(f"{path}: expected IDX magic {_IDX_MAGIC[rank]}, got {magic}.")
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(rank)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * rank).reshape(shape)


def stratified_indices(labels: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """`size` indices with per-class counts equal +-1, in shuffled order."""
    if not 0 < size <= len(labels):
        raise ValueError(f"sample size must be in 1..{len(labels)}, got {size}.")
    base, extra = divmod(size, NUM_CLASSES)
    chosen = []
    for label in range(NUM_CLASSES):
        count = base + (label < extra)
        pool = np.flatnonzero(labels == label)
        if count > len(pool):
            raise ValueError(f"class {label} has {len(pool)} examples, {count} requested.")
        chosen.append(rng.choice(pool, size=count, replace=False))
    return rng.permutation(np.concatenate(chosen))


def shifted(images: np.ndarray, shift: tuple[int, int]) -> np.ndarray:
    """`images` [n, height, width] moved `shift` (down, right) pixels, black filling in."""
    dy, dx = shift
    if max(abs(dy), abs(dx)) > SHIFT_PAD:
        raise ValueError(f"shift {shift} is more than SHIFT_PAD {SHIFT_PAD} pixels.")
    padded = np.pad(images, ((0, 0), (SHIFT_PAD, SHIFT_PAD), (SHIFT_PAD, SHIFT_PAD)))
    height, width = images.shape[1:]
    top, left = SHIFT_PAD - dy, SHIFT_PAD - dx
    return padded[:, top : top + height, left : left + width]


def write_split(path: str, images: np.ndarray, labels: np.ndarray) -> None:
    """Writes tf.Examples (`image`: PNG bytes, `label`: int64) to the TFRecord file `path`."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    partial = f"{path}.partial"  # renamed into place when whole: never a truncated sample
    with tf.io.TFRecordWriter(partial) as writer:
        for image, label in zip(images, labels):
            png = tf.io.encode_png(image[:, :, np.newaxis]).numpy()
            example = tf.train.Example(
                features=tf.train.Features(
                    feature={
                        "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[png])),
                        "label": tf.train.Feature(
                            int64_list=tf.train.Int64List(value=[int(label)])
                        ),
                    }
                )
            )
            writer.write(example.SerializeToString(deterministic=True))
    os.replace(partial, path)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--idx-dir",
        default="/usr/share/datasets/fashion-mnist",
        help="folder with the four Fashion-MNIST IDX files (.gz or not)",
    )
    parser.add_argument(
        "--output-dir",
        default=os.path.dirname(os.path.abspath(__file__)),
        help="writes OUTPUT_DIR/train/data.tfrecord and OUTPUT_DIR/eval/data.tfrecord",
    )
    parser.add_argument("--train-size", type=int, default=10000)
    parser.add_argument("--eval-size", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=20240601)
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help=f"write the train draw this many times, each shifted differently, one shard each "
        f"(1..{len(SHIFTS)}; default: %(default)s)",
    )
    args = parser.parse_args(argv)
    if not 1 <= args.repeats <= len(SHIFTS):
        parser.error(f"--repeats must be in 1..{len(SHIFTS)}, got {args.repeats}")

    rng = np.random.default_rng(args.seed)
    for split, size in (("train", args.train_size), ("eval", args.eval_size)):
        image_file, label_file = IDX_FILES[split]
        images = read_idx(args.idx_dir, image_file, rank=3)
        labels = read_idx(args.idx_dir, label_file, rank=1)
        if len(images) != len(labels):
            raise ValueError(
                f"{image_file} has {len(images)} images but {label_file} has {len(labels)} labels."
            )
        indices = stratified_indices(labels, size, rng)
        repeats = args.repeats if split == "train" else 1
        for repeat in range(repeats):
            name = "data" if repeats == 1 else f"data-{repeat:05d}-of-{repeats:05d}"
            path = os.path.join(args.output_dir, split, f"{name}.tfrecord")
            write_split(path, shifted(images[indices], SHIFTS[repeat]), labels[indices])
            print(
                f"{path}: {len(indices)} examples, per class "
                f"{np.bincount(labels[indices]).tolist()}"
            )


if __name__ == "__main__":
    main()
