"""Symmetric label noise: a new Examples artifact whose training labels are partly flipped.

`LabelNoise` rewrites one split (`train` by default) of an Examples artifact: each example's
label is flipped with probability `noise_rate` to one of the other classes, uniformly (never
to its true class). Every other split is copied file by file, byte for byte. The choice is a
hash of the seed and the example's content (its deterministic serialization, features in key
order), so it needs no shuffle or global state, scales with the Beam runner
(`beam_pipeline_args`), and the same seed always flips the same examples to the same labels,
however the examples' writer ordered their features (ExampleGen's order varies between runs).
The number flipped is therefore close to, not exactly, `noise_rate` times the split's size;
the exact count is recorded on the output artifact as custom properties: `label_noise_rate`,
`label_noise_seed`, `labels_flipped` and `examples_in_split`.

The number of classes comes from the schema's int_domain of the label (max + 1), or from
`num_classes`, which takes precedence.

Example:

    noisy = LabelNoise(
        examples=example_gen.outputs["examples"],
        schema=gate.outputs["validated_schema"],
        noise_rate=0.3,
        seed=0,
    )
    trainer = tfx.components.Trainer(examples=noisy.outputs["noisy_examples"], ...)
"""

from __future__ import annotations

import hashlib
import json
import os

import apache_beam as beam
import tensorflow as tf
from tfx import types
from tfx.components.example_gen import write_split
from tfx.components.util import examples_utils
from tfx.dsl.components.base import base_beam_component, base_beam_executor, executor_spec
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils, standard_artifacts
from tfx.types.component_spec import ChannelParameter, ExecutionParameter
from tfx.utils import io_utils

from trainer.inputs import data

GZIP_TFRECORDS = "tfrecords_gzip"
COUNTS_FILE = "label_noise_counts.json"


class LabelFlipper:
    """Flips the label of one serialized tf.Example, deterministically.

    Args:
        noise_rate: probability that an example's label is flipped, in [0, 1).
        seed: an integer >= 0; with the example's content, it decides the flip and the new
            label.
        num_classes: labels are 0..num_classes-1.
        label_key: the integer label feature.

    Example:

    >>> flip = LabelFlipper(noise_rate=0.5, seed=0, num_classes=10, label_key="label")
    >>> record, flipped = flip(example.SerializeToString())
    """

    def __init__(self, noise_rate: float, seed: int, num_classes: int, label_key: str):
        check_noise_settings(noise_rate, seed, label_key)
        check_num_classes(num_classes)
        self.noise_rate = float(noise_rate)
        self.seed = seed
        self.num_classes = num_classes
        self.label_key = label_key

    def __call__(self, record: bytes) -> tuple[bytes, bool]:
        """The record (rewritten only when flipped) and whether its label was flipped."""
        example = tf.train.Example.FromString(record)
        digest = content_digest(example, str(self.seed))
        if uniform_draw(digest) >= self.noise_rate:
            return record, False
        label = self._label(example)
        # A uniform shift in 1..K-1 lands uniformly on the other K-1 classes.
        shift = 1 + int.from_bytes(digest[8:], "big") % (self.num_classes - 1)
        example.features.feature[self.label_key].int64_list.value[:] = [
            (label + shift) % self.num_classes
        ]
        return example.SerializeToString(), True

    def _label(self, example: tf.train.Example) -> int:
        feature = example.features.feature.get(self.label_key)
        values = list(feature.int64_list.value) if feature is not None else []
        if len(values) != 1 or not 0 <= values[0] < self.num_classes:
            raise ValueError(
                f"label_key {self.label_key!r} must hold one integer label in "
                f"0..{self.num_classes - 1} in every example, got {values}."
            )
        return values[0]


def content_digest(example: tf.train.Example, key: str) -> bytes:
    """A 16-byte hash of the example's content keyed by `key`: the same for the same features
    however a writer ordered them (a proto map's entries come in any order), independent for
    different keys."""
    content = example.SerializeToString(deterministic=True)
    return hashlib.blake2b(content, digest_size=16, key=key.encode()).digest()


def uniform_draw(digest: bytes) -> float:
    """A number in [0, 1) from the first 8 bytes of a `content_digest`."""
    return int.from_bytes(digest[:8], "big") / 2**64


def check_noise_settings(noise_rate: float, seed: int, label_key: str) -> None:
    """The parameter checks of `LabelNoise`, made when it is built and again when it runs."""
    if (
        isinstance(noise_rate, bool)
        or not isinstance(noise_rate, (int, float))
        or not 0 <= noise_rate < 1
    ):
        raise ValueError(f"noise_rate must be a number in [0, 1), got {noise_rate!r}.")
    check_seed(seed)
    if not isinstance(label_key, str) or not label_key:
        raise ValueError(f"label_key must be a non-empty string, got {label_key!r}.")


def check_seed(seed: int) -> None:
    """A content hash's seed: an integer >= 0."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}.")


def check_num_classes(num_classes: int) -> None:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}.")


class LabelNoiseExecutor(base_beam_executor.BaseBeamExecutor):
    """Rewrites the noisy split with Beam and copies the others."""

    def Do(self, input_dict, output_dict, exec_properties) -> None:
        self._log_startup(input_dict, output_dict, exec_properties)
        source = artifact_utils.get_single_instance(input_dict["examples"])
        noisy = artifact_utils.get_single_instance(output_dict["noisy_examples"])
        split = exec_properties["split"]
        flipper = LabelFlipper(
            noise_rate=exec_properties["noise_rate"],
            seed=exec_properties["seed"],
            num_classes=_num_classes(input_dict, exec_properties),
            label_key=exec_properties["label_key"],
        )
        splits = artifact_utils.decode_split_names(source.split_names)
        if split not in splits:
            raise ValueError(
                f"split {split!r} is not a split of the examples (splits: {', '.join(splits)})."
            )
        check_format(source, "LabelNoise")
        noisy.split_names = source.split_names
        copy_splits(source, noisy, [name for name in splits if name != split])
        counts_path = os.path.join(self._get_tmp_dir(), COUNTS_FILE)
        with self._make_beam_pipeline() as pipeline:
            flipped = read_records(pipeline, source, split) | "Flip" >> beam.Map(flipper)
            _ = (
                flipped
                | "Records" >> beam.Map(lambda pair: pair[0])
                | "Write"
                >> write_split.WriteSplit(
                    artifact_utils.get_split_uri([noisy], split), GZIP_TFRECORDS
                )
            )
            write_counts(flipped | "Flipped" >> beam.Map(lambda pair: pair[1]), counts_path)
        labels_flipped, examples_in_split = read_counts(counts_path)

        examples_utils.set_file_format(noisy, GZIP_TFRECORDS)
        examples_utils.set_payload_format(noisy, example_gen_pb2.FORMAT_TF_EXAMPLE)
        noisy.set_float_custom_property("label_noise_rate", flipper.noise_rate)
        noisy.set_int_custom_property("label_noise_seed", flipper.seed)
        noisy.set_int_custom_property("labels_flipped", labels_flipped)
        noisy.set_int_custom_property("examples_in_split", examples_in_split)


def read_records(pipeline, examples: types.Artifact, split: str):
    """The serialized records of one split of the Examples `examples`, as a PCollection."""
    return pipeline | f"Read{split}" >> beam.io.ReadFromTFRecord(
        os.path.join(artifact_utils.get_split_uri([examples], split), "*"),
        coder=beam.coders.BytesCoder(),
    )


def copy_splits(source: types.Artifact, target: types.Artifact, names: list[str]) -> None:
    """Copies the split folders `names` of the Examples `source` into `target`, file by file."""
    for name in names:
        io_utils.copy_dir(
            artifact_utils.get_split_uri([source], name),
            artifact_utils.get_split_uri([target], name),
        )


def write_counts(flags, counts_path: str) -> None:
    """Writes `[true flags, all flags]` of the PCollection of bools `flags` to `counts_path`,
    as JSON, once the Beam pipeline runs; `read_counts` reads them back."""
    _ = (
        flags
        | "FlagAndOne" >> beam.Map(lambda flag: (int(flag), 1))
        | "Count" >> beam.CombineGlobally(sum_pairs)
        | "Json" >> beam.Map(lambda counts: json.dumps(list(counts)))
        | "WriteCounts" >> beam.io.WriteToText(counts_path, shard_name_template="")
    )


def read_counts(counts_path: str) -> tuple[int, int]:
    """The `[true flags, all flags]` that `write_counts` wrote."""
    with tf.io.gfile.GFile(counts_path) as file:
        true_flags, all_flags = json.load(file)
    return true_flags, all_flags


def sum_pairs(pairs) -> tuple[int, int]:
    """Column sums of (flipped, one) pairs; (0, 0) for none. Also sums partial sums."""
    return tuple(sum(column) for column in zip(*pairs)) or (0, 0)


def _num_classes(input_dict, exec_properties) -> int:
    if exec_properties.get("num_classes") is not None:
        return exec_properties["num_classes"]
    if not input_dict.get("schema"):
        raise ValueError(
            "LabelNoise needs the number of classes: connect a schema whose label has an "
            "int_domain, or set num_classes."
        )
    schema_uri = artifact_utils.get_single_uri(input_dict["schema"])
    schema = data.load_schema(io_utils.get_only_uri_in_dir(schema_uri))
    return data.schema_num_classes(schema, exec_properties["label_key"])


def check_format(examples: types.Artifact, component: str) -> None:
    """`component` reads gzipped TFRecords of tf.Examples (ExampleGen's and Transform's
    output); anything else is an error naming it."""
    file_format = examples_utils.get_file_format(examples)
    payload_format = examples_utils.get_payload_format(examples)
    if file_format != GZIP_TFRECORDS or payload_format != example_gen_pb2.FORMAT_TF_EXAMPLE:
        raise ValueError(
            f"{component} reads gzipped TFRecords of tf.Examples; the examples at {examples.uri} "
            f"are {file_format} of {example_gen_pb2.PayloadFormat.Name(payload_format)}."
        )


class LabelNoiseSpec(types.ComponentSpec):
    """Inputs, parameters and output of `LabelNoise`."""

    PARAMETERS = {
        "noise_rate": ExecutionParameter(type=float),
        "seed": ExecutionParameter(type=int),
        "label_key": ExecutionParameter(type=str),
        "split": ExecutionParameter(type=str),
        "num_classes": ExecutionParameter(type=int, optional=True),
    }
    INPUTS = {
        "examples": ChannelParameter(type=standard_artifacts.Examples),
        "schema": ChannelParameter(type=standard_artifacts.Schema, optional=True),
    }
    OUTPUTS = {"noisy_examples": ChannelParameter(type=standard_artifacts.Examples)}


class LabelNoise(base_beam_component.BaseBeamComponent):
    """Flips a fraction of one split's labels to other classes; copies the other splits.

    Args:
        examples: a channel of Examples (gzipped TFRecords of tf.Examples, as ExampleGen
            writes them).
        noise_rate: probability that a label is flipped, in [0, 1).
        seed: an integer >= 0 that picks the flipped examples and their new labels.
        schema: a channel of Schema; the label's int_domain gives the number of classes.
        label_key: the integer label feature.
        split: the split to make noisy; the others are copied unchanged.
        num_classes: the number of classes, overriding the schema.
    """

    SPEC_CLASS = LabelNoiseSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(LabelNoiseExecutor)

    def __init__(
        self,
        examples: types.BaseChannel,
        noise_rate: float,
        seed: int,
        schema: types.BaseChannel | None = None,
        label_key: str = "label",
        split: str = "train",
        num_classes: int | None = None,
    ):
        check_noise_settings(noise_rate, seed, label_key)
        if num_classes is not None:
            check_num_classes(num_classes)
        if not isinstance(split, str) or not split:
            raise ValueError(f"split must be a non-empty split name, got {split!r}.")
        if schema is None and num_classes is None:
            raise ValueError("LabelNoise needs a schema or num_classes to know the classes.")
        super().__init__(
            spec=LabelNoiseSpec(
                examples=examples,
                schema=schema,
                noise_rate=float(noise_rate),
                seed=seed,
                label_key=label_key,
                split=split,
                num_classes=num_classes,
                noisy_examples=types.Channel(type=standard_artifacts.Examples),
            )
        )
