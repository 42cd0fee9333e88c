"""The pipeline with the SharpnessProbe on LocalDagRunner: its report, and its gate."""

import json
import os

import pytest

from components.sharpness.probe import REPORT_FILE, SUMMARY_FILE, ProbeSettings
from pipelines.local import summary
from tests.pipeline_support import (
    ALL_NODES,
    SMALL_PROBE,
    executed_nodes,
    run_pipeline,
    versions,
)
from trainer.gsam import sharpness


@pytest.fixture(scope="module")
def first_run(sample, tmp_path_factory):
    return run_pipeline(
        sample, tmp_path_factory.mktemp("out"), sharpness=ProbeSettings(**SMALL_PROBE)
    )


def test_the_probe_reports_every_measure_and_its_blessing_lets_the_model_through(first_run):
    assert executed_nodes(first_run) == ALL_NODES | {"SharpnessProbe"}
    run = summary.latest_run(first_run.metadata_path, "e2e")
    report = run.sharpness
    assert set(report["candidate"]) == set(sharpness.RESULT_KEYS)
    assert report["examples"] == 32 and report["split"] == "eval"
    assert report["baseline"] is None and report["evaluator_blessed"] is True
    assert os.path.exists(os.path.join(report["uri"], SUMMARY_FILE))
    assert run.blessed is True
    assert "sharpness: no sharpness limit set" in run.why
    [version] = versions(first_run)
    assert run.pushed_model == os.path.join(first_run.serving_model_dir, version)
    rendered = run.render()
    top = report["candidate"]["top_eigenvalue"]
    assert f"  sharpness:      top eigenvalue {top:.4g}, " in rendered


def test_an_impossible_eigenvalue_limit_blocks_a_model_the_evaluator_blessed(sample, first_run):
    before = versions(first_run)
    run_pipeline(
        sample,
        first_run.output_dir,
        sharpness=ProbeSettings(max_top_eigenvalue=1e-9, **SMALL_PROBE),
    )
    run = summary.latest_run(first_run.metadata_path, "e2e")
    assert "every metric threshold passed" in run.why  # the Evaluator blessed it
    report = run.sharpness
    assert report["evaluator_blessed"] is True
    assert report["baseline"] is not None  # the first run's model, pushed and blessed
    top = report["candidate"]["top_eigenvalue"]
    reason = f"top_eigenvalue {top:.4g} is above the limit 1e-09 (max_top_eigenvalue)"
    assert f"sharpness: {reason}" in run.why
    assert run.blessed is False and run.pushed_model is None
    assert versions(first_run) == before
    rendered = run.render()
    assert "  blessed:        no" in rendered and f"    - sharpness: {reason}" in rendered
    assert "  its baseline:   top eigenvalue " in rendered
    with open(os.path.join(report["uri"], REPORT_FILE)) as f:
        assert json.load(f)["gate"]["blessed"] is False
