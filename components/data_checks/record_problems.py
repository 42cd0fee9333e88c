"""What is wrong with a tf.Example, for what TFDV's statistics cannot see.

TFDV tells an image from other bytes only by its first bytes, and only for a feature of at
least 100 values, mostly images (`StatsOptions(enable_semantic_domain_stats=True)` and a
schema `image_domain`); it does not decode, so it never sees an image of the wrong size or
number of channels, and it names no record. `chunk_problems` decodes each image as the Trainer
does (`tf.io.decode_png`) and looks at each float:

* the image feature (`image_key`): missing, not exactly one bytes value, bytes that do not
  decode as an image, or an image whose height, width or channels differ from `image_shape`;
* every float feature: NaN or infinite values.

A chunk's images are decoded in one graph call; only a chunk with an undecodable image is
decoded again image by image, to find it. The record check
(`components/data_checks/record_check.py`) runs this over every record, in Beam.

Example:

    examples = [tf.train.Example.FromString(record) for record in records]
    for problems in chunk_problems(examples, image_key="image", image_shape=(28, 28, 1)):
        print(problems)  # [] or e.g. [("image", "have no image", "")]
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import tensorflow as tf

from trainer.op_errors import without_graph_dump

NOT_AN_IMAGE = "hold bytes that do not decode as an image"


def check_image_shape(image_key: str, image_shape) -> None:
    """An image key needs the (height, width, channels) its images must have."""
    if image_key and (image_shape is None or len(image_shape) != 3):
        raise ValueError(
            f"image_shape must be (height, width, channels) for image_key {image_key!r}, "
            f"got {image_shape!r}."
        )


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


def _shape(shape) -> str:
    """(28, 28, 1) as 28x28x1, as --image-shape writes it."""
    return "x".join(str(size) for size in shape)
