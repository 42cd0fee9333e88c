"""The label's class range from StatisticsGen's statistics
(components/data_checks/label_domain.py)."""

import os

import pytest
from tensorflow_metadata.proto.v0 import schema_pb2, statistics_pb2
from tfx.components.statistics_gen import stats_artifact_utils
from tfx.types import artifact_utils, standard_artifacts

from components.data_checks.label_domain import LabelDomainError, largest_label, with_label_domain
from trainer.config import TrainingConfig
from trainer.inputs import data

INT = statistics_pb2.FeatureNameStatistics.INT
FLOAT = statistics_pb2.FeatureNameStatistics.FLOAT


def statistics_artifact(tmp_path, label_stats: dict[str, tuple[int, float, float]]):
    """ExampleStatistics whose splits hold one feature, "label": (type, min, max) per split."""
    artifact = standard_artifacts.ExampleStatistics()
    artifact.uri = str(tmp_path / "statistics")
    artifact.split_names = artifact_utils.encode_split_names(list(label_stats))
    for split, (kind, low, high) in label_stats.items():
        statistics = statistics_pb2.DatasetFeatureStatisticsList()
        dataset = statistics.datasets.add(num_examples=10)
        feature = dataset.features.add(type=kind)
        feature.path.step.append("label")
        feature.num_stats.min, feature.num_stats.max = low, high
        split_dir = artifact_utils.get_split_uri([artifact], split)
        os.makedirs(split_dir)
        with open(os.path.join(split_dir, stats_artifact_utils.BINARY_PB_BASENAME), "wb") as f:
            f.write(statistics.SerializeToString())
    return artifact


def inferred_schema() -> schema_pb2.Schema:
    schema = schema_pb2.Schema()
    schema.feature.add(name="label", type=schema_pb2.INT)
    schema.feature.add(name="image", type=schema_pb2.BYTES)
    return schema


def test_an_inferred_schema_gets_the_largest_label_over_all_splits(tmp_path):
    statistics = statistics_artifact(tmp_path, {"train": (INT, 0, 3), "eval": (INT, 1, 2)})
    schema = with_label_domain(inferred_schema(), statistics, "label")
    domain = data.label_int_domain(schema, "label")
    assert (domain.min, domain.max) == (0, 3)
    assert data.resolve_num_classes(TrainingConfig(), schema) == 4
    assert data.resolve_num_classes(TrainingConfig(num_classes=6), schema) == 6


def test_a_schema_with_a_class_range_is_kept(tmp_path):
    schema = inferred_schema()
    schema.feature[0].int_domain.max = 9
    statistics = statistics_artifact(tmp_path, {"train": (INT, 0, 3)})
    assert with_label_domain(schema, statistics, "label") == schema


@pytest.mark.parametrize(
    "label_stats, message",
    [
        ({"train": (FLOAT, 0, 3)}, r"label 'label' holds FLOAT values \(in the 'train' split\)"),
        (
            {"train": (INT, 0, 3), "eval": (INT, -1, 2)},
            r"label 'label' has values down to -1 \(in the 'eval' split\)",
        ),
    ],
)
def test_float_or_negative_labels_are_refused(tmp_path, label_stats, message):
    statistics = statistics_artifact(tmp_path, label_stats)
    with pytest.raises(LabelDomainError, match=message):
        with_label_domain(inferred_schema(), statistics, "label")


def test_a_label_missing_from_the_schema_or_the_statistics_is_named(tmp_path):
    statistics = statistics_artifact(tmp_path, {"train": (INT, 0, 3)})
    with pytest.raises(ValueError, match="label_key 'target' is not a feature of the schema"):
        with_label_domain(inferred_schema(), statistics, "target")
    with pytest.raises(LabelDomainError, match="label_key 'y' has no statistics in the 'train'"):
        largest_label(statistics, "y")
