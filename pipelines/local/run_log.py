"""A run's full log: Python logging and everything written to stderr, in one file.

While a `RunLog` is open:

* Python logging (absl, TFX, ML Metadata, Beam, TensorFlow's Python side) at INFO and above
  is written to it, one formatted record a line;
* file descriptor 2 and `sys.stderr` are a pipe that a thread drains into it, so what C++
  code (TensorFlow, gRPC), child processes and Python write to stderr lands there too;
* the text goes to the file that `open_file` names, and is held in memory until then: the
  run id that names the file is known only once the first component starts;
* with `verbose`, it goes to the console's stderr as well.

Standard output is left alone: it is the console (component lines, Keras's epoch lines, the
summary). `console` writes to the console's stderr while fd 2 goes to the log.

Example:

    with RunLog(verbose=False) as log:
        log.open_file("/tmp/out/logs/run.log")
        logging.info("into the file only")
        print("Something went wrong.", file=log.console)
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import threading

from absl import logging as absl_logging

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_READ_SIZE = 1 << 16
# How long closing waits for the pipe's last bytes; a child process that outlives the run
# can keep the pipe open, and must not keep the run from ending.
_DRAIN_SECONDS = 10

# What was written to stderr inside `held_startup_output`, for the next RunLog to log.
_startup_output = bytearray()


@contextlib.contextmanager
def held_startup_output():
    """Holds what is written to stderr in the block, and gives it to the next `RunLog`.

    For the imports of a runner's `__main__`: TensorFlow prints C++ start-up lines (e.g.
    "Could not find cuda drivers") while it loads, before there is a log. If the block
    raises, what was held goes back to stderr.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        except BaseException:
            _restore_fd(saved)
            held.seek(0)
            os.write(2, held.read())
            raise
        _restore_fd(saved)
        held.seek(0)
        _startup_output.extend(held.read())


def _restore_fd(saved: int) -> None:
    sys.stderr.flush()
    os.dup2(saved, 2)
    os.close(saved)


class RunLog:
    """The full log of one run; a context manager (see the module docstring).

    Args:
        verbose: also copy the log to the console's stderr.
    """

    def __init__(self, verbose: bool = False):
        if not isinstance(verbose, bool):
            raise ValueError(f"verbose must be true or false, got {verbose!r}.")
        self.verbose = verbose
        self.path: str | None = None
        self.console = None
        self._held = bytearray()
        self._file = None
        self._lock = threading.Lock()

    def __enter__(self) -> "RunLog":
        self._held.extend(_startup_output)
        _startup_output.clear()
        sys.stderr.flush()
        self._console_fd = os.dup(2)
        if self.verbose:
            os.write(self._console_fd, self._held)
        self.console = open(os.dup(2), "w", buffering=1)
        copy_fd = os.dup(2) if self.verbose else None
        read_end, write_end = os.pipe()
        os.dup2(write_end, 2)
        self._records = open(write_end, "w", buffering=1, errors="replace")
        self._reader = threading.Thread(
            target=self._drain, args=(read_end, copy_fd), daemon=True
        )
        self._reader.start()
        handler = logging.StreamHandler(self._records)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        root = logging.getLogger()
        self._saved_logging = (root.handlers[:], root.level, absl_logging.get_verbosity())
        root.handlers = [handler]
        root.setLevel(logging.INFO)
        absl_logging.set_verbosity(absl_logging.INFO)
        # sys.stderr need not be fd 2 (under the tfx CLI, in notebooks, under pytest).
        self._saved_stderr, sys.stderr = sys.stderr, self._records
        return self

    def open_file(self, path: str) -> None:
        """Writes the log to `path` from now on, after what was held until now."""
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with self._lock:
            self._file = open(path, "ab")
            self._file.write(self._held)
            self._file.flush()
            self._held.clear()
            self.path = path

    def __exit__(self, *exc_info) -> None:
        sys.stderr = self._saved_stderr
        root = logging.getLogger()
        handlers, level, absl_verbosity = self._saved_logging
        root.handlers = handlers
        root.setLevel(level)
        absl_logging.set_verbosity(absl_verbosity)
        _restore_fd(self._console_fd)
        self._records.close()
        self._reader.join(_DRAIN_SECONDS)
        self.console.close()
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    def _drain(self, read_end: int, copy_fd: int | None) -> None:
        """Moves what reaches fd 2 into the log (and onto `copy_fd`) until the pipe closes."""
        with open(read_end, "rb", buffering=0) as pipe:
            while chunk := pipe.read(_READ_SIZE):
                with self._lock:
                    if self._file is None:
                        self._held.extend(chunk)
                    else:
                        self._file.write(chunk)
                        self._file.flush()
                if copy_fd is not None:
                    os.write(copy_fd, chunk)
        if copy_fd is not None:
            os.close(copy_fd)
