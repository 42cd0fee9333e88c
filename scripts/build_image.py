"""Builds the gsam-tfx Docker image, tagged by a hash of everything that goes into it.

    python3 scripts/build_image.py                                    # make image
    python3 scripts/build_image.py --tf-package 'tensorflow[and-cuda]'  # the GPU image
    python3 scripts/build_image.py --allow-no-docker -- COMMAND...    # make test

The tag is gsam-tfx:KEY, KEY a hash of the build context (the checkout less .dockerignore,
Dockerfile included), the TensorFlow package and the base image, like the environment cache
of scripts/provision.py: an image whose key exists is reused, not rebuilt. It prints the tag
and the image's size.

The Docker engine comes from scripts/docker_daemon.py (installed and started as root if need
be, and stopped afterwards). When debian:trixie-slim can neither be found nor pulled, the
base is a local Debian 13 made with debootstrap and `docker import`, kept as
gsam-tfx-base:trixie, and passed as the BASE_IMAGE build argument. An extra CA bundle (by
default the host's, for networks that intercept TLS) reaches pip as a BuildKit secret, in no
layer of the image.

With a COMMAND, it runs COMMAND while the daemon is up, with $GSAM_TFX_IMAGE naming the
image and $GSAM_TFX_DOCKER the CLI. --allow-no-docker runs COMMAND even when no engine can be
had, with the reason in $GSAM_TFX_IMAGE_UNAVAILABLE (the image tests skip with it), or when
the build fails, with its error in $GSAM_TFX_IMAGE_ERROR (the image tests fail with it).

Stdlib only: it runs on the host's Python.
"""

from __future__ import annotations

import argparse
import fcntl
import glob
import hashlib
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import docker_daemon
import provision

REPO = provision.REPO
IMAGE_NAME = "gsam-tfx"
DEFAULT_BASE = f"debian:{provision.DEBIAN_SUITE}-slim"
LOCAL_BASE = f"gsam-tfx-base:{provision.DEBIAN_SUITE}"
HOST_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
# Bump when what this file passes to the build changes in a way the context does not show.
KEY_VERSION = "1"
IMAGE_VARIABLE = "GSAM_TFX_IMAGE"
UNAVAILABLE_VARIABLE = "GSAM_TFX_IMAGE_UNAVAILABLE"
ERROR_VARIABLE = "GSAM_TFX_IMAGE_ERROR"
# Like debian:*-slim (debuerreotype's slimify): documentation stays out of the base, and out
# of what apt installs on it later.
SLIM_PATHS = (
    "/usr/share/doc/*",
    "/usr/share/info/*",
    "/usr/share/man/*",
    "/usr/share/locale/*",
    "/usr/share/lintian/*",
)
APT_CACHES = ("/var/cache/apt/*.bin", "/var/cache/apt/archives/*.deb", "/var/lib/apt/lists/*")


class BuildError(RuntimeError):
    """The image could not be built; the message says which step failed."""


# The build context and the key.


def dockerignore_rules(repo: Path = REPO) -> list[tuple[re.Pattern, bool]]:
    """.dockerignore's patterns as (regular expression, is an exception) in file order."""
    path = repo / ".dockerignore"
    lines = path.read_text().splitlines() if path.exists() else []
    rules = []
    for line in (raw.strip() for raw in lines):
        if not line or line.startswith("#"):
            continue
        exception = line.startswith("!")
        pattern = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
        rules.append((re.compile(_pattern_regex(pattern)), exception))
    return rules


def _pattern_regex(pattern: str) -> str:
    """Docker's .dockerignore matching: `*` and `?` stop at `/`, `**` crosses directories."""
    regex, index = "", 0
    while index < len(pattern):
        char = pattern[index]
        if pattern.startswith("**/", index):
            regex, index = regex + "(.*/)?", index + 3
            continue
        if pattern.startswith("**", index):
            regex, index = regex + ".*", index + 2
            continue
        regex += {"*": "[^/]*", "?": "[^/]"}.get(char, re.escape(char))
        index += 1
    return f"^{regex}$"


def is_ignored(relative: str, rules: list[tuple[re.Pattern, bool]]) -> bool:
    """Whether the context leaves `relative` out: the last rule matching it or a parent wins."""
    parts = relative.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    ignored = False
    for regex, exception in rules:
        if any(regex.match(prefix) for prefix in prefixes):
            ignored = not exception
    return ignored


def context_files(repo: Path = REPO) -> list[str]:
    """The files `docker build` sends, relative to `repo`, sorted."""
    rules = dockerignore_rules(repo)
    files = []
    for folder, folders, names in os.walk(repo):
        relative_folder = os.path.relpath(folder, repo)
        prefix = "" if relative_folder == "." else relative_folder + "/"
        if not any(exception for _, exception in rules):  # no exception can reopen a folder
            folders[:] = [name for name in folders if not is_ignored(prefix + name, rules)]
        files += [prefix + name for name in names if not is_ignored(prefix + name, rules)]
    return sorted(files)


def image_key(base_id: str, tf_package: str, repo: Path = REPO) -> str:
    """Hash of the build context, the TensorFlow package and the base image's id."""
    digest = hashlib.sha256(f"{KEY_VERSION}\0{base_id}\0{tf_package}".encode())
    for name in sorted(set(context_files(repo)) | {"Dockerfile", ".dockerignore"}):
        path = repo / name
        digest.update(f"\0{name}\0".encode())
        digest.update(path.read_bytes() if path.is_file() else b"<missing>")
    return digest.hexdigest()[:16]


# The base image.


def image_id(docker: docker_daemon.Engine, reference: str) -> str | None:
    result = docker.run("image", "inspect", "--format", "{{.Id}}", reference)
    return result.stdout.strip() if result.returncode == 0 else None


def base_image(docker: docker_daemon.Engine, requested: str | None) -> tuple[str, str]:
    """The base image (reference, id): `requested`, or debian:trixie-slim, or the local one."""
    if requested:
        if not (image_id(docker, requested) or pull(docker, requested)):
            raise BuildError(f"--base-image {requested} is neither here nor pullable")
        return requested, image_id(docker, requested)
    for reference in (DEFAULT_BASE, LOCAL_BASE):
        if found := image_id(docker, reference):
            return reference, found
    if pull(docker, DEFAULT_BASE):
        return DEFAULT_BASE, image_id(docker, DEFAULT_BASE)
    docker_daemon.log(f"making {LOCAL_BASE} with debootstrap instead")
    make_local_base(docker)
    return LOCAL_BASE, image_id(docker, LOCAL_BASE)


def pull(docker: docker_daemon.Engine, reference: str) -> bool:
    docker_daemon.log(f"pulling {reference}")
    try:
        result = docker.run("pull", reference, timeout=600)
    except subprocess.TimeoutExpired:
        docker_daemon.log(f"cannot pull {reference}: no answer in 600 s")
        return False
    if result.returncode != 0:
        docker_daemon.log(f"cannot pull {reference}: {result.stderr.strip()}")
    return result.returncode == 0


def make_local_base(docker: docker_daemon.Engine) -> None:
    """Debian 13 minbase, slimmed like debian:trixie-slim, imported as LOCAL_BASE."""
    if os.geteuid() != 0:
        raise BuildError(
            f"{DEFAULT_BASE} cannot be pulled, and making {LOCAL_BASE} with debootstrap needs "
            "root; `docker load` it from elsewhere, or pass --base-image"
        )
    provision.cache_root().mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="base-", dir=provision.cache_root()) as scratch:
        root = Path(scratch) / "root"
        provision.debootstrap(root)
        slim(root)
        tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
        imported = subprocess.run(
            [docker.cli, "import", "--change", 'CMD ["bash"]', "-", LOCAL_BASE],
            stdin=tar.stdout,
            env=docker.build_env(),
            capture_output=True,
            text=True,
        )
        tar.stdout.close()
        if tar.wait() != 0 or imported.returncode != 0:
            raise BuildError(f"docker import of {LOCAL_BASE} failed: {imported.stderr.strip()}")


def slim(root: Path) -> None:
    """Drops documentation (not licences), apt's caches, and the host's name and resolver."""
    (root / "etc/dpkg/dpkg.cfg.d/docker").write_text(
        "".join(f"path-exclude {path}\n" for path in SLIM_PATHS)
        + "path-include /usr/share/doc/*/copyright\n"
    )
    for pattern in SLIM_PATHS + APT_CACHES:
        for match in glob.glob(f"{root}{pattern}"):
            _remove_keeping_copyright(Path(match))
    for name in ("etc/resolv.conf", "etc/hostname"):
        (root / name).unlink(missing_ok=True)


def _remove_keeping_copyright(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        for child in path.iterdir():
            _remove_keeping_copyright(child)
        if not any(path.iterdir()):
            path.rmdir()
    elif path.name != "copyright":
        path.unlink()


# The image.


def ensure_image(
    docker: docker_daemon.Engine,
    tf_package: str = "",
    base: str | None = None,
    ca_bundle: str | None = None,
) -> str:
    """Builds gsam-tfx:KEY unless it exists; returns the tag and prints it with the size."""
    base_reference, base_id = base_image(docker, base)
    tag = f"{IMAGE_NAME}:{image_key(base_id, tf_package)}"
    provision.cache_root().mkdir(parents=True, exist_ok=True)
    with open(provision.cache_root() / f"image-{tag.split(':')[1]}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # concurrent builds of one tag: the second reuses
        started = time.monotonic()
        if image_id(docker, tag):
            how = "reused"
        else:
            build(docker, tag, base_reference, tf_package, ca_bundle)
            how = f"built in {time.monotonic() - started:.0f} s"
    size = int(docker.run("image", "inspect", "--format", "{{.Size}}", tag).stdout)
    print(f"{tag}  {size / 1e9:.2f} GB  ({how}, on {base_reference})", flush=True)
    return tag


def build(
    docker: docker_daemon.Engine,
    tag: str,
    base: str,
    tf_package: str,
    ca_bundle: str | None,
) -> None:
    command = [docker.cli, "build", "--progress", "plain", "--tag", tag]
    command += ["--build-arg", f"BASE_IMAGE={base}", "--build-arg", f"TF_PACKAGE={tf_package}"]
    if ca_bundle:
        command += ["--secret", f"id=ca_bundle,src={ca_bundle}"]
    docker_daemon.log(f"building {tag}: {' '.join(command[1:])} .")
    if subprocess.run(command + [str(REPO)], env=docker.build_env()).returncode != 0:
        raise BuildError(f"docker build of {tag} failed; its log is above")


def default_ca_bundle() -> str | None:
    configured = os.environ.get("GSAM_TFX_CA_BUNDLE")
    if configured is not None:
        return configured or None
    return HOST_CA_BUNDLE if os.path.isfile(HOST_CA_BUNDLE) else None


def main(argv: list[str]) -> int:
    command = argv[argv.index("--") + 1 :] if "--" in argv else []
    parser = argparse.ArgumentParser(prog="build_image.py", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--tf-package",
        default="",
        help="TensorFlow requirement replacing the default, e.g. 'tensorflow[and-cuda]'",
    )
    parser.add_argument(
        "--base-image",
        default=None,
        help=f"base image (default: {DEFAULT_BASE}, or {LOCAL_BASE} made here)",
    )
    parser.add_argument(
        "--ca-bundle",
        default=default_ca_bundle(),
        help="extra CA certificates pip trusts during the build, '' for none "
        "(default: $GSAM_TFX_CA_BUNDLE, else %(default)s)",
    )
    parser.add_argument(
        "--allow-no-docker",
        action="store_true",
        help="run COMMAND even without an image, telling it why (make test)",
    )
    args = parser.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    if args.ca_bundle and not os.path.isfile(args.ca_bundle):
        parser.error(f"--ca-bundle {args.ca_bundle}: no such file")
    try:
        with docker_daemon.engine() as docker:
            try:
                tag = ensure_image(docker, args.tf_package, args.base_image, args.ca_bundle)
                told = {IMAGE_VARIABLE: tag, provision.DOCKER_CLI_VARIABLE: docker.cli}
                told["DOCKER_HOST"] = docker.host
            except (BuildError, provision.ProvisionError) as error:
                if not (command and args.allow_no_docker):
                    raise
                docker_daemon.log(f"the image tests will fail: {error}")
                told = {ERROR_VARIABLE: str(error)}
            return _run(command, told) if command else 0
    except docker_daemon.DockerUnavailable as error:
        if not (command and args.allow_no_docker):
            print(f"error: no Docker engine: {error}", file=sys.stderr)
            return 1
        docker_daemon.log(f"the image tests will skip: {error}")
        return _run(command, {UNAVAILABLE_VARIABLE: str(error)})
    except (BuildError, provision.ProvisionError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


def _run(command: list[str], told: dict) -> int:
    return subprocess.run(command, env=dict(os.environ, **told)).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
