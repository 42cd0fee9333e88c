"""The README's examples run as written: every block tagged `sh runnable` or `python runnable`
is executed, from a folder outside the checkout laid out like its root."""

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
RUNNABLE = re.compile(r"^```(sh|python) runnable\n(.*?)^```$", re.MULTILINE | re.DOTALL)
# What the README's commands use of the checkout, by path relative to its root.
CHECKOUT_ENTRIES = ("scripts", "data", "pipelines", "trainer", "components", "Dockerfile")


def runnable_blocks(markdown: str) -> list[tuple[str, str]]:
    """(language, code) of each block fenced as ```sh runnable or ```python runnable."""
    return [(match[1], match[2]) for match in RUNNABLE.finditer(markdown)]


BLOCKS = runnable_blocks((REPO / "README.md").read_text())


def test_runnable_blocks_are_found_and_only_those():
    markdown = "```sh runnable\necho a\n```\n```sh\nrm -rf /\n```\n```python runnable\nx = 1\n```\n"
    assert runnable_blocks(markdown) == [("sh", "echo a\n"), ("python", "x = 1\n")]
    languages = [language for language, _ in BLOCKS]
    assert languages.count("sh") >= 6 and languages.count("python") >= 2, languages


@pytest.fixture
def checkout_like(tmp_path):
    """Links to the checkout's entries, so repo-relative paths resolve and outputs land here."""
    for name in CHECKOUT_ENTRIES:
        (tmp_path / name).symlink_to(REPO / name)
    return tmp_path


@pytest.mark.parametrize(
    "language, code",
    BLOCKS,
    ids=[f"{index}-{language}" for index, (language, _) in enumerate(BLOCKS)],
)
def test_readme_block_runs_as_written(language, code, checkout_like):
    if language == "sh":
        command = ["bash", "-euo", "pipefail", "-c", code]
    else:
        command = [sys.executable, "-c", code]
    result = subprocess.run(
        command, cwd=checkout_like, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, f"{code}\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"


def test_the_module_file_and_the_penguin_run_fn_are_the_examples_the_tests_run():
    """The README's module file is examples/tabular_module.py, which
    tests/test_user_module_pipeline.py runs through the pipeline, and its penguin `run_fn` is
    examples/penguin_gsam.py's, which tests/test_penguin_gsam.py runs in TFX's penguin
    pipeline."""
    codes = [code for language, code in BLOCKS if language == "python"]
    module = (REPO / "examples" / "tabular_module.py").read_text()
    assert module in codes
    penguin = (REPO / "examples" / "penguin_gsam.py").read_text()
    run_fn = penguin[penguin.index("def run_fn(fn_args):") :]
    [block] = [code for code in codes if "def run_fn(fn_args):" in code]
    assert block.endswith(run_fn)


OPENING = (REPO / "README.md").read_text().split("\n## ", 1)[0]


def test_the_paths_the_opening_names_exist():
    paths = re.findall(r"`((?:trainer|pipelines|components|data|examples)/[\w/.]*)`", OPENING)
    assert len(paths) >= 5, paths
    missing = [path for path in paths if not (REPO / path).exists()]
    assert not missing, missing


def test_the_test_count_the_readme_states_is_the_suites():
    stated = re.findall(r"\b(\d[\d,]*) tests\b", (REPO / "README.md").read_text())
    assert stated, "the README states how many tests `make test` runs"
    collected = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", str(REPO / "tests")],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
    )
    count = re.search(r"(\d+) tests? collected", collected.stdout)
    assert count, collected.stdout[-2000:]
    assert {int(n.replace(",", "")) for n in stated} == {int(count.group(1))}


def test_the_steps_the_opening_names_are_the_pipelines_components(tmp_path):
    """The opening's DAG line names every component of the default pipeline and of one with
    every option (CSV, an inferred schema, a validation split, Transform, the Tuner, the
    SharpnessProbe), and nothing else; the comparison's runs are named as one step."""
    from components.sharpness.probe import ProbeSettings
    from pipelines import configs
    from tests.pipeline_support import build_pipeline
    from trainer.search_space import SearchSpace
    from trainer.user_module import ModuleFile

    [dag_line] = [item for item in OPENING.split("\n- ") if item.startswith("`pipelines/`")]
    steps = dag_line.split("; and runners")[0]
    named = set(re.findall(r"\b[A-Z][a-z]+(?:[A-Z][a-z]+)*\b", steps))
    plain = build_pipeline(tmp_path / "plain")
    every_option = build_pipeline(
        tmp_path / "options",
        data_format="csv",
        schema_path=None,
        validation_fraction=0.1,
        training=dataclasses.replace(configs.TRAINING, model="mlp"),
        module_file=ModuleFile.read(str(REPO / "examples" / "tabular_module.py")),
        tuning=SearchSpace(max_trials=1),
        sharpness=ProbeSettings(),
    )
    built = {
        component.id
        for dag in (plain, every_option)
        for component in dag.components
        if not component.id.endswith("resolver")
    }
    assert named == built
