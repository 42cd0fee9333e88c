"""Multi-worker GSAM: two worker processes on loopback run trainer.training.multi_worker.fit."""

import contextlib
import errno
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests import multi_worker_process as setup
from tests import trainer_examples
from trainer.gsam import sharpness_aware_gradients
from trainer.training import multi_worker


class WorkersFailed(AssertionError):
    """A worker failed or the workers ran out of time; the message holds every worker's log."""


@contextlib.contextmanager
def held_ports(count):
    """Loopback ports, kept bound (not listening) until the block ends.

    The sockets set SO_REUSEADDR, as gRPC's servers do: a worker's TensorFlow server can
    bind its port while we hold it, and no other process is handed the port meanwhile.
    """
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket())
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", 0))
            ports.append(sock.getsockname()[1])
        yield ports


def run_workers(modes, outputs, log_dir, timeout=600):
    """Runs `tests.multi_worker_process MODE OUTPUT`, one worker per (mode, output), on loopback.

    Waits on all of them at once. When one fails, or time runs out, the others are killed and
    WorkersFailed shows every worker's log. Returns the logs.
    """
    log_paths = [Path(log_dir) / f"worker-{index}.log" for index in range(len(modes))]
    processes = []
    with held_ports(len(modes)) as ports:
        cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
        try:
            for index, (mode, output) in enumerate(zip(modes, outputs)):
                tf_config = {"cluster": cluster, "task": {"type": "worker", "index": index}}
                with open(log_paths[index], "w") as log:
                    processes.append(
                        subprocess.Popen(
                            [sys.executable, "-m", "tests.multi_worker_process", mode, str(output)],
                            env=dict(os.environ, TF_CONFIG=json.dumps(tf_config)),
                            stdout=log,
                            stderr=subprocess.STDOUT,
                        )
                    )
            failure = _wait_for_all(processes, timeout)
        finally:
            for process in processes:
                if process.poll() is None:
                    process.kill()
                    process.wait()
    logs = [path.read_text() for path in log_paths]
    if failure:
        raise WorkersFailed(
            failure
            + "".join(
                f"\n--- worker {index} (exit {process.returncode}) ---\n{log[-3000:]}"
                for index, (process, log) in enumerate(zip(processes, logs))
            )
        )
    return logs


def _wait_for_all(processes, timeout):
    """None once every process exits 0; else what went wrong first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        codes = [process.poll() for process in processes]
        failed = [index for index, code in enumerate(codes) if code not in (None, 0)]
        if failed:
            return f"worker {failed[0]} exited with {codes[failed[0]]}"
        if all(code == 0 for code in codes):
            return None
        time.sleep(0.2)
    return f"the workers did not finish within {timeout} s"


@pytest.fixture(scope="module")
def worker_weights(tmp_path_factory):
    out = tmp_path_factory.mktemp("workers")
    outputs = [out / f"{index}.npz" for index in range(setup.WORKERS)]
    run_workers(["loop"] * setup.WORKERS, outputs, out)
    results = [np.load(output) for output in outputs]
    return [[result[f"arr_{i}"] for i in range(len(result.files) - 1)] for result in results]


def test_the_workers_end_with_identical_weights(worker_weights):
    first, second = worker_weights
    assert len(first) == 8  # 2 kernels, 2 biases; BatchNormalization gamma, beta, mean, variance
    # Bit for bit: both workers run the same compiled program on all-reduced values.
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)


def test_the_update_is_the_mean_of_per_worker_gsam_directions(worker_weights):
    """Each worker perturbs along its own shard's gradient; the directions are averaged."""
    reference = setup.compile_gsam(setup.build_model())
    initial = [variable.numpy() for variable in reference.model.weights]
    shards = [setup.shard(index) for index in range(setup.WORKERS)]
    for step in range(setup.STEPS):
        batch = slice(step * setup.BATCH, (step + 1) * setup.BATCH)
        directions = [
            sharpness_aware_gradients(
                reference, x[batch], y[batch], rho=setup.RHO, alpha=setup.ALPHA
            ).directions
            for x, y in shards
        ]
        for variable, *per_worker in zip(reference.trainable_variables, *directions):
            variable.assign(variable - setup.LEARNING_RATE * np.mean(per_worker, axis=0))
    trainable = [
        (variable.numpy(), trained, start)
        for variable, trained, start in zip(reference.model.weights, worker_weights[0], initial)
        if variable.trainable
    ]
    for expected, trained, _ in trainable:
        np.testing.assert_allclose(trained, expected, atol=1e-5)
    moved = sum(float(np.abs(trained - start).sum()) for _, trained, start in trainable)
    assert moved > 0.1, "three steps at learning rate 0.1 must move the weights"


@pytest.mark.parametrize(
    "tf_config, workers, chief",
    [
        (None, 0, True),
        ({"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 0}}, 2, True),
        ({"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 1}}, 2, False),
        (
            {
                "cluster": {"chief": ["c:0"], "worker": ["a:1"]},
                "task": {"type": "worker", "index": 0},
            },
            2,
            False,
        ),
        (
            {
                "cluster": {"chief": ["c:0"], "worker": ["a:1"]},
                "task": {"type": "chief", "index": 0},
            },
            2,
            True,
        ),
    ],
)
def test_the_cluster_is_read_from_tf_config(tf_config, workers, chief):
    text = json.dumps(tf_config) if tf_config else ""
    assert multi_worker.cluster_workers(text) == workers
    assert multi_worker.is_chief(text) is chief


def test_run_fn_trains_with_the_loop_when_tf_config_names_several_workers(tmp_path):
    rng = np.random.default_rng(0)
    trainer_examples.examples_artifact(
        str(tmp_path / "examples"),
        {
            "train": trainer_examples.random_image_examples(rng, 64),
            "eval": trainer_examples.random_image_examples(rng, 16),
        },
    )
    with open(trainer_examples.SAMPLE_SCHEMA) as schema:
        trainer_examples.schema_artifact(str(tmp_path / "schema"), schema.read())
    shared_output = tmp_path / "trainer"
    logs = run_workers(["run_fn", "run_fn"], [shared_output, shared_output], tmp_path)
    assert all("replica(s), 2 worker(s)" in log for log in logs)
    assert all("epoch 2/2: loss=" in log for log in logs)
    serving = shared_output / "model" / "Format-Serving"
    assert sorted(os.listdir(serving)) == [
        "assets",
        "fingerprint.pb",
        "saved_model.pb",
        "variables",
    ]
    probabilities = trainer_examples.serve(
        str(serving), trainer_examples.random_image_examples(np.random.default_rng(1), 4)
    )
    assert probabilities.shape == (4, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_held_ports_are_refused_to_others_but_open_to_a_server_that_reuses_addresses():
    with held_ports(2) as ports:
        assert len(set(ports)) == 2
        for port in ports:
            with socket.socket() as other, pytest.raises(OSError) as refused:
                other.bind(("127.0.0.1", port))
            assert refused.value.errno == errno.EADDRINUSE
            # What a worker's gRPC server does: SO_REUSEADDR, bind on every address, listen.
            with socket.socket() as server:
                server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                server.bind(("0.0.0.0", port))
                server.listen()


def test_a_failed_worker_stops_the_others_and_shows_every_log(tmp_path):
    """Worker 1 waits for its peer forever; worker 0 fails at once."""
    with pytest.raises(WorkersFailed) as failure:
        run_workers(
            ["fail", "loop"], [tmp_path / "0.npz", tmp_path / "1.npz"], tmp_path, timeout=300
        )
    message = str(failure.value)
    assert message.startswith("worker 0 exited with 1")
    assert "--- worker 0 (exit 1) ---" in message and setup.FAILURE in message
    # Killed, not left running: a negative exit status is the signal.
    assert "--- worker 1 (exit -9) ---" in message


def test_workers_out_of_time_are_killed(tmp_path):
    with pytest.raises(WorkersFailed, match="did not finish within 1 s") as failure:
        run_workers(["loop", "loop"], [tmp_path / "0.npz", tmp_path / "1.npz"], tmp_path, timeout=1)
    assert str(failure.value).count("(exit -9)") == 2


def test_bad_cluster_and_loop_arguments_are_named():
    with pytest.raises(ValueError, match="TF_CONFIG is not valid JSON"):
        multi_worker.cluster_workers("{cluster: }")
    with pytest.raises(ValueError, match="steps_per_epoch must be an integer >= 1, got 0"):
        multi_worker.fit(None, None, strategy=None, epochs=1, steps_per_epoch=0)
