"""A local pipeline killed (SIGKILL) mid-training resumes from its last completed epoch."""

import glob
import os
import re
import signal
import subprocess
import sys
import time

from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2
from tfx import v1 as tfx

from pipelines import configs
from pipelines.local.layout import OutputLayout
from tests.pipeline_support import versions, write_split_sample
from trainer.training import history, resume

EPOCHS = 4
KILL_AFTER_EPOCH = 2
WAIT_SECONDS = 900


def command(data, output_dir):
    return [
        sys.executable, "-m", "pipelines.local_runner",
        "--data-root", str(data), "--schema", configs.SCHEMA_PATH,
        "--output-dir", str(output_dir), "--pipeline-name", "preempted",
        "--epochs", str(EPOCHS), "--batch-size", "16", "--train-steps-per-epoch", "6",
        "--accuracy-threshold", "0", "--enable-cache",
    ]  # fmt: skip


def completed_backup_epoch(pipeline_root) -> int:
    """The highest epoch with a complete backup under the Trainer's resume folder, else 0."""
    resume_root = os.path.join(pipeline_root, "Trainer", "model_run", resume.RESUME_FOLDER)
    if not os.path.isdir(resume_root):
        return 0
    keys = os.listdir(resume_root)
    found = [resume.latest_backup(os.path.join(resume_root, key)) for key in keys]
    return max((marker["epoch"] for _, marker in filter(None, found)), default=0)


def trainer_executions(layout):
    config = tfx.orchestration.metadata.sqlite_metadata_connection_config(layout.metadata_path)
    store = metadata_store.MetadataStore(config)
    context = store.get_context_by_type_and_name("node", "preempted.Trainer")
    return sorted(store.get_executions_by_context(context.id), key=lambda e: e.id)


def test_killed_training_resumes_from_its_last_completed_epoch(tmp_path):
    data = write_split_sample(tmp_path / "data", train=48, eval=16)
    layout = OutputLayout(str(tmp_path / "out"))
    log_path = tmp_path / "killed.log"
    with open(log_path, "w") as log:
        killed = subprocess.Popen(
            command(data, layout.output_dir), stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + WAIT_SECONDS
        while completed_backup_epoch(layout.pipeline_root) < KILL_AFTER_EPOCH:
            assert killed.poll() is None, log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, "no epoch-2 backup in time"
            time.sleep(0.05)
        os.killpg(killed.pid, signal.SIGKILL)
        killed.wait()
    done_before_kill = completed_backup_epoch(layout.pipeline_root)
    assert KILL_AFTER_EPOCH <= done_before_kill < EPOCHS
    assert versions(layout) == []

    rerun = subprocess.run(
        command(data, layout.output_dir), capture_output=True, text=True, timeout=WAIT_SECONDS
    )
    assert rerun.returncode == 0, (rerun.stdout + rerun.stderr)[-3000:]
    # The console shows Keras's epoch lines; the Trainer's log records go to the run's log file,
    # named by run id, a timestamp: the newest is the rerun's.
    rerun_log = max(glob.glob(os.path.join(layout.output_dir, "logs", "*.log")))
    with open(rerun_log) as file:
        output = rerun.stdout + file.read()
    assert f"resuming from epoch {done_before_kill} of {EPOCHS}" in output
    trained_again = [int(n) for n in re.findall(rf"^Epoch (\d+)/{EPOCHS}$", output, re.M)]
    assert trained_again == list(range(done_before_kill + 1, EPOCHS + 1))

    executions = trainer_executions(layout)
    states = [execution.last_known_state for execution in executions]
    assert len(executions) == 2
    assert states.count(metadata_store_pb2.Execution.COMPLETE) == 1
    assert states[0] != metadata_store_pb2.Execution.COMPLETE  # the killed attempt
    run_dir = os.path.join(layout.pipeline_root, "Trainer", "model_run", str(executions[1].id))
    recorded = history.read_history(os.path.join(run_dir, history.HISTORY_FILE))["epochs"]
    assert [record["epoch"] for record in recorded] == list(range(1, EPOCHS + 1))
    assert recorded[-1]["steps"] == EPOCHS * 6
    assert completed_backup_epoch(layout.pipeline_root) == 0  # removed after the export
    assert len(versions(layout)) == 1
