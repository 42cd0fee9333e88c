"""Unit tests of scripts/provision.py: the choice of path, the cache key, the build protocol."""

import importlib.util
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("provision", REPO / "scripts" / "provision.py")
provision = importlib.util.module_from_spec(_spec)
sys.modules["provision"] = provision  # dataclasses look their module up there
_spec.loader.exec_module(provision)


def make_host(
    glibc=(2, 41),
    pythons=((3, 12), (3, 13)),
    is_root=False,
    has_apt=False,
    has_debootstrap=False,
    has_bwrap=False,
):
    return provision.Host(
        glibc=glibc,
        pythons={version: f"/usr/bin/python{version[0]}.{version[1]}" for version in pythons},
        is_root=is_root,
        has_apt=has_apt,
        has_debootstrap=has_debootstrap,
        has_bwrap=has_bwrap,
    )


class TestChooseStrategy:
    def test_new_glibc_takes_a_venv_with_the_newest_python(self):
        strategy = provision.choose_strategy(make_host(glibc=(2, 39)))
        assert strategy == provision.Strategy("venv", "/usr/bin/python3.13")

    def test_old_glibc_as_root_with_apt_takes_the_debian_13_root(self):
        host = make_host(glibc=(2, 36), pythons=[(3, 11)], is_root=True, has_apt=True)
        assert provision.choose_strategy(host) == provision.Strategy("rootfs")

    def test_new_glibc_without_a_supported_python_falls_back_to_the_root(self):
        host = make_host(
            glibc=(2, 40), pythons=[], is_root=True, has_debootstrap=True, has_bwrap=True
        )
        assert provision.choose_strategy(host).kind == "rootfs"

    def test_old_glibc_without_root_is_refused_with_what_to_do(self):
        host = make_host(glibc=(2, 36), pythons=[(3, 11)])
        with pytest.raises(provision.ProvisionError) as error:
            provision.choose_strategy(host)
        message = str(error.value)
        assert "glibc >= 2.39" in message and "this host has 2.36" in message
        assert "needs root" in message
        assert "docker build -t gsam-tfx ." in message
        assert "found 3.11" in message

    def test_non_glibc_root_without_tools_names_them(self):
        host = make_host(glibc=None, pythons=[], is_root=True)
        with pytest.raises(provision.ProvisionError, match="debootstrap and bwrap") as error:
            provision.choose_strategy(host)
        assert "not a glibc system" in str(error.value)

    def test_forced_rootfs_on_a_new_host(self):
        host = make_host(glibc=(2, 41), is_root=True, has_apt=True)
        assert provision.choose_strategy(host, forced="rootfs").kind == "rootfs"

    def test_forced_venv_on_an_old_host_is_refused(self):
        host = make_host(glibc=(2, 36), is_root=True, has_apt=True)
        with pytest.raises(provision.ProvisionError, match="GSAM_TFX_ENV=venv was asked for"):
            provision.choose_strategy(host, forced="venv")

    def test_unknown_forced_strategy_names_the_variable(self):
        with pytest.raises(provision.ProvisionError, match="GSAM_TFX_ENV must be one of"):
            provision.choose_strategy(make_host(), forced="conda")


@pytest.fixture
def spec_repo(tmp_path):
    for name in provision.SPEC_FILES:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / name, tmp_path / name)
    (tmp_path / "README.md").write_text("docs\n")
    return tmp_path


class TestSpecKey:
    def test_same_spec_same_key(self, spec_repo):
        assert provision.spec_key(spec_repo) == provision.spec_key(spec_repo)
        assert provision.spec_key(spec_repo) == provision.spec_key(REPO)

    @pytest.mark.parametrize("name", [n for n in provision.SPEC_FILES if n != "pyproject.toml"])
    def test_each_spec_file_changes_the_key(self, spec_repo, name):
        before = provision.spec_key(spec_repo)
        with open(spec_repo / name, "a") as file:
            file.write("\n# changed\n")
        assert provision.spec_key(spec_repo) != before

    def test_other_files_do_not_change_the_key(self, spec_repo):
        before = provision.spec_key(spec_repo)
        (spec_repo / "README.md").write_text("other docs\n")
        (spec_repo / "trainer.py").write_text("x = 1\n")
        assert provision.spec_key(spec_repo) == before

    def test_only_the_dependency_tables_of_pyproject_count(self, spec_repo):
        before = provision.spec_key(spec_repo)
        pyproject = spec_repo / "pyproject.toml"
        text = pyproject.read_text()
        pyproject.write_text(text.replace('addopts = "', 'addopts = "-q '))
        assert provision.spec_key(spec_repo) == before
        pyproject.write_text(text.replace('"tensorboard>=2.20",', '"tensorboard>=2.21",'))
        assert provision.spec_key(spec_repo) != before

    def test_a_missing_spec_file_is_part_of_the_key(self, spec_repo):
        before = provision.spec_key(spec_repo)
        (spec_repo / "constraints.txt").unlink()
        assert provision.spec_key(spec_repo) != before


class TestEnsureEnv:
    @pytest.fixture(autouse=True)
    def cache(self, tmp_path, monkeypatch):
        monkeypatch.setenv("GSAM_TFX_CACHE", str(tmp_path / "cache"))
        return tmp_path / "cache"

    def test_builds_aside_then_renames(self, cache, monkeypatch):
        seen = []

        def build(strategy, staging, final):
            seen.append((staging, final, final.exists()))
            staging.mkdir()
            (staging / "venv").mkdir()

        monkeypatch.setattr(provision, "_build_venv", build)
        path = provision.ensure_env(provision.Strategy("venv", "/usr/bin/python3"), "abc")
        assert path == cache / "venv-abc" and (path / "venv").is_dir()
        assert seen == [(cache / "venv-abc.partial", cache / "venv-abc", False)]
        assert '"key": "abc"' in (path / "env.json").read_text()
        assert not (cache / "venv-abc.partial").exists()

    def test_a_ready_env_is_not_rebuilt(self, cache, monkeypatch):
        (cache / "venv-abc").mkdir(parents=True)
        monkeypatch.setattr(provision, "_build_venv", lambda *a: pytest.fail("rebuilt"))
        assert provision.ensure_env(provision.Strategy("venv", "/p"), "abc") == cache / "venv-abc"

    def test_an_interrupted_build_is_never_taken_for_ready_and_recovers(self, cache, monkeypatch):
        def killed(strategy, staging, final):
            staging.mkdir()
            (staging / "half-written").write_text("")
            raise KeyboardInterrupt

        monkeypatch.setattr(provision, "_build_venv", killed)
        strategy = provision.Strategy("venv", "/p")
        with pytest.raises(KeyboardInterrupt):
            provision.ensure_env(strategy, "abc")
        assert not (cache / "venv-abc").exists()
        assert (cache / "venv-abc.partial" / "half-written").exists()

        def build(strategy, staging, final):
            assert not staging.exists(), "the stale staging folder must be removed first"
            staging.mkdir()

        monkeypatch.setattr(provision, "_build_venv", build)
        assert provision.ensure_env(strategy, "abc").is_dir()
        assert not (cache / "venv-abc" / "half-written").exists()

    def test_concurrent_runs_wait_for_the_lock(self, cache, tmp_path):
        """A second process blocks on the lock until the first one's build is done."""
        cache.mkdir(parents=True)
        release = tmp_path / "release"
        script = f"""
import importlib.util, sys, time
spec = importlib.util.spec_from_file_location("provision", {str(REPO / "scripts/provision.py")!r})
provision = importlib.util.module_from_spec(spec); sys.modules["provision"] = provision
spec.loader.exec_module(provision)
def build(strategy, staging, final):
    staging.mkdir()
    while not provision.Path({str(release)!r}).exists():
        time.sleep(0.05)
    (staging / ("by-" + sys.argv[1])).write_text("")
provision._build_venv = build
print(sorted(p.name for p in provision.ensure_env(provision.Strategy("venv", "/p"), "k").iterdir()))
"""
        env = dict(os.environ, GSAM_TFX_CACHE=str(cache))
        first = subprocess.Popen(
            [sys.executable, "-c", script, "first"], env=env, stdout=subprocess.PIPE, text=True
        )
        while not (cache / "venv-k.partial").exists():
            assert first.poll() is None
            time.sleep(0.05)
        second = subprocess.Popen(
            [sys.executable, "-c", script, "second"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert "waiting for another build" in second.stderr.readline()
        release.touch()
        assert first.communicate(timeout=60)[0].strip() == "['by-first', 'env.json']"
        assert second.communicate(timeout=60)[0].strip() == "['by-first', 'env.json']"
        assert second.returncode == 0


def test_relocate_venv_rewrites_shebangs_and_activate(tmp_path):
    staging = tmp_path / "env.partial" / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(staging)], check=True)
    (staging / "bin" / "tool").write_text(f"#!{staging}/bin/python\nprint('hi')\n")
    final = tmp_path / "env" / "venv"
    provision._relocate_venv(staging, final)
    assert (staging / "bin" / "tool").read_text().startswith(f"#!{final}/bin/python\n")
    assert str(staging) not in (staging / "bin" / "activate").read_text()
    assert (staging / "bin" / "python").is_symlink()


def test_command_in_env_for_the_root_binds_the_checkout():
    argv, env = provision.command_in_env(
        provision.Strategy("rootfs"), Path("/cache/rootfs-k"), "k", ["python", "-V"]
    )
    assert argv[:4] == ["bwrap", "--bind", "/cache/rootfs-k", "/"]
    assert argv[argv.index("--bind", 4) :][:3] == ["--bind", "/tmp", "/tmp"]
    assert ["--bind", str(REPO), str(REPO)] == argv[argv.index(str(REPO)) - 1 :][:3]
    assert argv[-3:] == ["--", "python", "-V"]
    assert env["PATH"].startswith(provision.ROOTFS_VENV + "/bin:")
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(REPO)
    assert env[provision.ACTIVE_ENV_VARIABLE] == "k"
    assert "PIP_FIND_LINKS" not in env


@pytest.mark.parametrize(
    "docker_host, socket",
    [(None, "/var/run/docker.sock"), ("unix:///srv/d.sock", "/srv/d.sock"), ("tcp://h:2375", None)],
)
def test_the_root_sees_the_docker_cli_and_socket_it_is_given(monkeypatch, docker_host, socket):
    monkeypatch.delenv(provision.DOCKER_CLI_VARIABLE, raising=False)
    assert "/run" not in provision.bwrap_command(Path("/cache/rootfs-k"), ["true"])
    monkeypatch.setenv(provision.DOCKER_CLI_VARIABLE, "/usr/bin/docker")
    if docker_host:
        monkeypatch.setenv("DOCKER_HOST", docker_host)
    else:
        monkeypatch.delenv("DOCKER_HOST", raising=False)
    argv = provision.bwrap_command(Path("/cache/rootfs-k"), ["true"])
    inside = provision.SANDBOX_DOCKER_DIR
    assert argv[argv.index("--tmpfs", argv.index("/tmp")) :][:2] == ["--tmpfs", "/run"]
    assert ["--ro-bind", "/usr/bin/docker", f"{inside}/docker"] in windows(argv, 3)
    assert ["--setenv", provision.DOCKER_CLI_VARIABLE, f"{inside}/docker"] in windows(argv, 3)
    if socket:
        assert ["--bind", socket, f"{inside}/docker.sock"] in windows(argv, 3)
        assert ["--setenv", "DOCKER_HOST", f"unix://{inside}/docker.sock"] in windows(argv, 3)
    else:
        assert "DOCKER_HOST" not in argv  # a tcp:// daemon is reached over the shared network


def windows(items, size):
    return [items[i : i + size] for i in range(len(items) - size + 1)]


def test_in_env_without_a_command_is_a_clear_error():
    result = subprocess.run([str(REPO / "scripts" / "in-env")], capture_output=True, text=True)
    assert result.returncode == 1
    assert "run needs a command" in result.stderr


@pytest.fixture
def host(tmp_path):
    """A fake host /: user folders, system folders, a file, $HOME under /home."""
    for path in ("home/alice/.config/gcloud", "data/cifar", "mnt", "usr/share", "etc", "opt/x"):
        (tmp_path / path).mkdir(parents=True)
    (tmp_path / "root").mkdir()
    (tmp_path / "container_info.json").write_text("{}")
    return tmp_path


class TestHostView:
    def test_user_folders_home_and_cwd_are_bound_system_folders_are_not(self, host):
        view = provision.host_view("/opt/x", "/home/alice", {}, host_root=str(host))
        assert view.read_write == ("/data", "/home", "/mnt", "/opt/x")
        assert view.read_only == ()
        assert (view.cwd, view.home) == ("/opt/x", "/home/alice")

    def test_a_home_outside_the_user_folders_is_bound_on_its_own(self, host):
        view = provision.host_view("/data/cifar", "/root", {}, host_root=str(host))
        assert view.read_write == ("/data", "/home", "/mnt", "/root")
        assert (view.cwd, view.home) == ("/data/cifar", "/root")

    @pytest.mark.parametrize("cwd", ["/", "/usr/share", "/etc", "/opt", provision.ROOTFS_VENV])
    def test_the_environments_own_folders_are_never_replaced(self, host, cwd):
        view = provision.host_view(cwd, "/usr", {}, host_root=str(host))
        assert view.cwd == str(REPO) and view.home is None
        assert not {cwd, "/usr", "/etc", "/opt", "/"} & set(view.read_write)

    def test_datasets_read_only_and_the_docker_socket(self, host):
        (host / "usr/share/datasets").mkdir()
        (host / "var/run").mkdir(parents=True)
        (host / "var/run/docker.sock").touch()
        view = provision.host_view("/data", "/home/alice", {}, host_root=str(host))
        assert view.read_only == ("/usr/share/datasets",)
        assert view.read_write[-1] == "/var/run/docker.sock"
        rootless = {"DOCKER_HOST": "unix:///home/alice/.docker/run/docker.sock"}
        assert provision.host_view("/data", None, rootless, host_root=str(host)).read_write == (
            "/data",
            "/home",
            "/mnt",
        ), "a socket inside a bound folder needs no bind of its own"

    def test_bwrap_binds_the_view_and_starts_in_its_cwd(self):
        view = provision.HostView(
            read_write=("/home", "/var/run/docker.sock"),
            read_only=("/usr/share/datasets",),
            cwd="/home/alice/project",
            home="/home/alice",
        )
        argv = provision.bwrap_command(Path("/cache/rootfs-k"), ["pwd"], view)
        assert ["--bind", "/home", "/home"] == argv[argv.index("/home") - 1 :][:3]
        assert ["--bind", "/var/run/docker.sock", "/run/docker.sock"] == (
            argv[argv.index("/var/run/docker.sock") - 1 :][:3]
        ), "the Debian root links /var/run to /run: bwrap must not follow that link"
        assert ["--ro-bind", "/usr/share/datasets", "/usr/share/datasets"] == (
            argv[argv.index("/usr/share/datasets") - 1 :][:3]
        )
        assert argv[argv.index("--chdir") + 1] == "/home/alice/project"
        assert argv[argv.index("HOME") + 1] == "/home/alice"
        assert argv[-2:] == ["--", "pwd"]

    def test_builds_run_in_the_checkout_with_the_environments_home(self):
        argv = provision.bwrap_command(Path("/cache/rootfs-k"), ["true"])
        assert argv[argv.index("--chdir") + 1] == str(REPO)
        assert argv[argv.index("HOME") + 1] == "/root"


def test_in_env_help_states_the_rule_and_what_it_shows_from_here(tmp_path):
    result = subprocess.run(
        [str(REPO / "scripts" / "in-env"), "--help"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: scripts/in-env COMMAND [ARGS...]")
    assert provision.HOST_VIEW_RULE in result.stdout
    assert f"starts in {tmp_path};" in result.stdout


def test_prune_keeps_the_current_environment_and_builds_in_progress(tmp_path, monkeypatch):
    import fcntl

    monkeypatch.setenv("GSAM_TFX_CACHE", str(tmp_path))
    monkeypatch.setattr(provision, "_current", lambda: (provision.Strategy("venv", "/p"), "now"))
    for name in ("venv-now", "venv-old", "venv-busy.partial"):
        (tmp_path / name).mkdir()
    for name in ("venv-now", "venv-old", "venv-busy"):
        (tmp_path / f"{name}.lock").touch()
    with open(tmp_path / "venv-busy.lock") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        assert provision.cmd_prune() == 0
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "venv-busy.lock",
        "venv-busy.partial",
        "venv-now",
        "venv-now.lock",
    ]
