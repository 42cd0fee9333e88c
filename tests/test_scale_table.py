"""bench/scale_table.py and bench/report.py's table: the pipeline benchmark's tables and
targets, from synthetic ML Metadata-like records."""

import pytest

from bench import fashion_mnist_roots, report, scale_table


def pipeline_run(images, mode, wall, example_gen, statistics, trainer=40.0, evaluator=20.0):
    return {
        "train_images": images,
        "beam_mode": mode,
        "wall_seconds": wall,
        "peak_rss_mib": images / 100,
        "seconds_per_component": {
            "CheckedImportExampleGen": example_gen,
            "StatisticsGen": statistics,
            "ContentKeyedImportSchemaGen": 0.5,
            "ExampleValidator": 1.0,
            "RecordCheck": 3.0,
            "ValidationGate": 0.5,
            "Trainer": trainer,
            "Resolver": 0.25,
            "Evaluator": evaluator,
            "AtomicPusher": 1.0,
        },
    }


PENGUIN = {
    "wall_seconds": 90.0,
    "seconds_per_component": {
        "CsvExampleGen": 5.0,
        "StatisticsGen": 5.0,
        "SchemaGen": 1.0,
        "Transform": 20.0,
        "Trainer": 30.0,
        "Resolver": 0.5,
        "Evaluator": 10.0,
        "Pusher": 1.0,
    },
}
RUNS = [
    pipeline_run(60000, "in_memory", 150.0, example_gen=30.0, statistics=24.0),
    pipeline_run(10000, "in_memory", 100.0, example_gen=5.0, statistics=4.0),
    pipeline_run(10000, "multi_processing", 130.0, example_gen=15.0, statistics=14.0),
]
THROUGHPUT = {
    10000: {
        "images_per_second": {"pipeline": 950.0, "in_memory": 1000.0},
        "ratio": 0.95,
        "cpu_ratio": 0.97,
    },
    60000: {
        "images_per_second": {"pipeline": 850.0, "in_memory": 1000.0},
        "ratio": 0.85,
        "cpu_ratio": 0.96,
        "augment_ratio": 0.912,
        "augment_cpu_ratio": 0.874,
    },
}


def test_components_add_up_to_their_columns_and_the_rest_is_other():
    columns = scale_table.grouped(RUNS[1]["seconds_per_component"])
    assert columns["ExampleGen"] == 5.0, "the checked ImportExampleGen is ExampleGen's"
    assert (columns["Schema"], columns["Validator"], columns["Gate"]) == (0.5, 1.0, 0.5)
    assert columns["RecordCheck"] == 3.0
    assert columns["Transform"] is None, "a column the run lacks is empty, not zero"
    assert columns["Pusher"] == 1.0 and columns[scale_table.OTHER] == 0.25
    penguin = scale_table.grouped(PENGUIN["seconds_per_component"])
    assert penguin["ExampleGen"] == 5.0 and penguin["Transform"] == 20.0


def test_non_training_is_wall_less_trainer_and_data_is_the_beam_components():
    assert scale_table.non_training_seconds(RUNS[1]) == 60.0
    assert scale_table.data_seconds(RUNS[1]) == 5.0 + 4.0 + 0.5 + 1.0 + 3.0 + 0.5 + 20.0


def test_targets_measure_the_default_mode_only():
    goals = scale_table.targets(RUNS, PENGUIN, THROUGHPUT, "in_memory")
    growth = goals["non_training_growth"]
    assert (growth["from_images"], growth["to_images"]) == (10000, 60000)
    assert growth["images_factor"] == 6.0
    assert growth["non_training_factor"] == pytest.approx(110.0 / 60.0)
    assert growth["met"]
    assert goals["fixed_cost"] == {
        "non_training_seconds": 60.0,
        "penguin_seconds": 90.0,
        "met": True,
    }
    assert goals["input_ratio"]["met"] is False, "0.85 at 60,000 images is below 0.9"


def test_targets_without_what_they_need_are_not_judged():
    only_large = [RUNS[0]]
    goals = scale_table.targets(only_large, None, {}, "in_memory")
    assert goals["non_training_growth"] is None
    assert goals["fixed_cost"]["met"] is None
    assert goals["input_ratio"]["met"] is None
    assert "targets (Beam in_memory):" in scale_table.format_tables(only_large, None, {}, goals)


def test_tables_show_every_run_the_reference_the_growth_and_the_verdicts():
    goals = scale_table.targets(RUNS, PENGUIN, THROUGHPUT, "in_memory")
    text = scale_table.format_tables(RUNS, PENGUIN, THROUGHPUT, goals)
    lines = text.splitlines()
    [row] = [line for line in lines if line.startswith("10,000 multi_processing")]
    assert row.split()[2:] == ["15.0", "14.0", "0.5", "1.0", "3.0", "0.5", "-", "40.0", "20.0",
                               "1.0", "0.2", "130.0", "90.0", "100"]  # fmt: skip
    assert any(line.startswith("penguin (TFX example)") for line in lines)
    [growth] = [line for line in lines if line.startswith("growth 60,000/10,000 in_memory")]
    assert growth.split()[3] == "6.00", "ExampleGen grew 6x"
    assert growth.split()[13] == "-", "the resolver's quarter second grows by noise alone"
    assert growth.split()[-1] == "6.00", "peak memory"
    beam_table = next(section for section in text.split("\n\n") if "data s in_memory" in section)
    [beam] = [line for line in beam_table.splitlines() if line.startswith("10,000")]
    assert beam.split()[1:] == ["34.0", "54.0", "1.59"]
    assert "lowest 0.850 (missed)" in text
    [before, after] = [
        line.split()[-2:] for line in lines if line.startswith(("10,000 ", "60,000 ")) and
        line.split()[-3] in ("0.970", "0.960")
    ]  # fmt: skip
    assert before == ["-", "-"], "a measurement from before augmentation has no augment ratio"
    assert after == ["0.912", "0.874"]
    assert "x1.83 for x6.0 the images (sub-linear: met)" in text
    assert "60 s <= penguin end to end 90 s (met)" in text


def test_the_record_check_alone_has_a_table_of_seconds_and_memory_per_way():
    goals = scale_table.targets(RUNS, PENGUIN, THROUGHPUT, "in_memory")
    checks = {
        "600000": {  # as JSON has it
            "before": {"seconds": 400.0, "peak_rss_mib": 900.0},
            "in_memory": {"seconds": 300.0, "peak_rss_mib": 1000.0},
        },
        60000: {"in_memory": {"seconds": 30.0, "peak_rss_mib": 950.0}},
    }
    text = scale_table.format_tables(RUNS, PENGUIN, THROUGHPUT, goals, checks)
    [table] = [section for section in text.split("\n\n") if "record check alone" in section]
    assert table.splitlines()[0].split() == [
        "record", "check", "alone", "s", "before", "s", "in_memory", "peak", "MiB", "before",
        "peak", "MiB", "in_memory",
    ]  # fmt: skip
    assert [line.split() for line in table.splitlines()[2:]] == [
        ["60,000", "-", "30.0", "-", "950"],
        ["600,000", "400.0", "300.0", "900", "1000"],
    ]


def test_report_table_aligns_columns_and_rejects_ragged_rows():
    assert report.table(["name", "s"], [["a", "1.0"], ["long", "10.0"]]).splitlines() == [
        "name     s",
        "----------",
        "a      1.0",
        "long  10.0",
    ]
    with pytest.raises(ValueError, match="every row needs 2 cells"):
        report.table(["name", "s"], [["a"]])


@pytest.mark.parametrize(
    "size, repeats", [(10, 1), (60000, 1), (120000, 2), (600000, 10), (1500000, 25)]
)
def test_bench_roots_repeat_the_train_images_beyond_sixty_thousand(size, repeats):
    assert fashion_mnist_roots.check_train_size(size) == repeats


@pytest.mark.parametrize("size", [9, 60001, 90000, 1560000, True])
def test_bench_roots_of_other_sizes_are_refused(size):
    with pytest.raises(ValueError, match="train_size must be"):
        fashion_mnist_roots.check_train_size(size)
