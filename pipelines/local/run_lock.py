"""One run at a time per output folder: a second run refuses at once, naming the lock holder.

Two runs writing one ML Metadata SQLite file and one `serving/` folder at once could corrupt the
store or interleave pushes. `hold` takes an exclusive `flock` on a lock file beside the
metadata file (always local, even when the output folder is a gs:// URI) before the run starts,
records the holder (pid, host, start time, command) in it, and lets go when the run ends. The operating system drops the lock when the holder dies, even by SIGKILL, so a killed
run never leaves a stale lock behind.

Example:

```python
with hold("out/metadata.sqlite.lock"):  # RunLockedError if another run holds it
    tfx.orchestration.LocalDagRunner().run(dag)
```
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import socket
import sys

from pipelines.local.layout import output_layout


class RunLockedError(RuntimeError):
    """Another run holds the output folder's lock."""


@contextlib.contextmanager
def hold(lock_path: str):
    """Holds the exclusive lock at `lock_path` for the block; raises RunLockedError if taken."""
    if not lock_path:
        raise ValueError("lock_path must name the lock file, got an empty value.")
    os.makedirs(os.path.dirname(os.path.abspath(lock_path)), exist_ok=True)
    with open(lock_path, "a+") as file:
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.seek(0)
            raise RunLockedError(
                f"another run is using this output folder (lock {lock_path}), held by "
                f"{describe_holder(file.read())}; wait for it to finish, or use another "
                f"--output-dir"
            ) from None
        file.seek(0)
        file.truncate()
        json.dump(holder(), file)
        file.flush()
        try:
            yield
        finally:
            file.truncate(0)
            fcntl.flock(file, fcntl.LOCK_UN)


def lock_path(output_dir: str, metadata_path: str | None = None) -> str:
    """The lock file of a run's output folder: beside its (always local) metadata file."""
    return output_layout(output_dir, metadata_path).metadata_path + ".lock"


def holder() -> dict:
    """This process, as the lock file records it."""
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
    }


def describe_holder(text: str) -> str:
    """The holder recorded in a lock file's `text`, in words."""
    try:
        record = json.loads(text)
    except json.JSONDecodeError:
        return "a run that has not recorded itself yet"
    return (
        f"pid {record['pid']} on host {record['host']}, started {record['started']} "
        f"({record['command']})"
    )
