"""bench/reuse_frontier.py: the frontier table from a comparison's Trainer histories."""

import json
import os

import pytest

from bench import reuse_frontier


def write_run(root, method, seed, execution, accuracies, steps=10, passes_per_step=1.0):
    """One Trainer execution's history.json, as trainer/training/history.py writes it."""
    folder = os.path.join(root, "pipeline", f"Trainer.{method}.seed{seed}", "model_run")
    os.makedirs(os.path.join(folder, str(execution)))
    epochs = [
        {
            "epoch": i + 1,
            "seconds": 2.0,
            "steps": steps * (i + 1),
            "passes": round(steps * (i + 1) * passes_per_step),
            "val_accuracy": accuracy,
        }
        for i, accuracy in enumerate(accuracies)
    ]
    document = {"method": method, "config": {"epochs": 2, "alpha": 0.01}, "epochs": epochs}
    with open(os.path.join(folder, str(execution), "history.json"), "w") as f:
        json.dump(document, f)


@pytest.fixture
def comparison(tmp_path):
    for seed, (plain, gsam, auto) in enumerate([(0.70, 0.80, 0.79), (0.72, 0.84, 0.84)], 1):
        write_run(tmp_path, "plain", seed, seed, [0.5, plain])
        write_run(tmp_path, "gsam", seed, 10 + seed, [0.5, gsam], passes_per_step=2.0)
        write_run(tmp_path, "gsam-auto", seed, 20 + seed, [0.5, auto], passes_per_step=1.1)
    # A newer, interrupted execution of gsam seed 1: one epoch of two, so it does not count.
    write_run(tmp_path, "gsam", 1, 99, [0.1], passes_per_step=2.0)
    return tmp_path


def test_rows_pair_each_method_with_exact_gsam_and_plain_by_seed(comparison):
    runs = reuse_frontier.finished_runs(str(comparison))
    rows = reuse_frontier.frontier(runs, "gsam", {"plain": 1.0, "gsam-auto": 1.12})
    assert [row["method"] for row in rows] == ["gsam", "gsam-auto", "plain"]
    gsam, auto, plain = rows
    assert gsam["eval_accuracy"]["mean"] == pytest.approx(0.82)
    assert gsam["minus_gsam"] is None and gsam["minus_plain"]["gain"]["mean"] == pytest.approx(0.11)
    assert auto["minus_gsam"]["gain"]["mean"] == pytest.approx(-0.005)
    assert auto["minus_gsam"]["seeds"] == [1, 2]
    assert (auto["passes"], auto["perturbed_fraction"]) == (22, pytest.approx(0.1))
    assert (auto["step_time_to_plain"], gsam["step_time_to_plain"]) == (1.12, None)
    assert plain["perturbed_fraction"] is None and plain["minus_plain"] is None
    table = reuse_frontier.markdown(rows, "gsam")
    assert "| gsam-auto | 22 | 10.0% | 1.12 | 0.8150 ± 0.0354 (n 2) | -0.0050 [" in table


def test_a_folder_without_finished_runs_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        reuse_frontier.finished_runs(str(tmp_path))
    write_run(tmp_path, "gsam", 1, 1, [0.4])
    with pytest.raises(ValueError, match="no finished Trainer run"):
        reuse_frontier.finished_runs(str(tmp_path))


def test_step_time_ratios_come_from_the_resnet_row_without_jit(tmp_path):
    path = tmp_path / "step_time.json"
    rows = [
        {"model": "resnet20", "jit_compile": True, "ratios": {"gsam/plain": 9.0}},
        {"model": "resnet20", "jit_compile": False,
         "ratios": {"gsam/plain": 2.0, "gsam/sam": 1.0, "gsam-auto/plain": 1.1}},
    ]  # fmt: skip
    path.write_text(json.dumps({"rows": rows}))
    ratios = reuse_frontier.step_time_ratios(str(path))
    assert ratios == {"gsam": 2.0, "gsam-auto": 1.1, "plain": 1.0}
