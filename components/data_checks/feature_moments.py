"""The numeric features' statistics, kept in the validated schema for the built-in MLP.

The built-in MLP standardizes its raw numeric inputs inside the model, with the mean and
standard deviation of each feature over the training split, which StatisticsGen computed
already: `with_numeric_statistics` copies them into the schema the Trainer reads
(`trainer.inputs.data.record_numeric_statistics`: a `NumericStatistics` in each feature's
`annotation.extra_metadata`), so no Transform step is needed and serving sees raw values.

Example:

    schema = with_numeric_statistics(schema, statistics_artifact)
    trainer.inputs.data.recorded_numeric_statistics(schema.feature[1]).mean
"""

from __future__ import annotations

from tensorflow_metadata.proto.v0 import schema_pb2, statistics_pb2
from tfx import v1 as tfx
from tfx.components.statistics_gen import stats_artifact_utils
from tfx.types import artifact_utils

from trainer.inputs import data

TRAIN_SPLIT = "train"


def with_numeric_statistics(
    schema: schema_pb2.Schema, statistics: tfx.dsl.Artifact
) -> schema_pb2.Schema:
    """`schema`, each INT or FLOAT feature with its statistics over the training split (the
    first split when none is called "train")."""
    splits = artifact_utils.decode_split_names(statistics.split_names)
    split = TRAIN_SPLIT if TRAIN_SPLIT in splits else splits[0]
    view = stats_artifact_utils.load_statistics(statistics, split).get_default_slice()
    completed = schema_pb2.Schema()
    completed.CopyFrom(schema)
    for feature in completed.feature:
        if feature.type not in (schema_pb2.INT, schema_pb2.FLOAT):
            continue
        found = view and view.get_feature(feature.name)
        stats = found and found.proto()
        if stats and stats.WhichOneof("stats") == "num_stats":
            numbers = statistics_pb2.NumericStatistics(
                mean=stats.num_stats.mean, std_dev=stats.num_stats.std_dev
            )
            data.record_numeric_statistics(feature, numbers)
    return completed
