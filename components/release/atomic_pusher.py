"""A filesystem Pusher whose push is all or nothing.

TFX's Pusher copies the model straight into `<base_directory>/<version>/`, so a push that
dies halfway leaves a partial version folder where model servers look. `AtomicPusher` copies
into a hidden staging folder beside it (model servers only load numeric folders), renames it
into place once the copy is complete, and removes the staging folder if the copy fails. The
version is the push time in seconds, moved on to the next free number if another push took
it. A model whose SavedModel fingerprint (`fingerprint.pb`) matches a version already there is
not pushed again: a rerun that re-evaluates the same cached model adds no second version. On
local filesystems the rename is atomic; on object stores (gs://) a rename copies object
by object, so there it only narrows the window in which a partial version is visible.

Example:

    pusher = AtomicPusher(
        model=trainer.outputs["model"],
        model_blessing=evaluator.outputs["blessing"],
        push_destination=tfx.proto.PushDestination(
            filesystem=tfx.proto.PushDestination.Filesystem(base_directory=serving_dir)),
    ).with_id("Pusher")
"""

from __future__ import annotations

import os
import time
import uuid

from absl import logging
from tfx import v1 as tfx
from tfx.components.pusher import executor as pusher_executor
from tfx.dsl.components.base import executor_spec
from tfx.dsl.io import fileio
from tfx.proto import pusher_pb2
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import io_utils, proto_utils

FINGERPRINT_FILE = "fingerprint.pb"


class AtomicPushExecutor(pusher_executor.Executor):
    """Pushes to a filesystem destination through a staging folder and a rename."""

    def Do(self, input_dict, output_dict, exec_properties) -> None:
        destination = pusher_pb2.PushDestination()
        proto_utils.json_to_proto(
            exec_properties[standard_component_specs.PUSH_DESTINATION_KEY], destination
        )
        if destination.WhichOneof("destination") != "filesystem":
            return super().Do(input_dict, output_dict, exec_properties)

        self._log_startup(input_dict, output_dict, exec_properties)
        model_push = artifact_utils.get_single_instance(
            output_dict[standard_component_specs.PUSHED_MODEL_KEY]
        )
        if not self.CheckBlessing(input_dict):
            self._MarkNotPushed(model_push)
            return
        model_path = self.GetModelPath(input_dict)
        serving_path = push_to_directory(model_path, destination.filesystem.base_directory)
        io_utils.copy_dir(model_path, model_push.uri)
        self._MarkPushed(
            model_push,
            pushed_destination=serving_path,
            pushed_version=os.path.basename(serving_path),
        )


def push_to_directory(model_path: str, base_directory: str) -> str:
    """Copies the SavedModel at `model_path` into a new numbered version folder under
    `base_directory`, all or nothing, and returns that folder; if a version there holds the
    same model (its fingerprint), returns that one instead and copies nothing."""
    pushed_before = version_holding(model_path, base_directory)
    if pushed_before is not None:
        logging.info("Model already pushed as %s; not pushed again.", pushed_before)
        return pushed_before
    version = int(time.time())
    while fileio.exists(os.path.join(base_directory, str(version))):
        version += 1  # another push took this second: never overwrite or reuse it
    serving_path = os.path.join(base_directory, str(version))
    staging = os.path.join(base_directory, f".{version}.{uuid.uuid4().hex}.incomplete")
    try:
        io_utils.copy_dir(model_path, staging)
        fileio.rename(staging, serving_path)
    finally:
        if fileio.exists(staging):
            fileio.rmtree(staging)
    logging.info("Model written to serving path %s.", serving_path)
    return serving_path


def version_holding(model_path: str, base_directory: str) -> str | None:
    """The version folder under `base_directory` with `model_path`'s fingerprint, if any."""
    own = fingerprint_of(model_path)
    if own is None:
        return None
    for version in pushed_versions(base_directory):
        path = os.path.join(base_directory, version)
        if fingerprint_of(path) == own:
            return path
    return None


def pushed_versions(base_directory: str) -> list[str]:
    """The version folders under `base_directory` (numeric names), oldest first; staging
    folders and other names are left out."""
    if not fileio.exists(base_directory):
        return []
    names = (name.rstrip("/") for name in fileio.listdir(base_directory))
    return sorted((name for name in names if name.isdigit()), key=int)


def fingerprint_of(saved_model_dir: str) -> bytes | None:
    """The SavedModel fingerprint (`fingerprint.pb`) in `saved_model_dir`, None without one."""
    path = os.path.join(saved_model_dir, FINGERPRINT_FILE)
    return io_utils.read_bytes_file(path) if fileio.exists(path) else None


class AtomicPusher(tfx.components.Pusher):
    """`tfx.components.Pusher`, with all-or-nothing filesystem pushes."""

    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(AtomicPushExecutor)
