"""TFX's ImportSchemaGen, its cache keyed by the schema file's content, not only its path.

TFX caches a step on its inputs and execution properties; ImportSchemaGen's only property is
the schema file's path, so with `--enable-cache` a schema edited in place was never imported
again. `ContentKeyedImportSchemaGen` adds the file's SHA-256, computed when the pipeline is
built, as a second property: changed bytes make a new cache key, unchanged bytes keep the
cache hit. The executor imports the bytes it checked against that digest, so the schema used
is the one the cache key names; a file changed between building and running stops the step.

A file the building machine cannot read (a path inside the image, or a bucket without
credentials, when compiling for Vertex AI or Kubeflow) has no digest, and a warning says so:
its cache is keyed by its path, as TFX's own.

Example:

    schema_gen = ContentKeyedImportSchemaGen(schema_file="data/schema.pbtxt").with_id(
        "ImportSchemaGen")
"""

from __future__ import annotations

import hashlib
import os

import tensorflow as tf
from absl import logging
from google.protobuf import text_format
from tensorflow_metadata.proto.v0 import schema_pb2
from tfx import types
from tfx.components.schema_gen import executor as schema_gen_executor
from tfx.dsl.components.base import base_component, base_executor, executor_spec
from tfx.dsl.io import fileio
from tfx.types import artifact_utils, standard_artifacts, standard_component_specs
from tfx.types.component_spec import ExecutionParameter

DIGEST_KEY = "schema_sha256"


class SchemaChangedError(RuntimeError):
    """The schema file changed between building the pipeline and running it."""


def content_digest(path: str) -> str:
    """The SHA-256 of the file at `path`, in hex; `""` when this machine cannot read it."""
    try:
        with fileio.open(path, "rb") as file:
            return hashlib.sha256(file.read()).hexdigest()
    except (tf.errors.OpError, OSError) as error:
        logging.warning(
            "The schema file %s cannot be read here (%s): its cache is keyed by its path only.",
            path,
            type(error).__name__,
        )
        return ""


class ContentKeyedImportSchemaGenSpec(standard_component_specs.ImportSchemaGenSpec):
    """ImportSchemaGen's spec, and the schema file's digest."""

    PARAMETERS = {
        **standard_component_specs.ImportSchemaGenSpec.PARAMETERS,
        DIGEST_KEY: ExecutionParameter(type=str),
    }


class ContentKeyedImportSchemaExecutor(base_executor.BaseExecutor):
    """Copies the schema file into the `schema` artifact, if it has the digest it was built
    with."""

    def Do(self, input_dict, output_dict, exec_properties) -> None:
        path = exec_properties[standard_component_specs.SCHEMA_FILE_KEY]
        with fileio.open(path, "rb") as file:
            content = file.read()
        expected = exec_properties.get(DIGEST_KEY)
        actual = hashlib.sha256(content).hexdigest()
        if expected and actual != expected:
            raise SchemaChangedError(
                f"The schema file {path} changed after the pipeline was built (SHA-256 "
                f"{expected[:12]}... then, {actual[:12]}... now): run the pipeline again."
            )
        try:
            text_format.Parse(content.decode("utf-8"), schema_pb2.Schema())
        except (text_format.ParseError, UnicodeDecodeError) as error:
            raise ValueError(
                f"The schema file {path} is not a text Schema proto: {error}"
            ) from None
        output = artifact_utils.get_single_uri(output_dict[standard_component_specs.SCHEMA_KEY])
        # The output folder exists under TFX's own launchers, not under KFP's (kfp.local).
        fileio.makedirs(output)
        with fileio.open(os.path.join(output, schema_gen_executor.DEFAULT_FILE_NAME), "wb") as file:
            file.write(content)


class ContentKeyedImportSchemaGen(base_component.BaseComponent):
    """Imports the schema file `schema_file`; reruns under the cache when its bytes change.

    Args:
        schema_file: the schema (a text `Schema` proto), local or a URI.
    """

    SPEC_CLASS = ContentKeyedImportSchemaGenSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(ContentKeyedImportSchemaExecutor)

    def __init__(self, schema_file: str):
        super().__init__(
            spec=ContentKeyedImportSchemaGenSpec(
                schema_file=schema_file,
                schema_sha256=content_digest(schema_file),
                schema=types.Channel(type=standard_artifacts.Schema),
            )
        )
