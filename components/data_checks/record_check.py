"""RecordCheck: a Beam pass over every record of ExampleGen's output, for what TFDV cannot see.

Each file of each split is read in Beam tasks of its own, in chunks of `CHUNK_RECORDS` records
whose problems `record_problems.chunk_problems` finds: images that do not decode to
`image_shape`, a missing or malformed image feature, NaN or infinite floats. A gzipped TFRecord
file cannot be split, so under a DirectRunner with N workers each file is checked in N parts:
every part reads the whole file, and parses and decodes every Nth chunk (reading is cheap beside
decoding). ExampleGen writes one file per split there, so this is what spreads the check over
the workers; elsewhere (Dataflow) one task per file, over ExampleGen's many shards. What a task
finds (`record_findings.Findings`) is combined across tasks in memory that does not grow with
the records: per kind of problem, its count per file and the first `NAMED_RECORDS` records
named. A split without records is a problem of its own. The pass runs with the pipeline's Beam
arguments: in the runner's process by default (`configs.BEAM_PIPELINE_ARGS`), in worker
processes with `--direct_running_mode=multi_processing`, on Dataflow's workers with
`--runner=DataflowRunner`. No step gathers the records: memory does not grow with them.

Outputs:

- `report` (a `RecordCheckReport`, components/data_checks/artifact.py): `record_check.json`
  (records and bad records per split, and every problem, its first records named;
  `RecordCheckResult`), and as custom properties `records`, `bad_records`,
  `bad_records_by_split_and_kind` (JSON) and `named_bad_records` (JSON: one line per problem).
  The `ValidationGate` decides on it.
- `clean_examples`, only with `write_clean_examples`: the same splits with every bad record left
  out (gzipped TFRecords, as ExampleGen writes), with custom properties `records_left_out` and
  `records_left_out_by_split_and_kind` (JSON). StatisticsGen and everything downstream then
  read these (`pipelines/stages/data.py`, `--max-bad-records`).

Example:

    record_check = RecordCheck(examples=example_gen.outputs["examples"], image_key="image",
                               image_shape=(28, 28, 1))
    gate = ValidationGate(..., record_check=record_check.outputs["report"], ...)
    # Or, outside a pipeline, under two worker processes:
    for bad in find_bad_records(examples, "image", (28, 28, 1),
                                ["--direct_running_mode=multi_processing",
                                 "--direct_num_workers=2"]):
        print(bad.line())
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
import tensorflow as tf
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions
from tfx import types
from tfx.components.util import examples_utils
from tfx.dsl.components.base import base_beam_component, base_beam_executor, executor_spec
from tfx.dsl.io import fileio
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils, standard_artifacts
from tfx.types.component_spec import ChannelParameter, ExecutionParameter
from tfx.utils import io_utils

from components.data_checks.artifact import RecordCheckReport
from components.data_checks.record_findings import (
    BadRecords,
    Findings,
    RecordCheckResult,
    merge_findings,
)
from components.data_checks.record_problems import check_image_shape, chunk_problems
from trainer.inputs import data

CHUNK_RECORDS = 1024
REPORT_FILE = "record_check.json"
FINDINGS_FILE = "findings.json"
GZIP_TFRECORDS = "tfrecords_gzip"
# The clean examples' file names, as ExampleGen's (data_tfrecord-00000-of-00001.gz).
CLEAN_FILE_PREFIX = "data_tfrecord"
FINDINGS_TAG = "findings"


def split_files(examples: types.Artifact) -> dict[str, list[str]]:
    """Each split of `examples` and its files, sorted."""
    return {
        split: sorted(
            fileio.glob(os.path.join(artifact_utils.get_split_uri([examples], split), "*"))
        )
        for split in artifact_utils.decode_split_names(examples.split_names)
    }


class CheckFile(beam.DoFn):
    """Checks one part of a file, (split, path, part, parts): its chunks number part,
    part + parts, ...; yields their clean records (when asked) and, tagged `FINDINGS_TAG`,
    what it found."""

    def __init__(self, image_key: str, image_shape, yield_clean: bool):
        self.image_key = image_key
        self.image_shape = image_shape
        self.yield_clean = yield_clean

    def process(self, element: tuple[str, str, int, int]) -> Iterator[Any]:
        split, path, part, parts = element
        findings = Findings(records={split: 0})
        for first_index, chunk in _record_chunks(path, part, parts):
            examples = [tf.train.Example.FromString(record) for record in chunk]
            problems = chunk_problems(examples, self.image_key, self.image_shape)
            findings.add(split, path, first_index, problems)
            if self.yield_clean:
                yield from (record for record, found in zip(chunk, problems) if not found)
        yield beam.pvalue.TaggedOutput(FINDINGS_TAG, findings)


def parts_per_file(options: PipelineOptions) -> int:
    """The workers of a DirectRunner that runs several (each file is checked in as many
    parts); 1 for any other."""
    direct = options.view_as(DirectOptions)
    if direct.direct_running_mode == "in_memory":
        return 1
    return direct.direct_num_workers or os.cpu_count() or 1


@beam.ptransform_fn
def CheckRecords(
    root: beam.pvalue.PBegin,
    files: dict[str, list[str]],
    image_key: str,
    image_shape,
    findings_path: str,
    clean_split_uris: dict[str, str] | None = None,
) -> beam.pvalue.PDone:
    """Checks every file of `files` (split -> files), in `parts_per_file` parts each, writes
    the merged `Findings` as JSON to `findings_path` and, with `clean_split_uris` (split ->
    folder), each split's clean records there."""
    parts = parts_per_file(root.pipeline.options)
    found = []
    for split, paths in files.items():
        tasks = [(split, path, part, parts) for path in paths for part in range(parts)]
        checked = (
            root
            | f"Files[{split}]" >> beam.Create(tasks)
            | f"Check[{split}]"
            >> beam.ParDo(
                CheckFile(image_key, image_shape, clean_split_uris is not None)
            ).with_outputs(FINDINGS_TAG, main="clean")
        )
        found.append(checked[FINDINGS_TAG])
        if clean_split_uris is not None:
            _ = checked.clean | f"WriteClean[{split}]" >> beam.io.WriteToTFRecord(
                os.path.join(clean_split_uris[split], CLEAN_FILE_PREFIX), file_name_suffix=".gz"
            )
    return (
        found
        | "AllSplits" >> beam.Flatten()
        | "Merge" >> beam.CombineGlobally(merge_findings)
        | "Json" >> beam.Map(lambda findings: findings.to_json())
        | "WriteFindings" >> beam.io.WriteToText(findings_path, shard_name_template="")
    )


def run_check(
    pipeline: beam.Pipeline,
    examples: types.Artifact,
    image_key: str,
    image_shape,
    work_dir: str,
    clean_examples: types.Artifact | None = None,
) -> RecordCheckResult:
    """Runs `pipeline` with the check of every record of `examples` (and, given
    `clean_examples`, writes their clean records there); returns what it found. The Beam
    workers write their findings to `work_dir`, a folder they can reach."""
    check_image_shape(image_key, image_shape)
    files = split_files(examples)
    if not files:
        raise ValueError(f"The examples at {examples.uri} have no splits to check.")
    clean_uris = None
    if clean_examples is not None:
        clean_uris = {
            split: artifact_utils.get_split_uri([clean_examples], split) for split in files
        }
    findings_path = os.path.join(work_dir, FINDINGS_FILE)
    with pipeline:
        _ = pipeline | "CheckRecords" >> CheckRecords(
            files, image_key, image_shape, findings_path, clean_uris
        )
    findings = Findings.from_json(io_utils.read_string_file(findings_path))
    named = {
        split: paths or [artifact_utils.get_split_uri([examples], split)]
        for split, paths in files.items()
    }
    return RecordCheckResult.from_findings(findings, named)


def find_bad_records(
    examples: types.Artifact,
    image_key: str,
    image_shape,
    beam_pipeline_args: list[str] | tuple[str, ...] = (),
) -> list[BadRecords]:
    """Every problem of every split of `examples` (gzipped TFRecords of tf.Examples), the
    check run in a Beam pipeline of its own with `beam_pipeline_args` (its workers on this
    machine: they write to a local temporary folder).

    Args:
        image_key: the PNG image feature the model reads; `""` when it reads none.
        image_shape: (height, width, channels) every image must have, when `image_key` is set.
    """
    pipeline = beam.Pipeline(argv=list(beam_pipeline_args))
    with tempfile.TemporaryDirectory() as work_dir:
        return run_check(pipeline, examples, image_key, image_shape, work_dir).problems


class RecordCheckExecutor(base_beam_executor.BaseBeamExecutor):
    """Checks every record with the pipeline's Beam arguments; writes the report and, when
    asked, the clean examples."""

    def Do(self, input_dict, output_dict, exec_properties) -> None:
        self._log_startup(input_dict, output_dict, exec_properties)
        examples = artifact_utils.get_single_instance(input_dict["examples"])
        report = artifact_utils.get_single_instance(output_dict["report"])
        clean = output_dict.get("clean_examples")
        clean = artifact_utils.get_single_instance(clean) if clean else None
        if clean is not None:
            clean.split_names = examples.split_names
        result = run_check(
            self._make_beam_pipeline(),
            examples,
            exec_properties["image_key"],
            json.loads(exec_properties["image_shape"]),
            self._get_tmp_dir(),
            clean,
        )
        io_utils.write_string_file(os.path.join(report.uri, REPORT_FILE), result.to_json())
        report.set_int_custom_property("records", sum(result.records.values()))
        report.set_int_custom_property("bad_records", result.bad_record_count)
        report.set_string_custom_property(
            "bad_records_by_split_and_kind", json.dumps(result.counts_by_split_and_kind())
        )
        report.set_string_custom_property(
            "named_bad_records", json.dumps([bad.line() for bad in result.problems])
        )
        if clean is not None:
            _describe_clean_examples(clean, examples, result)


def _describe_clean_examples(
    clean: types.Artifact, source: types.Artifact, result: RecordCheckResult
) -> None:
    """The clean examples' formats and properties: ExampleGen's, and what was left out."""
    examples_utils.set_file_format(clean, GZIP_TFRECORDS)
    examples_utils.set_payload_format(clean, example_gen_pb2.FORMAT_TF_EXAMPLE)
    for name in ("span", "version"):
        if source.has_property(name):
            setattr(clean, name, getattr(source, name))
    clean.set_int_custom_property("records_left_out", result.bad_record_count)
    clean.set_string_custom_property(
        "records_left_out_by_split_and_kind", json.dumps(result.counts_by_split_and_kind())
    )


def _record_chunks(path: str, part: int, parts: int) -> Iterator[tuple[int, list[bytes]]]:
    """(index of its first record, its records) of every chunk number part, part + parts, ...
    of the TFRecord file `path`."""
    compression = data.tfrecord_compression(path)
    chunks = tf.data.TFRecordDataset(path, compression_type=compression).batch(CHUNK_RECORDS)
    for number, chunk in enumerate(chunks.shard(parts, part)):
        yield (number * parts + part) * CHUNK_RECORDS, chunk.numpy().tolist()


class RecordCheckSpec(types.ComponentSpec):
    """Input, parameters and outputs of `RecordCheck`."""

    PARAMETERS = {
        "image_key": ExecutionParameter(type=str),
        "image_shape": ExecutionParameter(type=str),
    }
    INPUTS = {"examples": ChannelParameter(type=standard_artifacts.Examples)}
    OUTPUTS = {
        "report": ChannelParameter(type=RecordCheckReport),
        "clean_examples": ChannelParameter(type=standard_artifacts.Examples, optional=True),
    }


class RecordCheck(base_beam_component.BaseBeamComponent):
    """Checks every record of `examples`; optionally writes them again without the bad ones.

    Args:
        examples: a channel of Examples (gzipped TFRecords of tf.Examples, as ExampleGen
            writes them).
        image_key: the PNG image feature the model reads; `""` when it reads none.
        image_shape: (height, width, channels) every image must decode to, with `image_key`.
        write_clean_examples: also output `clean_examples`, every bad record left out.
    """

    SPEC_CLASS = RecordCheckSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(RecordCheckExecutor)

    def __init__(
        self,
        examples: types.BaseChannel,
        image_key: str = "",
        image_shape: tuple[int, int, int] | None = None,
        write_clean_examples: bool = False,
    ):
        check_image_shape(image_key, image_shape)
        super().__init__(
            spec=RecordCheckSpec(
                examples=examples,
                image_key=image_key,
                image_shape=json.dumps(list(image_shape) if image_key else None),
                report=types.Channel(type=RecordCheckReport),
                clean_examples=(
                    types.Channel(type=standard_artifacts.Examples)
                    if write_clean_examples
                    else None
                ),
            )
        )
