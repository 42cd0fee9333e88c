"""TFX's ImportExampleGen, reading each input file itself so that a bad file is named.

The stock executor reads the splits with Beam's `ReadFromTFRecord` and parses each record with
`tf.train.Example.FromString`. A file cut short then fails with Beam's "Not a valid TFRecord.
Fewer than N bytes: <hex dump>", and a record that is not a tf.Example with protobuf's "Error
parsing message"; neither names the file or the record. `CheckedImportExampleGen` reads each
matched file in a Beam task of its own and stops with an `UnreadableRecordsError` that names
the file and the record's index: a file that ends inside a record or fails its checksums, a
record that does not parse as a tf.train.Example, a split pattern that matches no file.

Example:

    example_gen = CheckedImportExampleGen(input_base="/data/images").with_id("ImportExampleGen")
"""

from __future__ import annotations

import os
from typing import Any, Iterator

import apache_beam as beam
import tensorflow as tf
from google.protobuf import message
from tfx import v1 as tfx
from tfx.components.example_gen.import_example_gen import executor as import_executor
from tfx.dsl.components.base import executor_spec
from tfx.dsl.io import fileio
from tfx.proto import example_gen_pb2
from tfx.types import standard_component_specs

from trainer.op_errors import without_graph_dump


class UnreadableRecordsError(ValueError):
    """An input file cannot be read as TFRecords of tf.Examples; the message says where."""


def read_examples(path: str) -> Iterator[tf.train.Example]:
    """The tf.Examples of the uncompressed TFRecord file at `path`, in order.

    Raises:
        UnreadableRecordsError: the file is cut short or damaged, or a record is not a
            serialized tf.train.Example; the message names the file and the record.
    """
    records = iter(tf.data.TFRecordDataset(path))
    index = 0
    while True:
        try:
            record = next(records)
        except StopIteration:
            return
        except tf.errors.DataLossError as error:
            raise UnreadableRecordsError(
                f"{path}: record {index} (counting from 0) cannot be read: the file is cut "
                f"short or damaged ({without_graph_dump(error.message).strip()}); the {index} "
                f"records before it are readable."
            ) from None
        try:
            yield tf.train.Example.FromString(record.numpy())
        except message.DecodeError as error:
            raise UnreadableRecordsError(
                f"{path}: record {index} (counting from 0) is not a serialized "
                f"tf.train.Example ({error})."
            ) from None
        index += 1


@beam.ptransform_fn
@beam.typehints.with_input_types(beam.Pipeline)
@beam.typehints.with_output_types(tf.train.Example)
def _read_checked_examples(
    pipeline: beam.Pipeline, exec_properties: dict[str, Any], split_pattern: str
) -> beam.pvalue.PCollection:
    """The tf.Examples of the files `split_pattern` matches under the input base."""
    payload_format = exec_properties.get(standard_component_specs.OUTPUT_DATA_FORMAT_KEY)
    if payload_format != example_gen_pb2.FORMAT_TF_EXAMPLE:
        raise ValueError(
            f"CheckedImportExampleGen imports tf.Examples only; the payload format is "
            f"{example_gen_pb2.PayloadFormat.Name(payload_format)}."
        )
    pattern = os.path.join(exec_properties[standard_component_specs.INPUT_BASE_KEY], split_pattern)
    files = sorted(fileio.glob(pattern))
    if not files:
        raise UnreadableRecordsError(f"{pattern} matches no file: the split has no data.")
    return pipeline | "Files" >> beam.Create(files) | "Read" >> beam.FlatMap(read_examples)


class CheckedImportExecutor(import_executor.Executor):
    """ImportExampleGen's executor, reading the TFRecord files with `read_examples`."""

    def GetInputSourceToExamplePTransform(self) -> beam.PTransform:
        return _read_checked_examples


class CheckedImportExampleGen(tfx.components.ImportExampleGen):
    """ImportExampleGen (tf.Examples in uncompressed TFRecords) that names a bad file."""

    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(CheckedImportExecutor)
