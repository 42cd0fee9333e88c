"""--max-bad-records: where the gate draws the line, and that every step after the record
check reads the examples without the bad records. Whole runs are in test_corrupted_data.py."""

import pytest

from components.data_checks.record_findings import DATASET, BadRecords, RecordCheckResult
from components.data_checks.validation_gate import gate_report
from components.sharpness.probe import ProbeSettings
from pipelines.stages.comparison import ComparisonSpec
from pipelines.stages.data import DataSettings
from tests.pipeline_support import SMALL_PROBE, build_pipeline
from trainer.search_space import SearchSpace

FILE = "/out/ImportExampleGen/examples/1/Split-train/data_tfrecord-00000-of-00001.gz"
UNDECODABLE = BadRecords(
    "train", "image", "hold bytes that do not decode as an image", 48, {FILE: 3},
    {FILE: [5, 20, 33]}, "Unknown image file format.",
)  # fmt: skip
UNDECODABLE_LINE = (
    "[train] image: 3 of 48 records hold bytes that do not decode as an image (first: Unknown "
    f"image file format.): records 5, 20, 33 of {FILE}"
)
END = "\nFix the data, or update the schema (or --image-shape) if the change is intended."


def three_bad(records_in_train=48) -> RecordCheckResult:
    return RecordCheckResult({"train": records_in_train, "eval": 16}, {"train": 3, "eval": 0},
                             [UNDECODABLE])  # fmt: skip


def test_the_line_is_the_record_checks_own():
    assert UNDECODABLE.line() == UNDECODABLE_LINE


def test_without_a_tolerance_any_bad_record_stops_the_run():
    assert gate_report({}, three_bad(), max_bad_records=0) == (
        "The record check found records that cannot be trained on; the run stops before "
        f"training.\n  {UNDECODABLE_LINE}{END}"
    )


def test_up_to_the_tolerance_the_run_goes_on():
    assert gate_report({}, three_bad(), max_bad_records=3) is None
    assert gate_report({}, three_bad(), max_bad_records=5) is None


def test_more_bad_records_than_the_tolerance_stop_the_run_naming_it():
    assert gate_report({}, three_bad(), max_bad_records=2) == (
        "The record check found 3 records that cannot be trained on, more than "
        "max_bad_records (--max-bad-records) allows: 2; the run stops before training.\n"
        f"  {UNDECODABLE_LINE}{END}"
    )


def test_anomalies_of_what_is_left_stop_the_run_and_the_left_out_records_are_listed():
    anomalies = {"eval": ["label: Out-of-range values (Unexpectedly large value: 12.)"]}
    assert gate_report(anomalies, three_bad(), max_bad_records=5) == (
        "ExampleValidator found anomalies against the schema; the run stops before training.\n"
        "  [eval] label: Out-of-range values (Unexpectedly large value: 12.)\n"
        "The record check left out 3 bad records (max_bad_records: 5):\n"
        f"  {UNDECODABLE_LINE}{END}"
    )


def test_a_split_left_without_records_stops_the_run():
    assert gate_report({}, three_bad(records_in_train=3), max_bad_records=5) == (
        "Leaving out the bad records would leave a split with no records; the run stops "
        "before training.\n  [train] <dataset>: every one of its 3 records is bad\n"
        "The record check left out 3 bad records (max_bad_records: 5):\n"
        f"  {UNDECODABLE_LINE}{END}"
    )


def test_an_empty_split_stops_the_run_whatever_the_tolerance():
    empty = BadRecords("eval", DATASET, "the split holds no records", 0, {"/eval": 0}, {})
    result = RecordCheckResult({"train": 48, "eval": 0}, {"train": 0, "eval": 0}, [empty])
    assert gate_report({}, result, max_bad_records=100) == (
        "The record check found records that cannot be trained on; the run stops before "
        f"training.\n  [eval] <dataset>: the split holds no records (/eval){END}"
    )


@pytest.mark.parametrize("value", [-1, True, "3", 2.0])
def test_max_bad_records_must_be_a_count(value):
    with pytest.raises(ValueError, match="max_bad_records must be an integer >= 0"):
        DataSettings("/data", max_bad_records=value)


def examples_sources(dag) -> dict[str, tuple[str, str]]:
    """Node id -> (producer id, output key) of its `examples` input, for every node with one."""
    return {
        node.id: (node.inputs["examples"].producer_component_id, node.inputs["examples"].output_key)
        for node in dag.components
        if "examples" in node.inputs
    }


def test_every_step_after_the_check_reads_the_examples_without_the_bad_records(tmp_path):
    """Statistics, label noise, Tuners, Trainers, Evaluators and SharpnessProbes."""
    dag = build_pipeline(
        tmp_path,
        max_bad_records=5,
        comparison=ComparisonSpec(methods=("plain", "gsam"), seeds=1, label_noise=0.2),
        tuning=SearchSpace(max_trials=2),
        sharpness=ProbeSettings(**SMALL_PROBE),
    )
    sources = examples_sources(dag)
    assert sources.pop("RecordCheck") == ("ImportExampleGen", "examples")
    trainers = {
        node: source for node, source in sources.items() if node.startswith(("Tuner", "Trainer"))
    }
    assert set(trainers.values()) == {("LabelNoise", "noisy_examples")}
    assert len(trainers) == 4
    others = {node: source for node, source in sources.items() if node not in trainers}
    assert {node.split(".")[0] for node in others} == {
        "StatisticsGen", "LabelNoise", "Evaluator", "SharpnessProbe",
    }  # fmt: skip
    assert set(others.values()) == {("RecordCheck", "clean_examples")}


def test_without_a_tolerance_the_steps_read_example_gens_examples(tmp_path):
    dag = build_pipeline(tmp_path)
    assert set(examples_sources(dag).values()) == {("ImportExampleGen", "examples")}
    [record_check] = [node for node in dag.components if node.id == "RecordCheck"]
    assert "clean_examples" not in record_check.outputs
