"""One run at a time per output folder: a second refuses at once, naming the holder."""

import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from ml_metadata import metadata_store
from tfx import v1 as tfx

from pipelines import configs
from pipelines.local import run_here, run_lock
from pipelines.local.layout import OutputLayout
from tests.pipeline_support import versions, write_split_sample

WAIT_SECONDS = 900


def test_a_second_holder_is_refused_with_the_first_named(tmp_path):
    path = str(tmp_path / "out" / "metadata.sqlite.lock")
    with run_lock.hold(path):
        expected = f"held by pid {os.getpid()} on host {socket.gethostname()}, started "
        with pytest.raises(run_lock.RunLockedError, match=expected):
            with run_lock.hold(path):
                pass
    with run_lock.hold(path):  # released after the block
        pass


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    path = str(tmp_path / "lock")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom pipelines.local import run_lock\n"
         "with run_lock.hold(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(600)",
         path],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdout.readline() == "held\n"
    with pytest.raises(run_lock.RunLockedError, match=f"pid {holder.pid} on host"):
        with run_lock.hold(path):
            pass
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with run_lock.hold(path):
        pass


def flags(data, output_dir):
    return [
        "--data-root", str(data), "--schema", configs.SCHEMA_PATH,
        "--output-dir", str(output_dir), "--pipeline-name", "locked",
        "--epochs", "1", "--batch-size", "16", "--train-steps-per-epoch", "2",
        "--accuracy-threshold", "0", "--max-accuracy-drop", "1",
    ]  # fmt: skip


def test_a_run_started_while_another_runs_refuses_and_the_store_stays_intact(tmp_path, capsys):
    data = write_split_sample(tmp_path / "data", train=32, eval=16)
    layout = OutputLayout(str(tmp_path / "out"))
    lock_path = run_lock.lock_path(layout.output_dir)
    first = subprocess.Popen(
        [sys.executable, "-m", "pipelines.local_runner", *flags(data, layout.output_dir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + WAIT_SECONDS
    while not (os.path.exists(lock_path) and os.path.getsize(lock_path)):
        assert first.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)

    second = flags(data, layout.output_dir)
    assert run_here.run(tfx.orchestration.LocalDagRunner(), "test", second) == 1
    message = f"another run is using this output folder (lock {lock_path}), held by pid {first.pid}"
    assert message in capsys.readouterr().err
    assert first.wait(timeout=WAIT_SECONDS) == 0
    assert run_here.run(tfx.orchestration.LocalDagRunner(), "test", second) == 0

    config = tfx.orchestration.metadata.sqlite_metadata_connection_config(layout.metadata_path)
    store = metadata_store.MetadataStore(config)
    runs = store.get_contexts_by_type("pipeline_run")
    assert len(runs) == 2
    assert all(store.get_executions_by_context(run.id) for run in runs)
    assert len(versions(layout)) == 2
