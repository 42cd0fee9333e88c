"""From tf.Examples on disk (or serialized, at serving time) to model inputs.

The Trainer reads batches through TFX's `DataAccessor` (the penguin example's pattern); the
serving signature parses serialized examples with `parse_spec`. Both then call
`features_to_inputs`, so training and serving share one preprocessing path:

* `"resnet"`: the PNG bytes of `config.image_key`, decoded to `config.image_shape`'s channels,
  resized to `config.input_size` when set (and whenever an image has another size) and scaled
  to float32 in [0, 1].
* `"mlp"`: every INT or FLOAT feature of the schema except the label, in name order, each
  flattened, cast to float32 and concatenated into one vector. No scaling here: the MLP
  normalizes its input itself (see trainer/models/builtin.py). A feature must have a fixed size
  (`shape`, or `value_count` with min == max); others are rejected by name.

Example:

>>> schema = load_schema("data/fashion_mnist/schema.pbtxt")
>>> resolve_num_classes(TrainingConfig(), schema)
10
"""

from __future__ import annotations

import math

import tensorflow as tf
from tensorflow_metadata.proto.v0 import schema_pb2, statistics_pb2
from tfx.utils import io_utils
from tfx_bsl.public import tfxio

from trainer.config import TrainingConfig

_NUMERIC_TYPES = {schema_pb2.INT: tf.int64, schema_pb2.FLOAT: tf.float32}
_COUNT_BATCH_SIZE = 1024


def load_schema(schema_path: str | None) -> schema_pb2.Schema:
    """Reads a text-format TFMD schema (the Trainer's `fn_args.schema_path`)."""
    if not schema_path:
        raise ValueError("A schema file is required: connect a schema to the Trainer.")
    if not tf.io.gfile.exists(schema_path):
        raise ValueError(f"Schema file {schema_path!r} does not exist.")
    return io_utils.parse_pbtxt_file(schema_path, schema_pb2.Schema())


def resolve_num_classes(config: TrainingConfig, schema: schema_pb2.Schema) -> int:
    """`config.num_classes`, or else max + 1 of the label's int_domain in the schema."""
    if config.num_classes is not None:
        return config.num_classes
    return schema_num_classes(schema, config.label_key)


def schema_num_classes(schema: schema_pb2.Schema, label_key: str) -> int:
    """max + 1 of the int_domain of the label feature `label_key` in the schema."""
    domain = label_int_domain(schema, label_key)
    if domain is None or not domain.HasField("max"):
        raise ValueError(
            f"Cannot tell the number of classes: label feature {label_key!r} has no "
            f"int_domain with a max in the schema; set num_classes."
        )
    if domain.HasField("min") and domain.min < 0:
        raise ValueError(
            f"Label feature {label_key!r} has int_domain min {domain.min}; class "
            f"labels must be 0..num_classes-1."
        )
    return int(domain.max) + 1


def label_int_domain(schema: schema_pb2.Schema, label_key: str) -> schema_pb2.IntDomain | None:
    """The label's int_domain: its own, or the schema-level one it names; `None` if neither."""
    feature = schema_feature(schema, label_key, "label_key")
    if feature.HasField("int_domain"):
        return feature.int_domain
    if feature.domain:
        return next((d for d in schema.int_domain if d.name == feature.domain), None)
    return None


def parse_spec(
    config: TrainingConfig, schema: schema_pb2.Schema
) -> dict[str, tf.io.FixedLenFeature]:
    """`tf.io.parse_example` spec of the features the model reads (the label excluded)."""
    if config.model == "resnet":
        schema_feature(schema, config.image_key, "image_key")
        return {config.image_key: tf.io.FixedLenFeature([1], tf.string)}
    features = numeric_features(config, schema)
    if not features:
        raise ValueError(
            f"model='mlp' needs numeric (INT or FLOAT) features besides the label "
            f"{config.label_key!r}; the schema has none."
        )
    return {f.name: tf.io.FixedLenFeature(fixed_shape(f), _NUMERIC_TYPES[f.type]) for f in features}


def model_input_shape(config: TrainingConfig, schema: schema_pb2.Schema) -> tuple[int, ...]:
    """Shape of one model input: `config.image_shape` (at `config.input_size` when set), or
    (number of numeric values,)."""
    if config.model == "resnet":
        if config.input_size is not None:
            return (*config.input_size, config.image_shape[2])
        return config.image_shape
    return (sum(math.prod(spec.shape) for spec in parse_spec(config, schema).values()),)


def features_to_inputs(
    features: dict[str, tf.Tensor],
    config: TrainingConfig,
    schema: schema_pb2.Schema,
) -> tf.Tensor:
    """Maps a batch of parsed features to the model's single input tensor.

    Features the model does not read are ignored; sparse or ragged ones (from a schema
    without fixed shapes) are densified first.
    """
    if config.model == "resnet":
        png = tf.reshape(dense(features[config.image_key]), [-1])
        return decode_images(png, model_input_shape(config, schema))
    return tf.concat(
        [
            tf.reshape(
                tf.cast(dense(features[name]), tf.float32),
                [-1, math.prod(spec.shape)],
            )
            for name, spec in parse_spec(config, schema).items()
        ],
        axis=1,
    )


def numeric_features(config: TrainingConfig, schema: schema_pb2.Schema) -> list[schema_pb2.Feature]:
    """The INT and FLOAT features of the schema but the label, in name order."""
    return sorted(
        (f for f in schema.feature if f.type in _NUMERIC_TYPES and f.name != config.label_key),
        key=lambda f: f.name,
    )


def record_numeric_statistics(
    feature: schema_pb2.Feature, statistics: statistics_pb2.NumericStatistics
) -> None:
    """Keeps a numeric feature's statistics (StatisticsGen's, of the train split) in its schema
    entry, as `annotation.extra_metadata`: the validation gate writes them, the built-in MLP
    standardizes its inputs with them (`input_moments`)."""
    kept = [m for m in feature.annotation.extra_metadata if not m.Is(statistics.DESCRIPTOR)]
    del feature.annotation.extra_metadata[:]
    feature.annotation.extra_metadata.extend(kept)
    feature.annotation.extra_metadata.add().Pack(statistics)


def recorded_numeric_statistics(
    feature: schema_pb2.Feature,
) -> statistics_pb2.NumericStatistics | None:
    """The statistics `record_numeric_statistics` kept, or `None`."""
    for metadata in feature.annotation.extra_metadata:
        statistics = statistics_pb2.NumericStatistics()
        if metadata.Unpack(statistics):
            return statistics
    return None


def input_moments(
    config: TrainingConfig, schema: schema_pb2.Schema
) -> tuple[list[float], list[float]] | None:
    """The mean and variance of each value of the MLP's input vector (the order of
    `features_to_inputs`), from the statistics recorded in the schema; `None` when a numeric
    feature has none recorded (a schema the validation gate did not write)."""
    means, variances = [], []
    for name, spec in parse_spec(config, schema).items():
        feature = schema_feature(schema, name, "feature")
        statistics = recorded_numeric_statistics(feature)
        if statistics is None:
            return None
        size = math.prod(spec.shape)
        means += [statistics.mean] * size
        # A constant column keeps its values' scale rather than dividing by zero.
        variances += [statistics.std_dev**2 or 1.0] * size
    return means, variances


def decode_images(png: tf.Tensor, image_shape: tuple[int, int, int]) -> tf.Tensor:
    """PNG bytes, shape [batch], to float32 images [batch, *image_shape] in [0, 1]."""
    height, width, channels = image_shape

    def decode_one(data):
        image = tf.image.convert_image_dtype(tf.io.decode_png(data, channels=channels), tf.float32)
        same_size = tf.reduce_all(tf.shape(image)[:2] == [height, width])
        image = tf.cond(
            same_size,
            lambda: image,
            lambda: tf.image.resize(image, [height, width]),
        )
        return tf.ensure_shape(image, image_shape)

    return tf.map_fn(
        decode_one,
        png,
        fn_output_signature=tf.TensorSpec(image_shape, tf.float32),
    )


def make_dataset(
    file_patterns: list[str],
    data_accessor,
    schema: schema_pb2.Schema,
    config: TrainingConfig,
    *,
    training: bool,
    num_batches: int | None = None,
    shuffle_seed: int | None = None,
    to_inputs=None,
    augment=None,
) -> tf.data.Dataset:
    """Batches of (model input, label [batch] int64).

    The examples are read with `schema`; `to_inputs` maps a batch of their features to the
    model's input (default: `features_to_inputs`, the built-in models' one tensor). The
    training dataset shuffles and repeats forever (fit needs `steps_per_epoch`);
    `shuffle_seed` makes its order reproducible, and `augment(inputs, batch_index)` (e.g. a
    `trainer.inputs.augment.ImageAugmentation`), when given, changes the model input of its
    `batch_index`-th batch. The eval dataset makes one ordered pass; with `num_batches` (at
    most one pass) it stops after that many and declares its length, so Keras knows where
    validation ends.
    """
    if to_inputs is None:

        def to_inputs(features):
            return features_to_inputs(features, config, schema)

    dataset = data_accessor.tf_dataset_factory(
        file_patterns,
        tfxio.TensorFlowDatasetOptions(
            batch_size=config.batch_size,
            label_key=config.label_key,
            num_epochs=None if training else 1,
            shuffle=training,
            shuffle_seed=shuffle_seed,
        ),
        schema,
    )
    if num_batches is not None and not training:
        dataset = dataset.take(num_batches).apply(
            tf.data.experimental.assert_cardinality(num_batches)
        )

    def model_batch(features, label, index=None):
        inputs = to_inputs(features)
        if index is not None:
            inputs = augment(inputs, index)
        return inputs, tf.reshape(dense(label), [-1])

    if training and augment is not None:
        # The batch's index in the stream of training batches seeds its augmentation.
        dataset = dataset.enumerate().map(
            lambda index, batch: model_batch(*batch, index), num_parallel_calls=tf.data.AUTOTUNE
        )
    else:
        dataset = dataset.map(model_batch, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)


def count_examples(
    file_patterns: list[str],
    data_accessor,
    schema: schema_pb2.Schema,
    label_key: str,
) -> int:
    """Number of examples in `file_patterns` (one pass that parses only the label)."""
    return int(
        _label_batches(file_patterns, data_accessor, schema, label_key).reduce(
            0, lambda count, labels: count + tf.shape(labels)[0]
        )
    )


def count_labels(
    file_patterns: list[str],
    data_accessor,
    schema: schema_pb2.Schema,
    label_key: str,
    num_classes: int,
) -> list[int]:
    """Examples of each class 0..num_classes-1 in `file_patterns` (one pass that parses only
    the label); a label outside that range is an error naming it."""

    def add(state, labels):
        inside = (labels >= 0) & (labels < num_classes)
        counts = tf.math.bincount(
            tf.boolean_mask(labels, inside), minlength=num_classes, dtype=tf.int64
        )
        outside = tf.reduce_sum(tf.cast(tf.logical_not(inside), tf.int64))
        return state[0] + counts, state[1] + outside

    batches = _label_batches(file_patterns, data_accessor, schema, label_key)
    counts, outside = batches.reduce(
        (tf.zeros([num_classes], tf.int64), tf.constant(0, tf.int64)), add
    )
    if int(outside):
        raise ValueError(
            f"{int(outside)} examples have a {label_key!r} outside 0..{num_classes - 1}."
        )
    return [int(count) for count in counts.numpy()]


def _label_batches(file_patterns, data_accessor, schema, label_key) -> tf.data.Dataset:
    """The labels of `file_patterns` in batches, int32, parsing nothing else."""
    label_only = schema_pb2.Schema(feature=[schema_feature(schema, label_key, "label_key")])
    dataset = data_accessor.tf_dataset_factory(
        file_patterns,
        tfxio.TensorFlowDatasetOptions(batch_size=_COUNT_BATCH_SIZE, num_epochs=1, shuffle=False),
        label_only,
    )
    return dataset.map(lambda batch: tf.cast(tf.reshape(dense(batch[label_key]), [-1]), tf.int32))


def schema_feature(schema: schema_pb2.Schema, name: str, field: str) -> schema_pb2.Feature:
    for feature in schema.feature:
        if feature.name == name:
            return feature
    raise ValueError(
        f"{field} {name!r} is not a feature of the schema (features: "
        f"{', '.join(f.name for f in schema.feature) or 'none'})."
    )


def fixed_shape(feature: schema_pb2.Feature) -> list[int]:
    if feature.HasField("shape"):
        return [dim.size for dim in feature.shape.dim]
    count = feature.value_count
    if count.min == count.max and count.min >= 1:
        return [count.min]
    raise ValueError(
        f"Feature {feature.name!r} has no fixed size in the schema (set shape, or "
        f"value_count with min == max); a model input needs one."
    )


def dense(tensor):
    if isinstance(tensor, tf.SparseTensor):
        return tf.sparse.to_dense(tensor)
    if isinstance(tensor, tf.RaggedTensor):
        return tensor.to_tensor()
    return tensor


def tfrecord_compression(path: str) -> str:
    """`TFRecordDataset`'s compression_type for a TFRecord file: GZIP for a `.gz` name (as
    ExampleGen writes them), else none."""
    return "GZIP" if path.endswith(".gz") else ""
