"""components/comparison/validation_split.py: which examples are held out, that the other
splits stay byte for byte, and that the choice is stable and independent of label noise's."""

import pytest
from tfx.dsl.components.base import base_beam_executor
from tfx.types import standard_artifacts

from components.comparison.label_noise import LabelFlipper
from components.comparison.validation_split import (
    VALIDATION,
    ValidationSplit,
    ValidationSplitExecutor,
)
from tests.test_label_noise import EVAL, TRAIN, labels_by_count, split_bytes, split_records
from tests.trainer_examples import examples_artifact

FRACTION = 0.2


def run_split(root, name, fraction=FRACTION, train=TRAIN):
    source = examples_artifact(str(root / f"source-{name}"), {"train": train, "eval": EVAL})
    output = standard_artifacts.Examples()
    output.uri = str(root / name)
    context = base_beam_executor.BaseBeamExecutor.Context(
        beam_pipeline_args=["--direct_running_mode=in_memory"],
        tmp_dir=str(root / f"tmp-{name}"),
        unique_id=name,
    )
    ValidationSplitExecutor(context).Do(
        {"examples": [source]},
        {"split_examples": [output]},
        {"fraction": fraction, "seed": 0, "split": "train"},
    )
    return source, output


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("validation_split")
    # The same examples, written again in reverse order: the choice follows their content.
    return run_split(root, "first"), run_split(root, "again", train=TRAIN[::-1])


def test_a_fraction_of_train_is_held_out_and_the_rest_is_untouched(runs):
    (source, output), _ = runs
    assert output.split_names == '["train", "eval", "validation"]'
    kept = labels_by_count(split_records(output, "train"))
    held = labels_by_count(split_records(output, VALIDATION))
    assert not set(kept) & set(held)
    assert {**kept, **held} == labels_by_count(TRAIN)  # every example once, labels unchanged
    assert abs(len(held) - FRACTION * len(TRAIN)) < 4 * (len(TRAIN) * 0.2 * 0.8) ** 0.5
    assert split_bytes(output, "eval") == split_bytes(source, "eval")
    assert output.get_int_custom_property("validation_examples") == len(held)
    assert output.get_int_custom_property("train_examples") == len(kept)
    assert output.get_float_custom_property("validation_fraction") == FRACTION


def test_the_same_examples_are_held_out_whatever_their_order(runs):
    (_, first), (_, again) = runs
    assert labels_by_count(split_records(first, VALIDATION)) == labels_by_count(
        split_records(again, VALIDATION)
    )


def test_the_choice_is_independent_of_label_noise_with_the_same_seed(runs):
    (_, output), _ = runs
    flip = LabelFlipper(noise_rate=0.3, seed=0, num_classes=10, label_key="label")
    held = split_records(output, VALIDATION)
    flipped = sum(flip(record)[1] for record in held)
    # Label noise's draw is below 0.3 for 30% of them, not for all (as one shared hash would).
    assert 0.15 < flipped / len(held) < 0.45


def test_a_fraction_that_holds_out_nothing_is_an_error_naming_it(tmp_path):
    with pytest.raises(ValueError, match="validation_fraction 0.001 of the 20 'train' examples"):
        run_split(tmp_path, "tiny", fraction=0.001, train=TRAIN[:20])


def test_bad_settings_are_errors():
    with pytest.raises(ValueError, match=r"validation_fraction must be a number in \(0, 1\)"):
        ValidationSplit(examples=None, fraction=1.0)
    with pytest.raises(ValueError, match="not 'validation'"):
        ValidationSplit(examples=None, fraction=0.1, split=VALIDATION)
