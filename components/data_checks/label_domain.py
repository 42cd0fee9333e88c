"""The label's class range, taken from StatisticsGen's statistics when the schema has none.

A curated schema says how many classes there are (the label's `int_domain`); a schema that
SchemaGen inferred does not. `with_label_domain` fills the gap from the statistics: the
label's smallest and largest values over every split, checked to be integers >= 0, become
`int_domain {min: 0 max: <largest>}`, so the Trainer trains `largest + 1` classes.

Example:

    schema = with_label_domain(schema, statistics_artifact, label_key="label")
    schema.feature[0].int_domain.max   # 9 for labels 0..9
"""

from __future__ import annotations

from tensorflow_metadata.proto.v0 import schema_pb2, statistics_pb2
from tfx import v1 as tfx
from tfx.components.statistics_gen import stats_artifact_utils
from tfx.types import artifact_utils

from trainer.inputs import data


class LabelDomainError(ValueError):
    """The label cannot be read as class numbers 0..num_classes-1; the message says why."""


def with_label_domain(
    schema: schema_pb2.Schema, statistics: tfx.dsl.Artifact, label_key: str
) -> schema_pb2.Schema:
    """`schema`, with the label's int_domain from `statistics` when it has no max of its own.

    Raises:
        ValueError: the label is not a feature of the schema.
        LabelDomainError: the label is not an integer feature in the statistics, or has
            negative values.
    """
    domain = data.label_int_domain(schema, label_key)
    if domain is not None and domain.HasField("max"):
        return schema
    largest = largest_label(statistics, label_key)
    completed = schema_pb2.Schema()
    completed.CopyFrom(schema)
    label = next(feature for feature in completed.feature if feature.name == label_key)
    label.ClearField("domain")
    label.int_domain.min = 0
    label.int_domain.max = largest
    return completed


def largest_label(statistics: tfx.dsl.Artifact, label_key: str) -> int:
    """The label's largest value over every split of `statistics`, checked as a class number."""
    maxima = []
    for split in artifact_utils.decode_split_names(statistics.split_names):
        view = stats_artifact_utils.load_statistics(statistics, split).get_default_slice()
        feature = view and view.get_feature(label_key)
        if feature is None:
            raise LabelDomainError(
                f"label_key {label_key!r} has no statistics in the {split!r} split: "
                f"every example needs its label."
            )
        stats = feature.proto()
        if stats.type != statistics_pb2.FeatureNameStatistics.INT:
            kind = statistics_pb2.FeatureNameStatistics.Type.Name(stats.type)
            raise LabelDomainError(
                f"label {label_key!r} holds {kind} values (in the {split!r} split); class "
                f"labels must be integers 0..num_classes-1, stored as int64."
            )
        if stats.num_stats.min < 0:
            raise LabelDomainError(
                f"label {label_key!r} has values down to {stats.num_stats.min:.0f} (in the "
                f"{split!r} split); class labels must be integers 0..num_classes-1."
            )
        maxima.append(int(stats.num_stats.max))
    if not maxima:
        raise LabelDomainError("the statistics have no splits: nothing to read the labels from.")
    return max(maxima)

