"""The host scripts as modules, and running commands in the image the tests were given.

scripts/build_image.py (make test) builds the image, holds a Docker daemon, and names both
in the environment; in the Debian 13 sandbox, scripts/provision.py binds the CLI and the
daemon's socket in.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


def load_script(name: str):
    """scripts/NAME.py, which runs on the host's Python and so is not part of a package."""
    if str(SCRIPTS) not in sys.path:
        sys.path.insert(0, str(SCRIPTS))
    return importlib.import_module(name)


@dataclasses.dataclass(frozen=True)
class Image:
    tag: str
    cli: str

    def run(self, *command: str, mounts=(), entrypoint=None, workdir=None, timeout=900):
        """`docker run` of `command`; each of `mounts` is bound at its own path.

        A run past `timeout` removes its container, which would outlive the CLI otherwise.
        """
        name = f"gsam-tfx-test-{uuid.uuid4().hex[:12]}"
        args = [self.cli, "run", "--rm", "--name", name]
        for mount in mounts:
            args += ["--volume", f"{mount}:{mount}"]
        if entrypoint:
            args += ["--entrypoint", entrypoint]
        if workdir:
            args += ["--workdir", workdir]
        try:
            return subprocess.run(
                args + [self.tag, *command], capture_output=True, text=True, timeout=timeout
            )
        except subprocess.TimeoutExpired:
            subprocess.run([self.cli, "rm", "--force", name], capture_output=True)
            raise


def image_under_test() -> Image:
    """The image of this run, or a skip or failure that says why there is none."""
    build_image = load_script("build_image")
    if reason := os.environ.get(build_image.UNAVAILABLE_VARIABLE):
        pytest.skip(f"no Docker engine: {reason}")
    if error := os.environ.get(build_image.ERROR_VARIABLE):
        pytest.fail(f"the image did not build: {error}")
    tag = os.environ.get(build_image.IMAGE_VARIABLE)
    if not tag:
        pytest.skip(
            f"${build_image.IMAGE_VARIABLE} is not set: the image tests run under `make test`, "
            "or `python3 scripts/build_image.py -- scripts/in-env python -m pytest "
            "tests/test_image_build.py`, which build the image and hold a Docker daemon"
        )
    return Image(tag, os.environ[load_script("provision").DOCKER_CLI_VARIABLE])
