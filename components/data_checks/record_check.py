"""A pass over every record of ExampleGen's output, for what TFDV's statistics cannot see.

TFDV tells an image from other bytes only by its first bytes, and only for a feature of at
least 100 values, mostly images (`StatsOptions(enable_semantic_domain_stats=True)` and a
schema `image_domain`); it does not decode, so it never sees an image of the wrong size or
number of channels, and it names no record. `find_bad_records` decodes each image as the
Trainer does (`tf.io.decode_png`) and looks at each float, and names the split, the file, the
records and the feature:

* the image feature (`image_key`): missing, not exactly one bytes value, bytes that do not
  decode as an image, or an image whose height, width or channels differ from `image_shape`;
* every float feature: NaN or infinite values;
* a split without records.

Records are read in chunks of `CHUNK_RECORDS`, and a chunk's images decoded in one graph call;
only a chunk with an undecodable image is decoded again image by image, to find it. On the
sample's 12,000 images the pass takes a few seconds.

Example:

    for bad in find_bad_records(examples, image_key="image", image_shape=(28, 28, 1)):
        print(bad.line())
    # [train] image: 3 of 96 records hold bytes that do not decode as an image (first: Unknown
    #   image file format. ...): records 4, 17, 52 of .../Split-train/data_tfrecord-...gz
"""

from __future__ import annotations

import dataclasses
import os
from typing import Iterator

import numpy as np
import tensorflow as tf
from tfx import v1 as tfx
from tfx.dsl.io import fileio
from tfx.types import artifact_utils

from trainer.inputs import data
from trainer.op_errors import without_graph_dump

# The feature name of a problem of a whole split, as ExampleValidator names its own.
DATASET = "<dataset>"
# Record indices listed per file in a line; the count is always whole.
MAX_LISTED_RECORDS = 10
CHUNK_RECORDS = 1024
NOT_AN_IMAGE = "hold bytes that do not decode as an image"


@dataclasses.dataclass(frozen=True)
class BadRecords:
    """Records of one split that share one problem with one feature.

    Attributes:
        split: the split's name.
        feature: the feature, or `DATASET` for a problem of the whole split.
        problem: what is wrong, completing "N of M records ...".
        records_in_split: how many records the split holds.
        where: each file of the split with the problem, and its records' indices (from 0).
        example: the first such record's own error, if it has one.
    """

    split: str
    feature: str
    problem: str
    records_in_split: int
    where: dict[str, list[int]]
    example: str = ""

    @property
    def count(self) -> int:
        return sum(len(indices) for indices in self.where.values())

    def line(self) -> str:
        """One readable line: split, feature, count, problem, then records by file."""
        if self.feature == DATASET:
            return f"[{self.split}] {DATASET}: {self.problem} ({', '.join(self.where)})"
        example = f" (first: {self.example})" if self.example else ""
        places = "; ".join(
            f"{_listed(indices)} of {path}" for path, indices in self.where.items()
        )
        return (
            f"[{self.split}] {self.feature}: {self.count} of {self.records_in_split} records "
            f"{self.problem}{example}: {'record' if self.count == 1 else 'records'} {places}"
        )


def find_bad_records(
    examples: tfx.dsl.Artifact, image_key: str, image_shape: tuple[int, int, int] | None
) -> list[BadRecords]:
    """Every problem of every split of `examples` (gzipped TFRecords of tf.Examples).

    Args:
        image_key: the PNG image feature the model reads; `""` when it reads none.
        image_shape: (height, width, channels) every image must have, when `image_key` is set.
    """
    if image_key and (image_shape is None or len(image_shape) != 3):
        raise ValueError(
            f"image_shape must be (height, width, channels) for image_key {image_key!r}, "
            f"got {image_shape!r}."
        )
    found = []
    for split in artifact_utils.decode_split_names(examples.split_names):
        split_uri = artifact_utils.get_split_uri([examples], split)
        found += split_problems(split, split_uri, image_key, image_shape)
    return found


def split_problems(
    split: str, split_uri: str, image_key: str, image_shape: tuple[int, int, int] | None
) -> list[BadRecords]:
    """The problems of the split whose TFRecord files are in the folder `split_uri`."""
    files = sorted(fileio.glob(os.path.join(split_uri, "*")))
    where_by_problem: dict[tuple[str, str], dict[str, list[int]]] = {}
    first_errors: dict[tuple[str, str], str] = {}
    records = 0
    for path in files:
        for chunk in _record_chunks(path):
            examples = [tf.train.Example.FromString(record) for record in chunk]
            for offset, problems in enumerate(chunk_problems(examples, image_key, image_shape)):
                for feature, problem, error in problems:
                    where = where_by_problem.setdefault((feature, problem), {})
                    where.setdefault(path, []).append(records + offset)
                    first_errors.setdefault((feature, problem), error)
            records += len(chunk)
    if records == 0:
        where = {path: [] for path in files} or {split_uri: []}
        return [BadRecords(split, DATASET, "the split holds no records", 0, where)]
    return [
        BadRecords(split, feature, problem, records, where, first_errors[(feature, problem)])
        for (feature, problem), where in where_by_problem.items()
    ]


def chunk_problems(
    examples: list[tf.train.Example], image_key: str, image_shape: tuple[int, int, int] | None
) -> list[list[tuple[str, str, str]]]:
    """For each example, its problems: (feature, problem, the record's own error or "")."""
    problems = [list(float_problems(example)) for example in examples]
    if image_key:
        for found, image in zip(problems, image_problems(examples, image_key, image_shape)):
            if image is not None:
                found.insert(0, (image_key, *image))
    return problems


def float_problems(example: tf.train.Example) -> Iterator[tuple[str, str, str]]:
    """(feature, problem, "") for each float feature of `example` with NaN or inf values."""
    for name, feature in sorted(example.features.feature.items()):
        if feature.HasField("float_list"):
            values = np.asarray(feature.float_list.value, dtype=np.float32)
            if not np.isfinite(values).all():
                yield name, "hold NaN or infinite values", ""


def image_problems(
    examples: list[tf.train.Example], image_key: str, image_shape: tuple[int, int, int]
) -> list[tuple[str, str] | None]:
    """For each example, (problem, error) of its image, or `None` when it fits `image_shape`."""
    values = [_image_bytes(example, image_key) for example in examples]
    decoded = iter(_decoded_shapes([value for value in values if isinstance(value, bytes)]))
    problems = []
    for value in values:
        if not isinstance(value, bytes):
            problems.append((value, ""))
            continue
        shape = next(decoded)
        if isinstance(shape, str):
            problems.append((NOT_AN_IMAGE, shape))
        elif shape != tuple(image_shape):
            problems.append((f"are {_shape(shape)} images, not {_shape(image_shape)}", ""))
        else:
            problems.append(None)
    return problems


def _image_bytes(example: tf.train.Example, image_key: str) -> bytes | str:
    """The example's one image value, or (a str) what is wrong with its image feature."""
    feature = example.features.feature.get(image_key)
    kind = feature.WhichOneof("kind") if feature is not None else None
    if kind is None:
        return "have no image"
    if kind != "bytes_list":
        return f"hold {kind} values, not the bytes of an image"
    if len(feature.bytes_list.value) != 1:
        return f"hold {len(feature.bytes_list.value)} values, not one image"
    return feature.bytes_list.value[0]


def _decoded_shapes(images: list[bytes]) -> list[tuple[int, ...] | str]:
    """Each image's decoded (height, width, channels), or (a str) why it does not decode.

    All at once in one graph call; image by image only when one of them fails.
    """
    if not images:
        return []
    try:
        sizes = _decode_shapes(tf.constant(images))
        return list(zip(*(size.numpy().tolist() for size in sizes)))
    except tf.errors.InvalidArgumentError:
        shapes = []
        for image in images:
            try:
                shapes.append(tuple(tf.io.decode_png(image, channels=0).shape))
            except tf.errors.InvalidArgumentError as error:
                shapes.append(without_graph_dump(error.message).strip())
        return shapes


@tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
def _decode_shapes(images: tf.Tensor) -> list[tf.Tensor]:
    """Heights, widths and channels of the decoded images (three [batch] tensors)."""
    # Three scalars rather than one shape vector: TensorFlow's type inference warns about a
    # shape tensor in a map_fn's output.
    return tf.map_fn(
        lambda image: tf.unstack(tf.shape(tf.io.decode_png(image, channels=0)), num=3),
        images,
        fn_output_signature=[tf.TensorSpec([], tf.int32)] * 3,
    )


def _record_chunks(path: str) -> Iterator[list[bytes]]:
    compression = data.tfrecord_compression(path)
    for chunk in tf.data.TFRecordDataset(path, compression_type=compression).batch(
        CHUNK_RECORDS
    ):
        yield chunk.numpy().tolist()


def _listed(indices: list[int]) -> str:
    shown = ", ".join(str(index) for index in indices[:MAX_LISTED_RECORDS])
    more = len(indices) - MAX_LISTED_RECORDS
    return f"{shown} and {more} more" if more > 0 else shown


def _shape(shape) -> str:
    """(28, 28, 1) as 28x28x1, as --image-shape writes it."""
    return "x".join(str(size) for size in shape)
