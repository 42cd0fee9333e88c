"""Unit tests of scripts/build_image.py and scripts/docker_daemon.py: the build context and
the image key, and the choice of a Docker CLI. No Docker engine needed."""

import os
import shutil
from pathlib import Path

import pytest

from tests.image_support import load_script

build_image = load_script("build_image")
docker_daemon = load_script("docker_daemon")
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def checkout(tmp_path):
    """A small checkout with the project's own .dockerignore."""
    shutil.copy(REPO / ".dockerignore", tmp_path / ".dockerignore")
    for name in (
        "Dockerfile",
        "pyproject.toml",
        "trainer/task.py",
        "trainer/__pycache__/task.cpython-313.pyc",
        "__pycache__/x.pyc",
        "data/fashion_mnist/schema.pbtxt",
        "tests/test_x.py",
        "demo-output/pipeline/x",
        ".git/HEAD",
        "gsam_tfx.egg-info/PKG-INFO",
    ):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(name)
    return tmp_path


def test_the_context_is_the_checkout_less_dockerignore(checkout):
    assert build_image.context_files(checkout) == [
        ".dockerignore",
        "Dockerfile",
        "data/fashion_mnist/schema.pbtxt",
        "pyproject.toml",
        "trainer/task.py",
    ]


def test_the_real_context_ships_the_sources_and_sample_but_no_tests():
    files = build_image.context_files(REPO)
    assert {"trainer/task.py", "data/fashion_mnist/schema.pbtxt", "Dockerfile"} <= set(files)
    assert not [f for f in files if f.startswith(("tests/", ".git/")) or "__pycache__" in f]


@pytest.mark.parametrize(
    "pattern, matches, does_not_match",
    [
        ("**/__pycache__", ["__pycache__", "a/b/__pycache__"], ["a/__pycache__x"]),
        ("*.egg-info", ["x.egg-info"], ["a/x.egg-info"]),
        ("bench/results", ["bench/results"], ["bench/results2", "x/bench/results"]),
        ("a/**/b", ["a/b", "a/x/y/b"], ["a/xb"]),
        ("file?.txt", ["file1.txt"], ["file/.txt", "file12.txt"]),
    ],
)
def test_dockerignore_patterns_match_as_docker_matches_them(pattern, matches, does_not_match):
    rules = [(build_image.re.compile(build_image._pattern_regex(pattern)), False)]
    assert all(build_image.is_ignored(path, rules) for path in matches)
    assert not any(build_image.is_ignored(path, rules) for path in does_not_match)


def test_an_exception_reopens_what_an_earlier_pattern_left_out(tmp_path):
    (tmp_path / ".dockerignore").write_text("docs\n!docs/keep.md\n")
    for name in ("docs/keep.md", "docs/drop.md"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(name)
    assert build_image.context_files(tmp_path) == [".dockerignore", "docs/keep.md"]


def test_the_key_follows_what_goes_into_the_image(checkout):
    key = build_image.image_key("sha256:base", "", checkout)
    assert build_image.image_key("sha256:base", "", checkout) == key
    for ignored in ("tests/test_x.py", "demo-output/pipeline/x", ".git/HEAD"):
        (checkout / ignored).write_text("changed")
        assert build_image.image_key("sha256:base", "", checkout) == key, ignored
    assert build_image.image_key("sha256:other", "", checkout) != key
    assert build_image.image_key("sha256:base", "tensorflow[and-cuda]", checkout) != key
    for shipped in ("trainer/task.py", "Dockerfile", "data/fashion_mnist/schema.pbtxt"):
        (checkout / shipped).write_text("changed")
        changed = build_image.image_key("sha256:base", "", checkout)
        assert changed != key, shipped
        key = changed


def fake_cli(folder: Path, name: str, version: str, has_buildx: bool) -> str:
    path = folder / name
    path.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = version ]; then echo {version}; exit 0; fi\n'
        f'if [ "$1" = buildx ]; then exit {0 if has_buildx else 1}; fi\n'
        "exit 1\n"
    )
    path.chmod(0o755)
    return str(path)


def test_a_cli_that_cannot_use_buildkit_is_passed_over(tmp_path):
    new_without_buildx = fake_cli(tmp_path, "docker28", "28.2.2", has_buildx=False)
    debian_20_10 = fake_cli(tmp_path, "docker20", "20.10.24+dfsg1", has_buildx=False)
    new_with_buildx = fake_cli(tmp_path, "docker27", "27.5.1", has_buildx=True)
    assert docker_daemon.find_cli([new_without_buildx, debian_20_10]) == debian_20_10
    assert docker_daemon.find_cli([None, new_with_buildx]) == new_with_buildx
    assert docker_daemon.find_cli([new_without_buildx, str(tmp_path / "absent")]) is None


def test_the_reasons_name_what_is_missing():
    default = docker_daemon.DEFAULT_HOST
    message = docker_daemon.unavailable_reason(default, False, True, None, None)
    assert "no docker CLI is installed" in message and "needs root" in message
    assert f"uid {os.geteuid()}" in message
    message = docker_daemon.unavailable_reason(default, True, False, "/usr/bin/docker", None)
    assert f"no Docker daemon answers at {default}" in message and "no apt-get" in message
    message = docker_daemon.unavailable_reason(default, True, True, None, "/usr/local/bin/docker")
    assert "/usr/local/bin/docker cannot build with BuildKit" in message and "buildx" in message
    message = docker_daemon.unavailable_reason("tcp://h:2375", True, True, "/usr/bin/docker", None)
    assert "tcp://h:2375" in message and "only for the default" in message
