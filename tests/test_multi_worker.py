"""Multi-worker GSAM: two worker processes on loopback run trainer.multi_worker.fit."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from tests import multi_worker_process as setup
from tests import trainer_examples
from trainer import multi_worker
from trainer.gsam import sharpness_aware_gradients


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def run_workers(mode, outputs):
    """Runs `tests.multi_worker_process MODE OUTPUT` for each output, one worker each, on
    loopback ports."""
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(len(outputs))]}
    processes = []
    for index, output in enumerate(outputs):
        env = dict(
            os.environ,
            TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}),
        )
        processes.append(
            subprocess.Popen(
                [sys.executable, "-m", "tests.multi_worker_process", mode, str(output)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    logs = [process.communicate(timeout=600)[0] for process in processes]
    for process, log in zip(processes, logs):
        assert process.returncode == 0, log[-3000:]
    return logs


@pytest.fixture(scope="module")
def worker_weights(tmp_path_factory):
    out = tmp_path_factory.mktemp("workers")
    outputs = [out / f"{index}.npz" for index in range(setup.WORKERS)]
    run_workers("loop", outputs)
    results = [np.load(output) for output in outputs]
    return [[result[f"arr_{i}"] for i in range(len(result.files) - 1)] for result in results]


def test_the_workers_end_with_identical_weights(worker_weights):
    first, second = worker_weights
    assert len(first) == 8  # 2 kernels, 2 biases; BatchNormalization gamma, beta, mean, variance
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
    logs = run_workers("run_fn", [shared_output, shared_output])
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


def test_bad_cluster_and_loop_arguments_are_named():
    with pytest.raises(ValueError, match="TF_CONFIG is not valid JSON"):
        multi_worker.cluster_workers("{cluster: }")
    with pytest.raises(ValueError, match="steps_per_epoch must be an integer >= 1, got 0"):
        multi_worker.fit(None, None, strategy=None, epochs=1, steps_per_epoch=0)
