"""Two loopback workers of the multi-worker loop, killed mid-training, resume together."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import tensorflow as tf

from tests import multi_worker_process as setup
from tests.test_multi_worker import held_ports, run_workers

KILL_AFTER_EPOCH = 2
WAIT_SECONDS = 600


def backed_up_epochs(backup_dir) -> int:
    """How many epochs the chief's latest complete checkpoint holds, else 0."""
    latest = tf.train.latest_checkpoint(str(backup_dir))
    if latest is None:
        return 0
    return len(json.loads(tf.train.load_variable(latest, "history/.ATTRIBUTES/VARIABLE_VALUE")))


def start_workers(backup_dir, log_dir, ports):
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    processes = []
    for index in range(setup.WORKERS):
        task = {"cluster": cluster, "task": {"type": "worker", "index": index}}
        with open(log_dir / f"worker{index}.log", "w") as log:
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "tests.multi_worker_process", "resume", str(backup_dir)],
                    env=dict(os.environ, TF_CONFIG=json.dumps(task)),
                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                )  # fmt: skip
            )
    return processes


def test_killed_workers_resume_from_the_same_epoch(tmp_path):
    backup_dir = tmp_path / "backup"
    with held_ports(setup.WORKERS) as ports:
        processes = start_workers(backup_dir, tmp_path, ports)
        try:
            deadline = time.monotonic() + WAIT_SECONDS
            while backed_up_epochs(backup_dir) < KILL_AFTER_EPOCH:
                assert all(p.poll() is None for p in processes), (
                    tmp_path / "worker0.log"
                ).read_text()
                assert time.monotonic() < deadline, "no epoch-2 checkpoint in time"
                time.sleep(0.05)
        finally:
            for process in processes:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    done = backed_up_epochs(backup_dir)
    assert KILL_AFTER_EPOCH <= done < setup.RESUMED_EPOCHS

    second_logs = tmp_path / "resumed"
    second_logs.mkdir()
    logs = run_workers(["resume"] * setup.WORKERS, [backup_dir] * setup.WORKERS, second_logs)
    results = []
    for log in logs:
        assert f"resuming from epoch {done} of {setup.RESUMED_EPOCHS}" in log
        trained = [line for line in log.splitlines() if line.startswith("epoch ")]
        assert [line.split(":")[0] for line in trained] == [
            f"epoch {n}/{setup.RESUMED_EPOCHS}" for n in range(done + 1, setup.RESUMED_EPOCHS + 1)
        ]
        [result] = [line for line in log.splitlines() if line.startswith("RESULT ")]
        results.append(json.loads(result[len("RESULT ") :]))
    assert [result["epochs"] for result in results] == [setup.RESUMED_EPOCHS] * setup.WORKERS
    for first, second in zip(results[0]["weights"], results[1]["weights"]):
        np.testing.assert_allclose(first, second, rtol=1e-6)
    assert not [name for name in os.listdir(backup_dir) if name.startswith(".worker-")]
