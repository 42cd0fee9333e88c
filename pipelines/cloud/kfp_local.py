"""Runs a compiled Kubeflow Pipelines YAML on this machine with kfp.local's DockerRunner:
every task in the pipeline's image, with the executor input KFP builds for it.

    python -m pipelines.kubeflow_runner --run-local --image gsam-tfx:KEY \\
        --pipeline-root kubeflow-local-output --output-file kubeflow-local-output/pipeline.yaml

`kfp.local` (kfp >= 2.5) is KFP's own local runner. It runs container and importer tasks one
at a time in topological order, each in a fresh container of its image (pulled only when the
tag is missing), and passes artifacts between them as files under the pipeline root; it has no
ML Metadata, no `lifecycle.preCacheCheck` (ExampleGen's driver) and no cache unless asked.

DockerRunner mounts the pipeline root alone, at its own path, so what a task reads must be in
the image or under the root, and what it writes (the push destination) under the root:
`check_paths` says so before anything runs. Containers run as this user, with group 0 (which
owns the image's home folder), so what they write is this user's.

`run` prints a line as each task starts and finishes, with the verdicts of the baseline, the
Evaluator and the Pusher, then the pushed model's path; kfp.local's own log, with every
container's output, goes to `<pipeline root>/logs/`. A run fails when kfp.local reports a failed
task, or when a task left no `executor_output.json` (TFX writes it last): kfp.local counts a
container it finds already removed as a success.

Example:

    result = run("out/pipeline.yaml", "/abs/out")
    print(result.pushed if result.succeeded else result.failure)
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import datetime
import io
import json
import logging
import os
import re
import sys
import time

import yaml
from tfx.components.evaluator import constants as evaluator

from components.release.pushed_baseline import NO_MODEL_PROPERTY, VERSION_PROPERTY
from pipelines.cloud.compiler import IMAGE_WORKDIR

EXECUTOR_OUTPUT = "executor_output.json"
ANSI = re.compile(r"\x1b\[[0-9;]*m")
STARTED = re.compile(r"Executing task '([^']+)'")
FINISHED = re.compile(r"Task '([^']+)' finished with status (\w+)")
CACHED = re.compile(r"Task (\S+) cache hit")
# Lines of a failed task's output repeated on the console; the log has all of them.
TAIL_LINES = 25


@dataclasses.dataclass
class LocalRun:
    """What a kfp.local run did: its folder, its first failure, the pushed version folder,
    the tasks it ran and those it took from the cache."""

    run_dir: str | None
    failure: str | None = None
    pushed: str | None = None
    ran: list[str] = dataclasses.field(default_factory=list)
    cached: list[str] = dataclasses.field(default_factory=list)

    @property
    def succeeded(self) -> bool:
        return self.failure is None


def check_paths(pipeline_root: str, reads: dict[str, str], writes: dict[str, str]) -> None:
    """Raises ValueError naming the flag of a path a task cannot reach: `reads` (flag: path)
    must be in the image or under `pipeline_root`, `writes` under `pipeline_root`."""
    for flag, path in reads.items():
        if not _inside(path, pipeline_root) and not _inside(path, IMAGE_WORKDIR):
            raise ValueError(
                f"{flag} {path} is neither in the image ({IMAGE_WORKDIR}) nor under "
                f"--pipeline-root {pipeline_root}, the one folder kfp.local mounts."
            )
    for flag, path in writes.items():
        if not _inside(path, pipeline_root):
            raise ValueError(
                f"{flag} {path} must be under --pipeline-root {pipeline_root}, the one folder "
                "kfp.local mounts: what the containers write elsewhere is lost."
            )


def _inside(path: str, folder: str) -> bool:
    path, folder = os.path.normpath(path), os.path.normpath(folder)
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def run(package_path: str, pipeline_root: str, console=None) -> LocalRun:
    """Runs the YAML package with kfp.local's DockerRunner under `pipeline_root` (absolute).

    A task is taken from kfp.local's cache (`<pipeline_root>/.kfp_cache`) when the package
    enables caching for it (`--enable-cache`) and an earlier run ran it with the same inputs.
    """
    from kfp import components, local  # kfp.local imports the docker SDK

    console = console or sys.stdout
    with open(package_path) as file:
        spec = yaml.safe_load(file)
    name = spec["pipelineInfo"]["name"]
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    log_path = os.path.join(pipeline_root, "logs", f"{name}-{stamp}.log")
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    before = set(os.listdir(pipeline_root))
    local.init(
        runner=local.DockerRunner(user=f"{os.getuid()}:{os.getgid()}", group_add=["0"]),
        pipeline_root=pipeline_root,
        raise_on_error=True,
        enable_caching=True,  # for the tasks whose cachingOptions enable it
    )
    pipeline = components.load_component_from_file(package_path)
    print(f"kfp.local DockerRunner, root {pipeline_root}; full log: {log_path}", file=console)
    with open(log_path, "w") as log:
        lines = TaskLines(log, console, lambda: _run_dir(pipeline_root, name, before))
        with _into(lines):
            try:
                pipeline()
            except RuntimeError as error:  # kfp.local's "finished with status FAILURE"
                lines.failure = lines.failure or ANSI.sub("", str(error))
        lines.close_line()
    result = LocalRun(lines.run_dir(), lines.failure, ran=lines.ran, cached=lines.cached)
    if result.succeeded:
        result.pushed = pushed_version(result.run_dir, result.ran)
    return result


@contextlib.contextmanager
def _into(lines: TaskLines):
    """kfp.local's output into `lines`: what it prints and logs around each task goes to
    stdout; its cache hits it logs at INFO level outside those, to the root logger."""
    root = logging.getLogger()
    handler = logging.StreamHandler(lines)
    handler.setFormatter(logging.Formatter("%(asctime)s - %(levelname)s - %(message)s"))
    level, handlers, stdout = root.level, root.handlers[:], sys.stdout
    root.handlers = [handler]  # as kfp.local does around each task
    root.setLevel(logging.INFO)
    sys.stdout = lines
    try:
        yield
    finally:
        sys.stdout = stdout
        root.handlers = handlers
        root.setLevel(level)


def _run_dir(pipeline_root: str, name: str, before: set) -> str | None:
    """The folder kfp.local made for this run: `<name>-<timestamp>`, new under the root."""
    new = [entry for entry in os.listdir(pipeline_root) if entry not in before]
    runs = sorted(entry for entry in new if entry.startswith(f"{name}-"))
    return os.path.join(pipeline_root, runs[-1]) if runs else None


def executor_output(run_dir: str | None, task: str) -> dict | None:
    """What TFX wrote for a task that ran: kfp.local's task folder is its component's name
    less `comp-`, the task's name here (`kubeflow_spec.adapt`)."""
    path = os.path.join(run_dir or "", task, EXECUTOR_OUTPUT)
    if run_dir is None or not os.path.exists(path):
        return None
    with open(path) as file:
        return json.load(file)


def output_metadata(run_dir: str, task: str, key: str) -> dict | None:
    """The metadata of a task's output artifact `key`, None if the task wrote no such output."""
    output = executor_output(run_dir, task) or {}
    artifacts = output.get("artifacts", {}).get(key, {}).get("artifacts", [])
    return artifacts[0].get("metadata", {}) if artifacts else None


def pushed_version(run_dir: str | None, ran: list[str]) -> str | None:
    """The version folder a Pusher among the tasks `ran` pushed to, None if none pushed."""
    for task in ran:
        metadata = output_metadata(run_dir, task, "pushed_model")
        if metadata and metadata.get("pushed") == 1:
            return metadata["pushed_destination"]
    return None


def verdict(run_dir: str | None, task: str) -> str:
    """What the baseline, an Evaluator, a SharpnessProbe or the Pusher decided; '' otherwise."""
    if run_dir is None:
        return ""
    baseline = output_metadata(run_dir, task, "model")
    if baseline is not None and NO_MODEL_PROPERTY in baseline:
        if baseline[NO_MODEL_PROPERTY] == 1:
            return "no pushed model yet: no baseline"
        return f"baseline: pushed version {baseline[VERSION_PROPERTY]}"
    blessing = output_metadata(run_dir, task, "blessing")
    if blessing is not None:
        blessed = blessing.get(evaluator.ARTIFACT_PROPERTY_BLESSED_KEY) == 1
        compared = evaluator.ARTIFACT_PROPERTY_BASELINE_MODEL_URI_KEY in blessing
        return (
            f"{'blessed' if blessed else 'not blessed'} "
            f"({'against the baseline' if compared else 'no baseline'})"
        )
    pushed = output_metadata(run_dir, task, "pushed_model")
    if pushed is not None:
        return (
            f"pushed {pushed['pushed_destination']}" if pushed.get("pushed") == 1 else "not pushed"
        )
    return ""


class TaskLines(io.TextIOBase):
    """Stands in for stdout during the run: kfp.local's output goes whole to `log`, and a line
    per task start and finish (with its wall time and verdict) to `console`."""

    def __init__(self, log, console, run_dir):
        self.log, self.console, self.run_dir = log, console, run_dir
        self.failure: str | None = None
        self.ran: list[str] = []
        self.cached: list[str] = []
        self._pending = ""
        self._started = 0.0
        self._output = collections.deque(maxlen=TAIL_LINES)

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.log.write(text)
        self._pending += text
        while "\n" in self._pending:
            line, self._pending = self._pending.split("\n", 1)
            self._line(ANSI.sub("", line))
        return len(text)

    def flush(self) -> None:
        if not self.log.closed:  # io's finalizer flushes too, after the run closed the log
            self.log.flush()
        self.console.flush()

    def close_line(self) -> None:
        if self._pending:
            self.write("\n")
        self.flush()

    def _line(self, line: str) -> None:
        if started := STARTED.search(line):
            self._started = time.monotonic()
            self._output.clear()
            self._show(f"  start  {started.group(1)}")
        elif finished := FINISHED.search(line):
            self._finished(*finished.groups())
        elif cached := CACHED.search(line):
            self.cached.append(cached.group(1))
            self._show(f"  cached {cached.group(1)}")
        else:
            self._output.append(line)

    def _finished(self, task: str, status: str) -> None:
        seconds = time.monotonic() - self._started
        self.ran.append(task)
        if status == "SUCCESS" and executor_output(self.run_dir(), task) is None:
            status = f"SUCCESS reported, but it wrote no {EXECUTOR_OUTPUT}"
        if status == "SUCCESS":
            verdict_shown = verdict(self.run_dir(), task)
            self._show(f"  done   {task:<20} {seconds:7.1f} s  {verdict_shown}".rstrip())
            return
        self.failure = self.failure or f"task {task} failed ({status})"
        tail = "".join(f"\n    | {output}" for output in self._output)
        self._show(f"  FAILED {task:<20} {seconds:7.1f} s{tail}")

    def _show(self, line: str) -> None:
        # Not print(): kfp.local swaps builtins.print for an indenting one around tasks.
        self.console.write(line + "\n")
        self.console.flush()
