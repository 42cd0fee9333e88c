"""The Dockerfile's recipe, exercised without a Docker engine.

On hosts older than glibc 2.39 the environment that runs these tests is itself built by
scripts/install-system.sh on Debian 13, the image's base. Here the image's Python step
(install-python.sh ... project) runs on a copy of the build context, and what Vertex AI and
Kubeflow call in the image must import from it.
"""

import fnmatch
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOCKERFILE = (REPO / "Dockerfile").read_text()


def dockerfile_instructions():
    """Instructions with their continuation lines joined."""
    joined = re.sub(r"\\\n\s*", " ", DOCKERFILE)
    return [
        line.strip()
        for line in joined.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def test_the_dockerfile_uses_the_shared_install_scripts():
    instructions = dockerfile_instructions()
    assert instructions[0] == "FROM debian:trixie-slim"
    runs = [line for line in instructions if line.startswith("RUN ")]
    assert any("scripts/install-system.sh" in run for run in runs)
    [python_step] = [run for run in runs if "install-python.sh" in run]
    assert "install-python.sh /opt/gsam-tfx-venv /pipeline project" in python_step
    assert 'GSAM_TF_PACKAGE="$TF_PACKAGE"' in python_step
    assert "WORKDIR /pipeline" in instructions
    assert not any(line.startswith("ENTRYPOINT") for line in instructions)


def build_context(destination: Path) -> Path:
    """What `COPY . /pipeline` copies: the checkout less what .dockerignore names."""
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def ignored(relative: str) -> bool:
        parts = relative.split("/")
        prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        return any(fnmatch.fnmatch(prefix, pattern) for prefix in prefixes for pattern in patterns)

    for folder, folders, names in os.walk(REPO):
        folders[:] = [
            name
            for name in folders
            if not ignored(os.path.relpath(os.path.join(folder, name), REPO))
        ]
        for name in names:
            relative = os.path.relpath(os.path.join(folder, name), REPO)
            if not ignored(relative):
                (destination / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(REPO / relative, destination / relative)
    return destination


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    root = tmp_path_factory.mktemp("image")
    context = build_context(root / "pipeline")
    venv = root / "venv"
    subprocess.run(
        ["bash", str(REPO / "scripts" / "install-python.sh"), str(venv), str(context), "project"],
        check=True,
        timeout=1800,
    )
    return context, venv


def run_in_image(image, *args):
    context, venv = image
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env["PATH"] = f"{venv}/bin:{env['PATH']}"
    # Outside both the checkout and the build context: only the installed package can answer.
    return subprocess.run(
        [str(venv / "bin" / "python"), *args],
        cwd=context.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_the_context_leaves_out_tests_and_ships_the_sample(image):
    context, _ = image
    assert not (context / "tests").exists() and not (context / ".git").exists()
    assert (context / "data" / "fashion_mnist" / "schema.pbtxt").exists()


def test_the_kubeflow_v2_executor_entry_point_runs(image):
    result = run_in_image(
        image, "-m", "tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor", "--help"
    )
    assert result.returncode == 0, result.stderr
    assert "--json_serialized_invocation_args" in result.stdout + result.stderr


def test_the_project_is_installed_in_the_image(image):
    _, venv = image
    result = run_in_image(
        image,
        "-c",
        (
            "import os, trainer.task, pipelines.pipeline, components.validation_gate; "
            "print(callable(trainer.task.run_fn)); print(os.path.dirname(trainer.task.__file__))"
        ),
    )
    assert result.returncode == 0, result.stderr
    is_callable, location = result.stdout.split()
    assert is_callable == "True"
    assert location.startswith(str(venv)), "run_fn must come from the installed package"
