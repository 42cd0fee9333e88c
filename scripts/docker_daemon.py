"""A Docker engine for building the image and for the image tests: found, or installed and
started, and stopped again only if it was started here.

    with docker_daemon.engine() as docker:
        subprocess.run([docker.cli, "build", ...], env=docker.build_env())

When no daemon answers and the host allows it (root with apt-get), Debian's docker.io is
installed and `dockerd` started. Several processes may share that daemon: each holds a shared
lock while it uses it, and the last to leave stops it, by the process id recorded when it was
started. A daemon that was already running is never stopped. Where no engine can be had,
DockerUnavailable says exactly what is missing.

Stdlib only: it runs on the host's Python, like scripts/provision.py.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import provision

DEFAULT_HOST = "unix:///var/run/docker.sock"
# Where a daemon started here keeps its lock, process id and log (a tmpfs: gone at reboot).
STATE_DIR = Path("/run/gsam-tfx")
STARTUP_SECONDS = 60
SHUTDOWN_SECONDS = 60
# From Docker 23 on, `docker build` builds with BuildKit only through the buildx plugin;
# older CLIs have BuildKit built in (DOCKER_BUILDKIT=1).
FIRST_CLI_NEEDING_BUILDX = 23


class DockerUnavailable(RuntimeError):
    """No usable Docker engine, and none can be set up here; the message says what is missing."""


@dataclasses.dataclass(frozen=True)
class Engine:
    cli: str  # a docker CLI that builds with BuildKit
    host: str  # DOCKER_HOST of the daemon

    def build_env(self) -> dict:
        return dict(os.environ, DOCKER_HOST=self.host, DOCKER_BUILDKIT="1")

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(
            [self.cli, *args],
            env=self.build_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )


def cli_version(cli: str) -> tuple[int, ...] | None:
    """The client version of the docker CLI at `cli`, None if it does not run."""
    try:
        out = subprocess.run(
            [cli, "version", "--format", "{{.Client.Version}}"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    numbers = out.split("+")[0].split("-")[0].split(".")
    return tuple(int(n) for n in numbers) if all(n.isdigit() for n in numbers) else None


def builds_with_buildkit(cli: str) -> bool:
    version = cli_version(cli)
    if version is None:
        return False
    if version[0] < FIRST_CLI_NEEDING_BUILDX:
        return True
    return subprocess.run([cli, "buildx", "version"], capture_output=True).returncode == 0


def find_cli(candidates: list[str | None] | None = None) -> str | None:
    """The first docker CLI on PATH (or Debian's, /usr/bin/docker) that builds with BuildKit."""
    if candidates is None:
        candidates = [shutil.which("docker"), "/usr/bin/docker"]
    for cli in dict.fromkeys(c for c in candidates if c and os.access(c, os.X_OK)):
        if builds_with_buildkit(cli):
            return cli
    return None


def daemon_answers(cli: str, host: str) -> bool:
    try:
        return (
            subprocess.run(
                [cli, "info", "--format", "{{.ServerVersion}}"],
                env=dict(os.environ, DOCKER_HOST=host),
                capture_output=True,
                timeout=30,
            ).returncode
            == 0
        )
    except subprocess.TimeoutExpired:
        return False


def unavailable_reason(
    host: str, is_root: bool, has_apt: bool, cli: str | None, any_cli: str | None
) -> str:
    """Why no engine can be had. `cli` builds with BuildKit; `any_cli` is any docker CLI."""
    if cli is None and any_cli is not None:
        return (
            f"the docker CLI {any_cli} cannot build with BuildKit: from Docker "
            f"{FIRST_CLI_NEEDING_BUILDX} on it needs the buildx plugin "
            "(Docker's docker-buildx-plugin, or Debian's docker-buildx)"
        )
    missing = "no docker CLI is installed" if cli is None else f"no Docker daemon answers at {host}"
    if host != DEFAULT_HOST:
        return f"{missing}; a daemon is started here only for the default {DEFAULT_HOST}"
    if not is_root:
        return (
            f"{missing}, and installing and starting Debian's docker.io needs root "
            f"(this is uid {os.geteuid()}); start Docker, or join the docker group"
        )
    if not has_apt:
        return f"{missing}, and there is no apt-get to install Debian's docker.io"
    return missing


@contextlib.contextmanager
def engine() -> Iterator[Engine]:
    """A Docker engine for the duration of the block; see the module's docstring."""
    host = os.environ.get("DOCKER_HOST", DEFAULT_HOST)
    is_root = os.geteuid() == 0
    has_apt = shutil.which("apt-get") is not None
    if not is_root:
        cli = find_cli()
        if cli is None or not daemon_answers(cli, host):
            raise DockerUnavailable(
                unavailable_reason(host, False, has_apt, cli, shutil.which("docker"))
            )
        yield Engine(cli, host)
        return
    # Setting up and tearing down hold `setup` exclusively; users hold `users` shared.
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    with open(STATE_DIR / "setup.lock", "w") as setup, open(STATE_DIR / "users.lock", "w") as users:
        fcntl.flock(setup, fcntl.LOCK_EX)
        try:
            cli = _ready_cli(host, has_apt)
        except BaseException:
            _stop_if_unused(users)
            raise
        fcntl.flock(users, fcntl.LOCK_SH)
        fcntl.flock(setup, fcntl.LOCK_UN)
        try:
            yield Engine(cli, host)
        finally:
            fcntl.flock(users, fcntl.LOCK_UN)
            fcntl.flock(setup, fcntl.LOCK_EX)
            _stop_if_unused(users)


def _ready_cli(host: str, has_apt: bool) -> str:
    """As root, holding the setup lock: a BuildKit CLI and an answering daemon."""
    cli = find_cli()
    if cli is not None and daemon_answers(cli, host):
        return cli
    if host == DEFAULT_HOST and has_apt:
        provision.install_host_tools({"dockerd": "docker.io"})
        cli = find_cli()
    if cli is not None and daemon_answers(cli, host):
        return cli
    if cli is None or host != DEFAULT_HOST or shutil.which("dockerd") is None:
        raise DockerUnavailable(
            unavailable_reason(host, True, has_apt, cli, shutil.which("docker"))
        )
    _start_dockerd(cli, host)
    return cli


def _start_dockerd(cli: str, host: str) -> None:
    log_path = STATE_DIR / "dockerd.log"
    log(f"starting dockerd (log: {log_path})")
    with open(log_path, "ab") as daemon_log:
        process = subprocess.Popen(
            ["dockerd", "--host", host],
            stdin=subprocess.DEVNULL,
            stdout=daemon_log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C in the terminal does not reach it directly
        )
    (STATE_DIR / "dockerd.pid").write_text(f"{process.pid}\n")
    deadline = time.monotonic() + STARTUP_SECONDS
    while not daemon_answers(cli, host):
        if process.poll() is not None or time.monotonic() > deadline:
            tail = log_path.read_text(errors="replace").splitlines()[-15:]
            raise DockerUnavailable(
                "dockerd did not start; the end of its log:\n" + "\n".join(tail)
            )
        time.sleep(0.5)


def _stop_if_unused(users) -> None:
    """Holding the setup lock: stops the daemon started here once no process uses it."""
    try:
        fcntl.flock(users, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return  # another process still uses the daemon, and will stop it when it leaves
    pid_file = STATE_DIR / "dockerd.pid"
    if pid_file.exists():
        _stop(int(pid_file.read_text()))
        pid_file.unlink()


def _stop(pid: int) -> None:
    if not _is_dockerd(pid):
        return
    log(f"stopping dockerd (pid {pid}), which was started here")
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + SHUTDOWN_SECONDS
    while _is_dockerd(pid):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)  # reaps it when it is this process's child


def _is_dockerd(pid: int) -> bool:
    """Whether `pid` is a live dockerd (not a zombie, not a recycled id)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            command = cmdline.read().split(b"\0")[0]
        with open(f"/proc/{pid}/stat") as stat:
            state = stat.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z" and os.path.basename(command) == b"dockerd"


def log(message: str) -> None:
    print(f"[image] {message}", file=sys.stderr, flush=True)
