"""Builds, caches and enters the gsam-tfx environment (TFX 1.21, TensorFlow 2.21, Keras 3).

TFX 1.21's ml-metadata and TFDV wheels are `manylinux_2_39`, so the environment is:

* a plain virtual environment when the host has glibc >= 2.39 and Python 3.10-3.13;
* otherwise, as root, a Debian 13 (trixie) root filesystem made with debootstrap and
  entered with bubblewrap, which shows the caller's files at their own paths (see
  HOST_VIEW_RULE: `scripts/in-env --help` prints it);
* otherwise a refusal that says what is missing.

Commands run in the caller's working directory; the checkout is on PYTHONPATH, so
`python -m pipelines.local_runner` works from anywhere.

Both paths install with scripts/install-system.sh and scripts/install-python.sh, the
Dockerfile's own steps. Environments live outside the checkout, under
$GSAM_TFX_CACHE (default: $XDG_CACHE_HOME/gsam-tfx or ~/.cache/gsam-tfx), one folder per
strategy and hash of the dependency spec. A build happens under a lock, in a staging folder
that is renamed into place only once the stack imports, so an interrupted build is never
taken for a ready one.

Usage:
    scripts/provision.py run -- COMMAND [ARGS...]   # build if needed, run inside (scripts/in-env)
    scripts/provision.py run -- --help              # what a command inside sees of the host
    scripts/provision.py build                      # build if needed, print the path
    scripts/provision.py info                       # strategy, key and path, as JSON
    scripts/provision.py lock                       # re-resolve constraints.txt from pyproject.toml
    scripts/provision.py prune                      # delete cached environments of other keys

Stdlib only: it runs on the host's Python, before any environment exists.
"""

from __future__ import annotations

import argparse
import dataclasses
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# Files whose content defines the environment: change one and the next run rebuilds.
SPEC_FILES = (
    "pyproject.toml",
    "constraints.txt",
    "scripts/install-system.sh",
    "scripts/install-python.sh",
)
# Bump when the layout made by this file changes in a way the spec files do not show.
LAYOUT_VERSION = "1"
MIN_GLIBC = (2, 39)
VENV_PYTHONS = ((3, 13), (3, 12), (3, 11), (3, 10))
DEBIAN_SUITE = "trixie"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
ROOTFS_VENV = "/opt/gsam-tfx-venv"
STRATEGIES = ("venv", "rootfs")
SMOKE_IMPORTS = (
    "tensorflow, keras, tfx, tensorflow_model_analysis, tensorflow_data_validation, "
    "apache_beam, kfp, ml_metadata"
)
ACTIVE_ENV_VARIABLE = "GSAM_TFX_ACTIVE_ENV"
# Set by scripts/build_image.py for the image tests: the host's docker CLI, which the rootfs
# sandbox sees, with the daemon's socket, under SANDBOX_DOCKER_DIR.
DOCKER_CLI_VARIABLE = "GSAM_TFX_DOCKER"
SANDBOX_DOCKER_DIR = "/run/gsam-tfx-host"
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Host pip settings that point at host-only paths.
DROPPED_VARIABLES = ("PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL", "PIP_CONSTRAINT", "PYTHONHOME")
# The Debian 13 root's own directories: the host's never replace them, and a working directory
# or $HOME inside them is not bound.
ENVIRONMENT_DIRS = (
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/proc",
    "/run",
    "/sbin",
    "/sys",
    "/usr",
    "/var",
    ROOTFS_VENV,
)
# Top-level directories of the host that are not bound whole: the environment's own, /opt
# (it holds the environment's venv), /root (the environment's home when $HOME is not bound),
# /tmp (bound on its own) and /lost+found.
SYSTEM_TOP_LEVEL = frozenset(
    [path[1:] for path in ENVIRONMENT_DIRS if path.count("/") == 1]
    + ["opt", "root", "tmp", "lost+found"]
)
DATASETS_DIR = "/usr/share/datasets"
DOCKER_SOCKET = "/var/run/docker.sock"
IN_ENV_USAGE_HEAD = """\
usage: scripts/in-env COMMAND [ARGS...]

Runs COMMAND inside the gsam-tfx environment (TFX 1.21), building it first if needed
(see README.md). The command runs in your working directory, with the checkout on
PYTHONPATH: `scripts/in-env python -m pipelines.local_runner` works from any directory.
"""
HOST_VIEW_RULE = f"""\
What a command sees of this host. With a plain venv (glibc >= 2.39): all of it. In the
Debian 13 root (older hosts), only these host paths, each at its own path:
  - every top-level directory except the system ones
    ({" ".join("/" + name for name in sorted(SYSTEM_TOP_LEVEL))}),
    read-write: /home, /mnt, /media, /srv, /data, ...; and /tmp;
  - the working directory, where the command starts, and $HOME, with HOME unchanged (gcloud,
    kube and docker credentials, ~/.cache), read-write; but not / nor a path inside the
    environment's own directories
    ({" ".join(ENVIRONMENT_DIRS)}):
    then the command starts in the checkout, and HOME is the environment's /root;
  - {DATASETS_DIR}, read-only;
  - the Docker socket ($DOCKER_HOST's unix:// path, else {DOCKER_SOCKET}), if there is one.
So a folder under /opt or /root is visible as the working directory or $HOME, and other paths
under the system directories (/var/data, say) are not: keep data elsewhere."""
IN_ENV_USAGE = f"{IN_ENV_USAGE_HEAD}\n{HOST_VIEW_RULE}"


class ProvisionError(RuntimeError):
    """The environment cannot be built on this host; the message says why and what to do."""


@dataclasses.dataclass(frozen=True)
class Host:
    glibc: tuple[int, int] | None  # None: not a glibc system
    pythons: dict[tuple[int, int], str]  # version -> interpreter path
    is_root: bool
    has_apt: bool
    has_debootstrap: bool
    has_bwrap: bool


@dataclasses.dataclass(frozen=True)
class Strategy:
    kind: str  # "venv" or "rootfs"
    python: str | None = None  # host interpreter, venv only


def probe_host() -> Host:
    glibc = None
    try:
        match = re.fullmatch(r"glibc (\d+)\.(\d+).*", os.confstr("CS_GNU_LIBC_VERSION"))
        glibc = (int(match[1]), int(match[2])) if match else None
    except (ValueError, OSError):
        pass
    pythons = {}
    for major, minor in VENV_PYTHONS:
        for name in (f"python{major}.{minor}", "python3"):
            path = shutil.which(name)
            if path and _python_version(path) == (major, minor):
                pythons[(major, minor)] = path
                break
    return Host(
        glibc=glibc,
        pythons=pythons,
        is_root=os.geteuid() == 0,
        has_apt=shutil.which("apt-get") is not None,
        has_debootstrap=shutil.which("debootstrap") is not None,
        has_bwrap=shutil.which("bwrap") is not None,
    )


def _python_version(path: str) -> tuple[int, int] | None:
    try:
        out = subprocess.run(
            [path, "-c", "import sys, venv; print(*sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout.split()
        return int(out[0]), int(out[1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def choose_strategy(host: Host, forced: str | None = None) -> Strategy:
    """Picks how to build the environment on `host`; `forced` is $GSAM_TFX_ENV."""
    if forced is not None and forced not in STRATEGIES:
        raise ProvisionError(
            f"GSAM_TFX_ENV must be one of {', '.join(STRATEGIES)}, got {forced!r}."
        )
    venv_ok = host.glibc is not None and host.glibc >= MIN_GLIBC and bool(host.pythons)
    rootfs_ok = host.is_root and (host.has_apt or (host.has_debootstrap and host.has_bwrap))
    if forced == "venv" or (forced is None and venv_ok):
        if not venv_ok:
            raise ProvisionError(refusal_message(host, "GSAM_TFX_ENV=venv was asked for, but "))
        return Strategy("venv", host.pythons[max(host.pythons)])
    if rootfs_ok:
        return Strategy("rootfs")
    raise ProvisionError(refusal_message(host))


def refusal_message(host: Host, prefix: str = "") -> str:
    glibc = ".".join(map(str, host.glibc)) if host.glibc else "none (not a glibc system)"
    pythons = ", ".join(f"{a}.{b}" for a, b in sorted(host.pythons)) or "none"
    wanted = ".".join(map(str, MIN_GLIBC))
    lines = [
        f"{prefix}gsam-tfx cannot build its environment on this host.",
        f"  TFX 1.21 (ml-metadata, TFDV) needs glibc >= {wanted}: this host has {glibc}.",
        f"  A plain venv also needs Python 3.10-3.13 on PATH: found {pythons}.",
    ]
    if not host.is_root:
        lines.append(
            "  The fallback, a Debian 13 root filesystem, needs root (debootstrap and bubblewrap)."
        )
    elif not host.has_apt:
        lines.append(
            "  The fallback, a Debian 13 root filesystem, needs debootstrap and bwrap on PATH"
            " (or apt-get to install them)."
        )
    lines += [
        "Do one of these:",
        f"  - run on a host with glibc >= {wanted} (Debian 13, Ubuntu 24.04) and Python 3.10-3.13;",
        "  - run as root on a Debian or Ubuntu host, so a Debian 13 root can be built;",
        "  - use the Docker image (see README.md): docker build -t gsam-tfx . &&"
        " docker run --rm gsam-tfx python -m pipelines.local_runner",
    ]
    return "\n".join(lines)


def spec_key(repo: Path = REPO) -> str:
    """Hash of everything that defines the environment's content.

    Of pyproject.toml only the dependency tables count, so editing tool settings (pytest's,
    say) does not rebuild the environment.
    """
    digest = hashlib.sha256(LAYOUT_VERSION.encode())
    for name in SPEC_FILES:
        path = repo / name
        content = path.read_bytes() if path.exists() else b"<missing>"
        if name == "pyproject.toml" and path.exists():
            content = _dependency_spec(content)
        digest.update(f"\0{name}\0".encode())
        digest.update(content)
    return digest.hexdigest()[:16]


def _dependency_spec(pyproject: bytes) -> bytes:
    try:
        import tomllib
    except ImportError:  # Python < 3.11: the whole file stands for its dependencies.
        return pyproject
    project = tomllib.loads(pyproject.decode()).get("project", {})
    spec = {
        key: project.get(key)
        for key in ("requires-python", "dependencies", "optional-dependencies")
    }
    return json.dumps(spec, sort_keys=True).encode()


def cache_root() -> Path:
    configured = os.environ.get("GSAM_TFX_CACHE")
    if configured:
        return Path(configured)
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(xdg) / "gsam-tfx"


def env_dir(strategy: Strategy, key: str) -> Path:
    return cache_root() / f"{strategy.kind}-{key}"


# Building.


def ensure_env(strategy: Strategy, key: str) -> Path:
    """Returns the ready environment for `key`, building it under a lock if needed."""
    final = env_dir(strategy, key)
    if final.is_dir():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    with open(final.parent / f"{final.name}.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _log(f"waiting for another build of {final} to finish")
            fcntl.flock(lock, fcntl.LOCK_EX)
        if final.is_dir():
            return final
        staging = final.parent / f"{final.name}.partial"
        if staging.exists():
            _log(f"removing {staging}, left by an interrupted build")
            remove_tree(staging)
        started = time.monotonic()
        _log(f"building the {strategy.kind} environment in {final} (first run only)")
        if strategy.kind == "venv":
            _build_venv(strategy, staging, final)
        else:
            _build_rootfs(staging)
        (staging / "env.json").write_text(
            json.dumps(
                {
                    "strategy": strategy.kind,
                    "key": key,
                    "built": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    "build_seconds": round(time.monotonic() - started),
                },
                indent=2,
            )
            + "\n"
        )
        os.rename(staging, final)
        _log(f"environment ready in {time.monotonic() - started:.0f} s: {final}")
        return final


def _build_venv(strategy: Strategy, staging: Path, final: Path) -> None:
    staging.mkdir()
    venv = staging / "venv"
    python_dir = os.path.dirname(strategy.python)
    _run(
        ["bash", str(REPO / "scripts/install-python.sh"), str(venv), str(REPO), "deps"],
        env=_clean_env(PATH=f"{python_dir}:{os.environ.get('PATH', '')}"),
    )
    _relocate_venv(venv, final / "venv")
    _run([str(venv / "bin/python"), "-c", f"import {SMOKE_IMPORTS}"])


def _relocate_venv(venv: Path, target: Path) -> None:
    """Rewrites the venv's absolute paths (script shebangs, activate) before it is renamed."""
    old, new = str(venv).encode(), str(target).encode()
    for path in [*venv.joinpath("bin").iterdir(), venv / "pyvenv.cfg"]:
        if path.is_symlink() or not path.is_file():
            continue
        content = path.read_bytes()
        if old in content and b"\0" not in content:
            path.write_bytes(content.replace(old, new))


def _build_rootfs(staging: Path) -> None:
    install_host_tools({"debootstrap": "debootstrap", "bwrap": "bubblewrap"})
    debootstrap(staging, include=("python3", "python3-venv", "python3-pip", "ca-certificates"))
    for host_file in ("/etc/ssl/certs/ca-certificates.crt", "/etc/resolv.conf"):
        if os.path.exists(host_file):
            shutil.copy(host_file, staging / host_file.lstrip("/"), follow_symlinks=True)
    repo, env = str(REPO), _clean_env(PATH=SYSTEM_PATH)
    _run(bwrap_command(staging, ["bash", f"{repo}/scripts/install-system.sh"]), env=env)
    _run(
        bwrap_command(
            staging, ["bash", f"{repo}/scripts/install-python.sh", ROOTFS_VENV, repo, "deps"]
        ),
        env=env,
    )
    _run(
        bwrap_command(staging, [f"{ROOTFS_VENV}/bin/python", "-c", f"import {SMOKE_IMPORTS}"]),
        env=env,
    )


def debootstrap(target: Path, include: tuple[str, ...] = ()) -> None:
    """Makes a minimal Debian 13 root at `target`, from $GSAM_TFX_DEBIAN_MIRROR if set."""
    install_host_tools({"debootstrap": "debootstrap"})
    mirror = os.environ.get("GSAM_TFX_DEBIAN_MIRROR", DEFAULT_MIRROR)
    packages = [f"--include={','.join(include)}"] if include else []
    # A private mount namespace: debootstrap's /proc and /sys mounts die with it, even if killed.
    _run(
        ["unshare", "--mount", "--propagation", "private", "debootstrap", "--variant=minbase"]
        + packages
        + [DEBIAN_SUITE, str(target), mirror]
    )


def install_host_tools(tools: dict[str, str]) -> None:
    """Installs with apt-get the packages of those `tools` (command: package) not on PATH."""
    missing = [package for tool, package in tools.items() if shutil.which(tool) is None]
    if missing:
        _log(f"installing {' '.join(missing)} with apt-get")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        _run(["apt-get", "update", "-qq"], env=env)
        _run(["apt-get", "install", "-y", "-qq", *missing], env=env)


def remove_tree(path: Path) -> None:
    """Deletes `path`, first unmounting anything still mounted below it."""
    prefix = str(path.resolve()) + "/"
    with open("/proc/self/mountinfo") as mountinfo:
        mounts = [line.split()[4] for line in mountinfo]
    for mount in sorted((m for m in mounts if m.startswith(prefix)), reverse=True):
        subprocess.run(["umount", "-l", mount], check=False)
    shutil.rmtree(path)


# Running.


@dataclasses.dataclass(frozen=True)
class HostView:
    """What of the host a command inside the Debian 13 root sees, besides the checkout and /tmp.

    Attributes:
        read_write, read_only: host paths bound at their own paths.
        cwd: where the command starts.
        home: the caller's $HOME, bound; `None` keeps the environment's /root.
    """

    read_write: tuple[str, ...]
    read_only: tuple[str, ...]
    cwd: str
    home: str | None


def host_view(cwd: str, home: str | None, environ: dict, host_root: str = "/") -> HostView:
    """The host paths shown to a command started from `cwd` (rule: HOST_VIEW_RULE).

    `host_root` is where the host's / is (tests pass a fake one); paths returned are the
    host's absolute paths.
    """

    def on_host(path):
        return os.path.join(host_root, path.lstrip("/"))

    top_level = sorted(
        f"/{name}"
        for name in os.listdir(host_root)
        if name not in SYSTEM_TOP_LEVEL and os.path.isdir(on_host(name))
    )
    read_write = [*top_level]
    for path in (home, cwd):
        if path and _bindable(path) and os.path.isdir(on_host(path)):
            if not _inside(path, [*read_write, "/tmp", str(REPO)]):
                read_write.append(path)
    socket = _docker_socket(environ)
    if os.path.exists(on_host(socket)) and not _inside(socket, read_write):
        read_write.append(socket)
    read_only = [DATASETS_DIR] if os.path.isdir(on_host(DATASETS_DIR)) else []
    return HostView(
        read_write=tuple(read_write),
        read_only=tuple(read_only),
        cwd=cwd if _bindable(cwd) else str(REPO),
        home=home if home and _bindable(home) else None,
    )


def _bindable(path: str) -> bool:
    """Whether `path` can be bound without hiding the environment's own files."""
    path = os.path.normpath(path)
    return path != "/" and not _inside(path, ENVIRONMENT_DIRS) and not _inside(ROOTFS_VENV, [path])


def _inside(path: str, parents) -> bool:
    return any(path == parent or path.startswith(parent.rstrip("/") + "/") for parent in parents)


def _docker_socket(environ: dict) -> str:
    docker_host = environ.get("DOCKER_HOST", "")
    return docker_host[len("unix://") :] if docker_host.startswith("unix://") else DOCKER_SOCKET


def bwrap_command(rootfs: Path, command: list[str], view: HostView | None = None) -> list[str]:
    """The bwrap argv that runs `command` in `rootfs`: with the checkout, /tmp and ../shared,
    plus `view` (None, for building: the checkout is the working directory, HOME is /root)."""
    repo = str(REPO)
    args = [
        "bwrap",
        "--bind",
        str(rootfs),
        "/",
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--tmpfs",
        "/dev/shm",
        "--ro-bind",
        "/sys",
        "/sys",
        "--bind",
        "/tmp",
        "/tmp",
        "--bind",
        repo,
        repo,
    ]
    shared = REPO.parent / "shared"
    if shared.is_dir():
        args += ["--bind", str(shared), str(shared)]
    for host_file in ("/etc/resolv.conf", "/etc/ssl/certs/ca-certificates.crt"):
        if os.path.exists(host_file):
            args += ["--ro-bind", host_file, host_file]
    view = view or HostView(read_write=(), read_only=(), cwd=repo, home=None)
    for path in view.read_write:
        # The Debian root links /var/run to /run: a socket under it is bound at its real path.
        args += ["--bind", path, path.replace("/var/run/", "/run/", 1)]
    for path in view.read_only:
        args += ["--ro-bind", path, path]
    args += _docker_binds()
    args += ["--die-with-parent", "--chdir", view.cwd, "--setenv", "HOME", view.home or "/root"]
    return args + ["--"] + command


def _docker_binds() -> list[str]:
    """The host's docker CLI and daemon socket, when $GSAM_TFX_DOCKER names the CLI.

    They go under a tmpfs /run, so that no mount point is left behind in the root.
    """
    cli = os.environ.get(DOCKER_CLI_VARIABLE)
    if not cli:
        return []
    inside = f"{SANDBOX_DOCKER_DIR}/docker"
    args = ["--tmpfs", "/run", "--ro-bind", cli, inside, "--setenv", DOCKER_CLI_VARIABLE, inside]
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if host.startswith("unix://"):  # tcp:// daemons are reached through the shared network
        socket = f"{SANDBOX_DOCKER_DIR}/docker.sock"
        args += [
            "--bind",
            host[len("unix://") :],
            socket,
            "--setenv",
            "DOCKER_HOST",
            f"unix://{socket}",
        ]
    return args


def command_in_env(
    strategy: Strategy, path: Path, key: str, command: list[str], view: HostView | None = None
) -> tuple[list[str], dict]:
    """The argv and environment that run `command` inside the environment at `path`.

    `view` is what the Debian 13 root shows of the host (a venv sees all of it); `None`
    runs in the checkout with the environment's own HOME, as builds do.
    """
    venv = path / "venv" if strategy.kind == "venv" else Path(ROOTFS_VENV)
    env = _clean_env(
        PATH=f"{venv}/bin:{SYSTEM_PATH}",
        VIRTUAL_ENV=str(venv),
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        **{ACTIVE_ENV_VARIABLE: key},
    )
    if strategy.kind == "rootfs":
        command = bwrap_command(path, command, view)
    return command, env


def _clean_env(**overrides: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in DROPPED_VARIABLES}
    return {**env, **overrides}


def _run(command: list[str], env: dict | None = None) -> None:
    result = subprocess.run(command, env=env, cwd=REPO)
    if result.returncode != 0:
        raise ProvisionError(
            f"command failed with exit code {result.returncode}: {' '.join(command)}"
        )


def _log(message: str) -> None:
    print(f"[provision] {message}", file=sys.stderr, flush=True)


# Commands.


def _current() -> tuple[Strategy, str]:
    return choose_strategy(probe_host(), os.environ.get("GSAM_TFX_ENV")), spec_key()


def cmd_run(command: list[str]) -> int:
    """Runs `command` inside the environment, in the caller's working directory."""
    if not command:
        raise ProvisionError("run needs a command: scripts/in-env COMMAND [ARGS...]")
    if command[0] in ("-h", "--help"):
        view = host_view(os.getcwd(), os.environ.get("HOME"), os.environ)
        print(IN_ENV_USAGE)
        print(f"\nFrom here, in the Debian 13 root: read-write {' '.join(view.read_write)};")
        print(f"read-only {' '.join(view.read_only) or 'nothing'}; starts in {view.cwd}; ", end="")
        print(f"HOME={view.home or '/root'}.")
        return 0
    key = spec_key()
    if os.environ.get(ACTIVE_ENV_VARIABLE) == key:  # already inside: no second sandbox
        os.execvp(command[0], command)
    strategy = choose_strategy(probe_host(), os.environ.get("GSAM_TFX_ENV"))
    cwd = os.getcwd()
    view = host_view(cwd, os.environ.get("HOME"), os.environ)
    if strategy.kind == "rootfs" and view.cwd != cwd:
        _log(f"{cwd} is the environment's own in its Debian 13 root; starting in {view.cwd}")
    argv, env = command_in_env(strategy, ensure_env(strategy, key), key, command, view)
    os.execvpe(argv[0], argv, env)


def cmd_lock() -> int:
    """Resolves the dependencies afresh inside the environment and rewrites constraints.txt."""
    scratch = f"/tmp/gsam-tfx-lock-{os.getpid()}"
    strategy, key = _current()
    path = ensure_env(strategy, key)
    script = (
        f"bash scripts/install-python.sh {scratch} . deps /dev/null && "
        f"{scratch}/bin/pip freeze --exclude-editable > {scratch}.txt"
    )
    argv, env = command_in_env(strategy, path, key, ["bash", "-c", script])
    try:
        _run(argv, env=env)
        header = "# Generated by `scripts/provision.py lock` (make lock) from pyproject.toml.\n"
        staged = REPO / "constraints.txt.new"
        staged.write_text(header + Path(f"{scratch}.txt").read_text())
        os.replace(staged, REPO / "constraints.txt")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        Path(f"{scratch}.txt").unlink(missing_ok=True)
    _log("constraints.txt rewritten; the next run rebuilds the environment")
    return 0


def cmd_prune() -> int:
    """Deletes the environments of other keys, except those being built right now."""
    strategy, key = _current()
    keep = env_dir(strategy, key).name
    for lock_path in sorted(cache_root().glob("*.lock")):
        name = lock_path.name[: -len(".lock")]
        if name == keep:
            continue
        with open(lock_path) as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                _log(f"skipping {name}: a build holds its lock")
                continue
            for path in (cache_root() / name, cache_root() / f"{name}.partial"):
                if path.exists():
                    _log(f"removing {path}")
                    remove_tree(path)
            lock_path.unlink()
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="provision.py", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a command inside the environment, building it first")
    run.add_argument("argv", nargs=argparse.REMAINDER)
    sub.add_parser("build", help="build the environment if needed and print its path")
    sub.add_parser("info", help="print the strategy, key and path as JSON")
    sub.add_parser("lock", help="re-resolve constraints.txt from pyproject.toml")
    sub.add_parser("prune", help="delete cached environments of other dependency specs")
    args = parser.parse_args(argv)
    try:
        if args.command == "run":
            return cmd_run(args.argv[1:] if args.argv[:1] == ["--"] else args.argv)
        if args.command == "lock":
            return cmd_lock()
        if args.command == "prune":
            return cmd_prune()
        strategy, key = _current()
        if args.command == "build":
            print(ensure_env(strategy, key))
        else:
            path = env_dir(strategy, key)
            print(
                json.dumps(
                    {
                        "strategy": strategy.kind,
                        "python": strategy.python,
                        "key": key,
                        "path": str(path),
                        "ready": path.is_dir(),
                    },
                    indent=2,
                )
            )
        return 0
    except ProvisionError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
