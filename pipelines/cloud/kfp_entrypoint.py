"""The image's container entrypoint on Kubeflow Pipelines: TFX's, once the executor input is
fixed for what the open-source driver and `kfp.local` send.

    python -m pipelines.cloud.kfp_entrypoint --executor_class_path CLASS \\
        --json_serialized_invocation_args '{{$}}' --json_serialized_inputs_spec_args SPEC

TFX's entrypoint (`tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor`) rebuilds
each input artifact's Python class from the type sent with it. Vertex AI sends TFX's own types
(`instanceSchema: "title: tfx.Examples ..."`); the others do not:

* `kfp.local` hands an upstream output downstream as `schemaTitle: system.Artifact`, and TFX
  fails with `ImportError: Could not import system.Artifact`;
* the open-source driver sends artifacts it resolved from ML Metadata with an empty
  `instanceSchema` (TFX: `'NoneType' object has no attribute 'get'`), a `system.*` title, or
  no type at all.

`fix_executor_input` gives each such input artifact the type its component declares: the
inputs spec, which KubeflowV2DagRunner passes as `--json_serialized_inputs_spec_args` with
pipeline spec 2.1. It follows sky-uk/kfp-operator's `provider-service/kfp/tfx-patch`
(`tfx_kfp_v2_shim/_patches.py`, patches 2 and 4, tested there with TFX 1.15-1.17), applied to
the message before TFX reads it instead of by patching TFX's functions. The other patches there
are not needed here: this image's outputs keep TFX's Format-Serving layout (patch 5 breaks
Vertex AI), and TFX 1.21 still exports KubeflowV2DagRunner (patch 6).

It also leaves out every input artifact marked `NO_MODEL_PROPERTY` (the PushedBaseline
component's "no baseline", `components/release/no_model.py`): the Evaluator and the
SharpnessProbe then get no baseline, as from a resolver that found nothing.

Once TFX has written the executor output (its last step), the process ends with `os._exit(0)`,
as kfp-operator's patch 8 does (there against a crash in the C++ destructors at interpreter
shutdown): the shutdown of a process that loaded TensorFlow, TFX and Beam took 15 s per task
here (2 shared cores at load average 15; 1.4 s with `os._exit`). Everything else is TFX's
entrypoint, unchanged.
"""

from __future__ import annotations

import os
import sys

import yaml
from absl import app, logging
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2
from tfx.orchestration.kubeflow.v2.container import kubeflow_v2_run_executor

from components.release.no_model import PROPERTY as NO_MODEL_PROPERTY


def fix_executor_input(
    executor_input: pipeline_spec_pb2.ExecutorInput,
    inputs_spec: pipeline_spec_pb2.ComponentInputsSpec | None,
) -> list[str]:
    """Fixes `executor_input`'s input artifacts in place (see the module's docstring); returns
    a line per change."""
    changes = []
    for key, artifact_list in executor_input.inputs.artifacts.items():
        kept = []
        for artifact in artifact_list.artifacts:
            if _marked_no_model(artifact):
                changes.append(f"{key}: {artifact.uri} stands for no model; left out")
                continue
            declared = inputs_spec.artifacts.get(key) if inputs_spec is not None else None
            if declared is not None and not _has_tfx_type(artifact.type):
                changes.append(f"{key}: type {_describe(artifact.type)} read as declared")
                artifact.type.CopyFrom(declared.artifact_type)
            kept.append(artifact)
        del artifact_list.artifacts[:]
        artifact_list.artifacts.extend(kept)
    return changes


def _has_tfx_type(artifact_type: pipeline_spec_pb2.ArtifactTypeSchema) -> bool:
    """Whether TFX can import a class for this type: a title that is not KFP's `system.*`."""
    kind = artifact_type.WhichOneof("kind")
    if kind == "schema_title":
        title = artifact_type.schema_title
    elif kind == "instance_schema":
        schema = yaml.safe_load(artifact_type.instance_schema) or {}
        title = schema.get("title", "") if isinstance(schema, dict) else ""
    else:
        return False
    return bool(title) and not title.startswith("system.")


def _describe(artifact_type: pipeline_spec_pb2.ArtifactTypeSchema) -> str:
    kind = artifact_type.WhichOneof("kind")
    return f"{kind}={getattr(artifact_type, kind)!r}" if kind else "(none)"


def _marked_no_model(artifact: pipeline_spec_pb2.RuntimeArtifact) -> bool:
    """Whether the artifact's metadata (or its custom properties) says it is no model."""
    field = artifact.metadata.fields.get(NO_MODEL_PROPERTY)
    if field is not None:
        return field.number_value == 1
    value = artifact.custom_properties.get(NO_MODEL_PROPERTY)
    return value is not None and value.int_value == 1


def parse_flags(argv: list[str]):
    """TFX's flags, with the executor input fixed (`fix_executor_input`)."""
    args, beam_args = kubeflow_v2_run_executor._parse_flags(argv)
    executor_input = pipeline_spec_pb2.ExecutorInput()
    json_format.Parse(
        args.json_serialized_invocation_args, executor_input, ignore_unknown_fields=True
    )
    inputs_spec = None
    if args.json_serialized_inputs_spec_args:
        inputs_spec = json_format.Parse(
            args.json_serialized_inputs_spec_args,
            pipeline_spec_pb2.ComponentInputsSpec(),
            ignore_unknown_fields=True,
        )
    for change in fix_executor_input(executor_input, inputs_spec):
        # Not absl's logging: before app.run has parsed the flags, it drops INFO.
        print(f"Executor input: {change}", file=sys.stderr, flush=True)
    args.json_serialized_invocation_args = json_format.MessageToJson(executor_input)
    return args, beam_args


def run_executor(parsed_flags) -> None:
    """TFX's entrypoint; then the process ends at once (see the module's docstring)."""
    kubeflow_v2_run_executor.main(parsed_flags)
    logging.info("Executor output written; exiting without interpreter shutdown.")
    logging.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    app.run(run_executor, flags_parser=parse_flags)
