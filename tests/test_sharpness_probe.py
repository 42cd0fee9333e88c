"""The SharpnessProbe: its gate as a pure function, its settings, and its executor body on
tiny artifacts (the pipeline runs it in tests/test_pipeline_e2e.py)."""

import json
import math
import os

import keras
import numpy as np
import pytest
from google.protobuf import text_format
from tensorflow_metadata.proto.v0 import schema_pb2
from tfx.types import standard_artifacts

from components.sharpness import gate
from components.sharpness.probe import (
    REPORT_FILE,
    SUMMARY_FILE,
    ProbeSettings,
    SharpnessProbe,
    SharpnessReport,
)
from tests import trainer_examples
from trainer.config import TrainingConfig
from trainer.gsam import sharpness
from trainer.models import export
from trainer.models.builtin import build_model

CANDIDATE = {"top_eigenvalue": 12.0, "surrogate_gap": 0.02}
BASELINE = {"top_eigenvalue": 10.0, "surrogate_gap": -0.01}


def test_without_limits_the_evaluator_decides():
    for evaluator_blessed in (True, False):
        decision = gate.decide(CANDIDATE, evaluator_blessed=evaluator_blessed)
        assert decision.blessed is evaluator_blessed
        assert decision.checks == ()
        assert "no sharpness limit set" in decision.reasons
    assert gate.decide(CANDIDATE).blessed  # no Evaluator blessing to respect


def test_max_top_eigenvalue_names_measure_value_and_limit():
    refused = gate.decide(CANDIDATE, evaluator_blessed=True, max_top_eigenvalue=11.5)
    assert not refused.blessed
    assert refused.reasons == ("top_eigenvalue 12 is above the limit 11.5 (max_top_eigenvalue)",)
    [check] = refused.to_dict()["checks"]
    assert check == {
        "measure": "top_eigenvalue",
        "value": 12.0,
        "limit": 11.5,
        "rule": "max_top_eigenvalue",
        "note": "",
        "passed": False,
    }
    assert gate.decide(CANDIDATE, evaluator_blessed=True, max_top_eigenvalue=12).blessed


def test_the_evaluator_refusal_wins_over_passing_limits():
    decision = gate.decide(CANDIDATE, evaluator_blessed=False, max_top_eigenvalue=100)
    assert not decision.blessed
    assert decision.checks[0].passed


def test_max_sharpness_increase_is_relative_to_the_baseline():
    at_limit = gate.decide(CANDIDATE, BASELINE, max_sharpness_increase=0.2)
    assert at_limit.blessed  # 12 <= 10 + 20% of 10
    above = gate.decide(CANDIDATE, BASELINE, max_sharpness_increase=0.19)
    assert not above.blessed
    assert above.reasons[-1] == (
        "top_eigenvalue 12 is above the limit 11.9 (baseline 10 + 19%; max_sharpness_increase)"
    )


def test_increase_of_a_negative_surrogate_gap_counts_from_its_magnitude():
    decision = gate.decide(
        CANDIDATE, BASELINE, max_sharpness_increase=1.0, increase_measure="surrogate_gap"
    )
    # limit -0.01 + 1.0 * 0.01 = 0: the candidate's 0.02 is above it.
    [check] = decision.checks
    assert check.measure == "surrogate_gap" and check.limit == 0.0
    assert not decision.blessed


def test_without_a_baseline_the_increase_limit_does_not_apply():
    decision = gate.decide(CANDIDATE, None, max_sharpness_increase=0.0)
    assert decision.blessed and decision.checks == ()
    assert decision.reasons == (
        "max_sharpness_increase not applied: there is no baseline to compare",
    )


def test_a_value_that_is_not_finite_never_passes():
    for value in (math.nan, math.inf):
        candidate = {**CANDIDATE, "top_eigenvalue": value}
        assert not gate.decide(candidate, max_top_eigenvalue=1e30).blessed


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"max_top_eigenvalue": "big"}, "max_top_eigenvalue must be a number"),
        ({"max_sharpness_increase": -0.1}, "max_sharpness_increase must be >= 0"),
        ({"increase_measure": "trace"}, "increase_measure must be one of"),
        ({"split": ""}, "split must be a non-empty split name"),
        ({"rho": -1.0}, "rho must be > 0"),
        ({"hutchinson_samples": 1}, "hutchinson_samples must be an integer >= 2"),
        ({"max_examples": 0}, "max_examples must be an integer >= 1"),
    ],
)
def test_settings_name_the_bad_value(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ProbeSettings(**kwargs)


def test_component_parameters_leave_unset_limits_out_and_carry_the_measure_settings():
    settings = ProbeSettings(max_top_eigenvalue=5.0, rho=0.1, adaptive=True)
    parameters = settings.component_parameters()
    assert parameters["max_top_eigenvalue"] == 5.0
    assert "max_sharpness_increase" not in parameters
    measure_settings = json.loads(parameters.pop("measure_settings"))
    assert measure_settings == settings.measure_arguments()
    assert measure_settings["max_examples"] == ProbeSettings().max_examples
    assert ProbeSettings(**parameters, **measure_settings) == settings


MLP = TrainingConfig(model="mlp", batch_size=8)
SETTINGS = dict(power_iterations=3, hutchinson_samples=2, ascent_steps=1, max_examples=20)


def _model_artifact(root, seed, keras_model=True):
    """A Model artifact as run_fn writes it: the serving SavedModel (whose `model_inputs`
    signature the probe reads raw examples with) and, unless not, the Keras model beside it."""
    artifact = standard_artifacts.Model()
    artifact.uri = str(root)
    artifact.id = seed + 1
    keras.utils.set_random_seed(seed)
    model = build_model(MLP, 3, (3,))
    schema = text_format.Parse(trainer_examples.TABULAR_SCHEMA, schema_pb2.Schema())
    trainer_examples.export_model(model, MLP, schema, os.path.join(artifact.uri, "Format-Serving"))
    if keras_model:
        export.export_keras_model(model, export.keras_model_path(artifact.uri))
    return artifact


def _blessing(root, blessed=None):
    artifact = standard_artifacts.ModelBlessing()
    artifact.uri = str(root)
    os.makedirs(artifact.uri, exist_ok=True)
    if blessed is not None:
        artifact.set_int_custom_property("blessed", int(blessed))
    return artifact


def _run_probe(tmp_path, baseline=None, evaluator_blessed=None, **settings):
    rows = trainer_examples.random_tabular_examples(np.random.default_rng(0), 30)
    examples = trainer_examples.examples_artifact(
        str(tmp_path / "examples"), {"train": rows[:10], "eval": rows}
    )
    report = SharpnessReport()
    report.uri = str(tmp_path / "report")
    os.makedirs(report.uri)
    blessing = _blessing(tmp_path / "blessing")
    evaluator = None
    if evaluator_blessed is not None:
        evaluator = _blessing(tmp_path / "evaluator", evaluator_blessed)
    SharpnessProbe.test_call(
        model=_model_artifact(tmp_path / "candidate", seed=0),
        examples=examples,
        sharpness=report,
        blessing=blessing,
        training_config=json.dumps(MLP.to_dict()),
        baseline_model=baseline,
        evaluator_blessing=evaluator,
        measure_settings=json.dumps(SETTINGS),
        **settings,
    )
    with open(os.path.join(report.uri, REPORT_FILE)) as f:
        written = json.load(f)
    with open(os.path.join(report.uri, SUMMARY_FILE)) as f:
        summary = f.read()
    return written, summary, report, blessing


def test_the_probe_measures_both_models_and_refuses_an_impossible_limit(tmp_path):
    baseline = _model_artifact(tmp_path / "baseline", seed=1)
    written, summary, report, blessing = _run_probe(
        tmp_path, baseline=baseline, evaluator_blessed=True, max_top_eigenvalue=1e-9
    )
    assert written["examples"] == 20 and written["split"] == "eval"
    for model in ("candidate", "baseline"):
        assert set(written[model]) == set(sharpness.RESULT_KEYS)
    assert written["candidate"] != written["baseline"]  # two different models were measured
    assert written["evaluator_blessed"] is True
    assert written["gate"]["blessed"] is False
    top = written["candidate"]["top_eigenvalue"]
    reason = f"top_eigenvalue {top:.4g} is above the limit 1e-09 (max_top_eigenvalue)"
    assert written["gate"]["reasons"] == [reason]
    assert "| top_eigenvalue | " in summary
    assert "Blessed: no (the Evaluator blessed the model)" in summary
    assert f"- {reason}" in summary
    assert report.get_float_custom_property("top_eigenvalue") == top
    assert (
        report.get_int_custom_property("eigen_iterations")
        == (written["candidate"]["eigen_iterations"])
    )
    assert blessing.get_int_custom_property("blessed") == 0
    assert blessing.get_int_custom_property("current_model_id") == 1
    assert blessing.get_int_custom_property("baseline_model_id") == 2
    assert blessing.get_string_custom_property("blessing_message") == (
        f"the Evaluator blessed the model; {reason}"
    )
    assert os.listdir(blessing.uri) == ["NOT_BLESSED"]


def test_the_probe_blesses_within_limits_and_notes_a_baseline_without_keras_model(tmp_path):
    baseline = _model_artifact(tmp_path / "old", seed=1, keras_model=False)
    written, summary, _, blessing = _run_probe(
        tmp_path, baseline=baseline, evaluator_blessed=True, max_sharpness_increase=0.1
    )
    assert written["baseline"] is None
    assert "has no Keras model (Format-Keras)" in written["baseline_note"]
    assert written["gate"]["blessed"] is True
    assert "max_sharpness_increase not applied" in written["gate"]["reasons"][-1]
    assert "| loss | " in summary and " | - |" in summary
    assert blessing.get_int_custom_property("blessed") == 1
    assert os.listdir(blessing.uri) == ["BLESSED"]


def test_the_probe_follows_an_evaluator_refusal_and_names_a_missing_split(tmp_path):
    written, _, _, blessing = _run_probe(tmp_path, evaluator_blessed=False)
    assert written["gate"]["blessed"] is False and written["baseline"] is None
    assert blessing.get_int_custom_property("blessed") == 0
    with pytest.raises(ValueError, match="split 'test' is not a split of the examples"):
        _run_probe(tmp_path / "again", split="test")
