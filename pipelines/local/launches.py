"""When each component starts and finishes, on LocalDagRunner and BeamDagRunner (TFX 1.21).

Both runners launch every node, system nodes such as the Resolver included, with
`tfx.orchestration.portable.launcher.Launcher(...).launch()`, and look the class up in that
module at every launch. `observe_launches(listener)` puts a subclass there for the length of
a run; it tells the listener when a node starts, when it finishes (with its ML Metadata
execution id) and when it fails (with the component's own exception, before any runner wraps
it), in the thread that runs the node.

Why not the alternatives: the runners' absl records ("Component X is running." from
LocalDagRunner, "node X is running." from BeamDagRunner) differ between runners, are worded
for people, and say nothing when a component fails; polling ML Metadata from a thread races
the runner's SQLite writes, misses components shorter than its period and learns of a failure
as a state, without the exception. The launcher is the one place both runners share that sees
start, end and exception.

BeamDagRunner must run its own Beam pipeline in this process (the DirectRunner's default,
as `pipelines.beam_runner` does); on a multi-process runner the listener hears nothing.

Example:

    class Printer:
        def started(self, launch): print("start", launch.node_id)
        def finished(self, launch, seconds, execution_id): print("done", launch.node_id)
        def failed(self, launch, seconds, error): print("failed", launch.node_id, error)

    with observe_launches(Printer()):
        tfx.orchestration.LocalDagRunner().run(dag)
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from typing import Protocol

from tfx.orchestration import metadata
from tfx.orchestration.portable import launcher


@dataclasses.dataclass(frozen=True)
class Launch:
    """One node's launch: which node, of which component type, in which run."""

    node_id: str
    component_type: str  # the class path, e.g. "tfx.components.trainer.component.Trainer"
    run_id: str
    metadata: metadata.Metadata  # the launcher's own ML Metadata connection


class LaunchListener(Protocol):
    def started(self, launch: Launch) -> None: ...

    def finished(self, launch: Launch, seconds: float, execution_id: int | None) -> None:
        """`execution_id` is `None` when the launcher registered no execution (a skip)."""

    def failed(self, launch: Launch, seconds: float, error: Exception) -> None: ...


@contextlib.contextmanager
def observe_launches(listener: LaunchListener):
    """Tells `listener` about every node launched in this process while the block runs."""
    original = launcher.Launcher

    class ObservedLauncher(original):
        def launch(self):
            node = self._pipeline_node.node_info
            launch = Launch(
                node_id=node.id,
                component_type=node.type.name,
                run_id=self._pipeline_runtime_spec.pipeline_run_id.field_value.string_value,
                metadata=self._mlmd_connection,
            )
            listener.started(launch)
            start = time.perf_counter()
            try:
                info = super().launch()
            except Exception as error:
                listener.failed(launch, time.perf_counter() - start, error)
                raise
            listener.finished(launch, time.perf_counter() - start, info and info.execution_id)
            return info

    launcher.Launcher = ObservedLauncher
    try:
        yield
    finally:
        launcher.Launcher = original
