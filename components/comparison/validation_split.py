"""A validation split held out of the training split, so that val_loss is not the test score.

`ValidationSplit` writes a new Examples artifact: the `train` split less a fraction of its
examples, those examples as a new `validation` split, and every other split (`eval`) copied
file by file, byte for byte. An example goes to `validation` when a hash of its content keyed
by the seed falls below `fraction` (`label_noise.content_digest`, under a key of its own so
that the choice is independent of label noise's): no shuffle or global state, the same examples
for the same data in every run however ExampleGen ordered their features, and scalable with
the Beam runner. The split is therefore close to, not exactly, `fraction` of the examples;
the counts are recorded on the output artifact as custom properties `validation_fraction`,
`validation_seed`, `validation_examples` and `train_examples`.

Trainers then train on `train` and compute val_loss (early stopping, the learning rate
plateau) on `validation` (`TrainArgs(splits=["train"])`, `EvalArgs(splits=["validation"])`),
while the Evaluator keeps scoring the `eval` split, which no Trainer reads.

Example:

    held_out = ValidationSplit(examples=example_gen.outputs["examples"], fraction=0.1)
    trainer = tfx.components.Trainer(
        examples=held_out.outputs["split_examples"],
        train_args=tfx.proto.TrainArgs(splits=["train"]),
        eval_args=tfx.proto.EvalArgs(splits=["validation"]), ...)
"""

from __future__ import annotations

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

from components.comparison.label_noise import (
    GZIP_TFRECORDS,
    check_format,
    check_seed,
    content_digest,
    copy_splits,
    read_counts,
    read_records,
    uniform_draw,
    write_counts,
)

VALIDATION = "validation"
COUNTS_FILE = "validation_counts.json"


class HeldOut:
    """Whether a serialized tf.Example goes to the validation split, deterministically.

    Args:
        fraction: the share of examples held out, in (0, 1).
        seed: an integer >= 0; with the example's content it decides.

    Example:

    >>> held_out = HeldOut(fraction=0.1, seed=0)
    >>> held_out(example.SerializeToString())
    False
    """

    def __init__(self, fraction: float, seed: int = 0):
        check_split_settings(fraction, seed)
        self.fraction = float(fraction)
        self.seed = seed
        self.key = f"{VALIDATION}:{seed}"

    def __call__(self, record: bytes) -> bool:
        digest = content_digest(tf.train.Example.FromString(record), self.key)
        return uniform_draw(digest) < self.fraction


def check_split_settings(fraction: float, seed: int) -> None:
    """The parameter checks of `ValidationSplit`, made when it is built and when it runs."""
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
        raise ValueError(f"validation_fraction must be a number in (0, 1), got {fraction!r}.")
    check_seed(seed)


class ValidationSplitExecutor(base_beam_executor.BaseBeamExecutor):
    """Splits `train` into `train` and `validation` with Beam and copies the other splits."""

    def Do(self, input_dict, output_dict, exec_properties) -> None:
        self._log_startup(input_dict, output_dict, exec_properties)
        source = artifact_utils.get_single_instance(input_dict["examples"])
        output = artifact_utils.get_single_instance(output_dict["split_examples"])
        held_out = HeldOut(exec_properties["fraction"], exec_properties["seed"])
        split = exec_properties["split"]
        splits = artifact_utils.decode_split_names(source.split_names)
        if split not in splits or VALIDATION in splits:
            raise ValueError(
                f"ValidationSplit cuts a {VALIDATION!r} split out of {split!r}: the examples "
                f"need {split!r} and no {VALIDATION!r} split (splits: {', '.join(splits)})."
            )
        check_format(source, "ValidationSplit")
        output.split_names = artifact_utils.encode_split_names([*splits, VALIDATION])
        copy_splits(source, output, [name for name in splits if name != split])
        counts_path = os.path.join(self._get_tmp_dir(), COUNTS_FILE)
        with self._make_beam_pipeline() as pipeline:
            decided = read_records(pipeline, source, split) | "Decide" >> beam.Map(
                lambda record: (held_out(record), record)
            )
            kept, validation = decided | "Partition" >> beam.Partition(
                lambda pair, _: int(pair[0]), 2
            )
            for name, part in ((split, kept), (VALIDATION, validation)):
                _ = (
                    part
                    | f"Records{name}" >> beam.Map(lambda pair: pair[1])
                    | f"Write{name}"
                    >> write_split.WriteSplit(
                        artifact_utils.get_split_uri([output], name), GZIP_TFRECORDS
                    )
                )
            write_counts(decided | "HeldOut" >> beam.Map(lambda pair: pair[0]), counts_path)
        validation_examples, examples = read_counts(counts_path)
        if not 0 < validation_examples < examples:
            raise ValueError(
                f"validation_fraction {held_out.fraction} of the {examples} {split!r} examples "
                f"held out {validation_examples}: both splits need examples; change the "
                f"fraction."
            )
        examples_utils.set_file_format(output, GZIP_TFRECORDS)
        examples_utils.set_payload_format(output, example_gen_pb2.FORMAT_TF_EXAMPLE)
        output.set_float_custom_property("validation_fraction", held_out.fraction)
        output.set_int_custom_property("validation_seed", held_out.seed)
        output.set_int_custom_property("validation_examples", validation_examples)
        output.set_int_custom_property("train_examples", examples - validation_examples)


class ValidationSplitSpec(types.ComponentSpec):
    """Input, parameters and output of `ValidationSplit`."""

    PARAMETERS = {
        "fraction": ExecutionParameter(type=float),
        "seed": ExecutionParameter(type=int),
        "split": ExecutionParameter(type=str),
    }
    INPUTS = {
        "examples": ChannelParameter(type=standard_artifacts.Examples),
        "schema": ChannelParameter(type=standard_artifacts.Schema, optional=True),
    }
    OUTPUTS = {"split_examples": ChannelParameter(type=standard_artifacts.Examples)}


class ValidationSplit(base_beam_component.BaseBeamComponent):
    """Holds a fraction of one split's examples out as a `validation` split; copies the others.

    Args:
        examples: a channel of Examples (gzipped TFRecords of tf.Examples, as ExampleGen and
            Transform write them) without a `validation` split.
        schema: the validated schema: with it, the split waits for the validation gate (it
            does not read it).
        fraction: the share of `split`'s examples held out, in (0, 1).
        seed: an integer >= 0 that picks them, with their content.
        split: the split cut in two (`train`).
    """

    SPEC_CLASS = ValidationSplitSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(ValidationSplitExecutor)

    def __init__(
        self,
        examples: types.BaseChannel,
        fraction: float,
        seed: int = 0,
        split: str = "train",
        schema: types.BaseChannel | None = None,
    ):
        check_split_settings(fraction, seed)
        if not isinstance(split, str) or not split or split == VALIDATION:
            raise ValueError(
                f"split must name the split to cut, not {VALIDATION!r}, got {split!r}."
            )
        super().__init__(
            spec=ValidationSplitSpec(
                examples=examples,
                schema=schema,
                fraction=float(fraction),
                seed=seed,
                split=split,
                split_examples=types.Channel(type=standard_artifacts.Examples),
            )
        )
