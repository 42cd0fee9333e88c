"""What a person reads while the pipeline runs here, and the full log beside it.

`run_pipeline` is what every runner that runs here shares (local, Beam, comparison,
tuning): it runs a built pipeline with a `TfxRunner` and prints

* where the full log goes: `<output-dir>/logs/<run id>.log` (`pipelines/local/run_log.py`), with
  absl, TFX, Beam and TensorFlow records; `verbose` prints it here as well;
* a line as each component starts, and one as it finishes, with its wall time and its verdict
  (`pipelines/local/verdicts.py`);
* Keras's own lines while the Trainer trains (a progress bar on a terminal, a line per epoch
  otherwise), GSAM's metrics among them;
* the run's summary (`pipelines/local/summary.py`);
* if the run failed: the failing component, its error once, and the log file, which alone
  holds the traceback. The exit status is then 1.

Example:

    status = run_pipeline(tfx.orchestration.LocalDagRunner(), dag, output_layout("out"))
"""

from __future__ import annotations

import contextlib
import datetime
import sys
import threading

import tensorflow as tf
from absl import logging
from tfx import v1 as tfx
from tfx.orchestration import tfx_runner

from pipelines.local import launches, summary, verdicts
from pipelines.local.layout import OutputLayout
from pipelines.local.run_log import RunLog
from trainer.op_errors import without_graph_dump

# Longer error messages are cut to this many lines on the console; the log has them whole.
MAX_ERROR_LINES = 30


class ComponentLines(launches.LaunchListener):
    """Prints a line per component start and finish to stdout; remembers the first failure.

    Args:
        log: the run's open `RunLog`; it gets its file name from the first launch's run id.
        layout: where the run writes; gives the log file's path.
        width: the node id column's width.
    """

    def __init__(self, log: RunLog, layout: OutputLayout, width: int):
        self.log = log
        self.layout = layout
        self.width = width
        self.failure: tuple[str, Exception] | None = None
        self._lock = threading.Lock()

    def started(self, launch: launches.Launch) -> None:
        with self._lock:
            if self.log.path is None:
                self.log.open_file(self.layout.log_path(launch.run_id))
                self._print(f"Run {launch.run_id}; full log: {self.log.path}")
            self._print(f"  start  {launch.node_id}")

    def finished(self, launch: launches.Launch, seconds: float, execution_id: int | None):
        verdict = self._verdict(launch, execution_id)
        with self._lock:
            self._print(self._line("done", launch, seconds, verdict))

    def failed(self, launch: launches.Launch, seconds: float, error: Exception) -> None:
        with self._lock:
            self.failure = self.failure or (launch.node_id, error)
            self._print(self._line("FAILED", launch, seconds))

    def _line(self, status, launch, seconds, verdict=None) -> str:
        line = f"  {status:<6} {launch.node_id:<{self.width}} {seconds:7.1f} s"
        return f"{line}  {verdict}" if verdict else line

    def _verdict(self, launch, execution_id) -> str | None:
        verdict = verdicts.verdict_of(launch.component_type)
        if verdict is None or execution_id is None:
            return None
        try:
            with launch.metadata as handle:
                return verdict(verdicts.read_execution(handle.store, execution_id))
        except Exception:  # a verdict is a courtesy: it must never fail the run
            logging.exception("No verdict for %s.", launch.node_id)
            return None

    def _print(self, line: str) -> None:
        print(line, flush=True)


def run_pipeline(
    runner: tfx_runner.TfxRunner,
    dag: tfx.dsl.Pipeline,
    layout: OutputLayout,
    *,
    verbose: bool = False,
    data_root: str | None = None,
) -> int:
    """Runs `dag` with `runner`, as the module docstring says; returns the exit status.

    Args:
        layout: the run's output folder; the log goes to its `logs/`.
        verbose: print the full log on the console's stderr too.
        data_root: the run's data, for the summary's classify hint.
    """
    started_at = datetime.datetime.now().isoformat()
    width = max(len(component.id) for component in dag.components)
    with RunLog(verbose) as log:
        lines = ComponentLines(log, layout, width)
        try:
            with launches.observe_launches(lines), _command_line_hidden():
                runner.run(dag)
            failure = None
        except Exception as error:
            failure = lines.failure or ("the runner", error)
            if log.path is None:  # it failed before any component started
                log.open_file(layout.log_path(started_at))
            logging.exception("The pipeline run failed in %s.", failure[0])
        summary.report(
            layout.output_dir, dag.pipeline_info.pipeline_name, data_root, layout.metadata_file
        )
        if failure is None:
            return 0
        where, error = failure
        print(f"\n{where} failed: {error_message(error)}", file=log.console)
        print(f"Traceback and full log: {log.path}", file=log.console)
        return 1


@contextlib.contextmanager
def _command_line_hidden():
    """Hides the runner's flags from the components while they run.

    TFX's Beam executors parse sys.argv as absl flags (base_beam_executor.py, b/174174381),
    where the runner's -v would mean absl's --verbosity.
    """
    argv = sys.argv
    sys.argv = argv[:1]
    try:
        yield
    finally:
        sys.argv = argv


def error_message(error: Exception) -> str:
    """The error's own message, without TensorFlow's graph dump, cut to MAX_ERROR_LINES."""
    message = str(error)
    if isinstance(error, tf.errors.OpError):
        message = without_graph_dump(error.message)
    lines = message.strip().splitlines() or [type(error).__name__]
    if len(lines) > MAX_ERROR_LINES:
        lines = lines[:MAX_ERROR_LINES] + [f"... {len(lines) - MAX_ERROR_LINES} more lines"]
    return f"{type(error).__name__}: " + "\n".join(lines)
