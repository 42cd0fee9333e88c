"""How a run's examples become its model's inputs, in training, serving, evaluation and probing.

One `ModelInputs` per run, along two axes:

- the model: a built-in one takes one tensor (`data.features_to_inputs`: the decoded image, or
  the numeric features in one vector); a user's `build_model` takes a dict of features;
- the data: raw examples, or with a `preprocessing_fn` the examples TFX's Transform wrote,
  whose serving path applies the transform graph (`tft_layer`) to raw examples.

Raw features for a user's model (`feature_specs`): the image (`config.image_key`, a PNG) as
float32 `[H, W, C]` in [0, 1] at `config.input_size`; every INT or FLOAT feature of fixed size
as float32, a scalar when it holds one value; other features are left out. Transformed
features are tf.Transform's output, as its transformed feature spec says. The label is never
a feature.

Example (a built-in MLP on raw CSV features):

>>> inputs = ModelInputs(TrainingConfig(model="mlp"), schema)
>>> dataset = inputs.dataset(files, data_accessor, training=True)
>>> inputs.serve(tf.constant([serialized_example]))  # the same path, from serialized examples
"""

from __future__ import annotations

import math

import tensorflow as tf
from absl import logging
from tensorflow_metadata.proto.v0 import schema_pb2

from trainer.config import TrainingConfig
from trainer.inputs import data
from trainer.inputs.augment import ImageAugmentation
from trainer.user_module import select_inputs

_TRANSFORMED_FEATURES_HELP = (
    "have preprocessing_fn return a dense tensor of fixed shape per example for it"
)


class ModelInputs:
    """The examples of one run as its model's inputs.

    Args:
        config: the run's `TrainingConfig` (label, image key and shape, batch size).
        schema: the raw examples' schema (the validated schema; it tells the classes).
        transform_output: a `tft.TFTransformOutput` when the run trains on transformed
            examples; `None` for raw examples.
        feature_dict: whether the model takes a dict of features (a user's `build_model`)
            rather than the built-in models' one tensor.
    """

    def __init__(
        self,
        config: TrainingConfig,
        schema: schema_pb2.Schema,
        transform_output=None,
        feature_dict: bool = False,
    ):
        self.config = config
        self.schema = schema
        self.transform_output = transform_output
        self.feature_dict = feature_dict
        if transform_output is None:
            self.example_schema = schema
        else:
            self.example_schema = transform_output.transformed_metadata.schema
            if not feature_dict and config.model != "mlp":
                raise ValueError(
                    f"A preprocessing_fn with the built-in model {config.model!r} is not "
                    f"supported: the built-in resnet reads PNG images. Define build_model in the "
                    f"module file too, or train the built-in mlp."
                )
        data.schema_feature(self.example_schema, config.label_key, "label_key")

    def with_config(self, config: TrainingConfig) -> ModelInputs:
        """The same examples and model kind under another config (e.g. a per-replica batch)."""
        return ModelInputs(config, self.schema, self.transform_output, self.feature_dict)

    @property
    def transformed(self) -> bool:
        return self.transform_output is not None

    def feature_specs(self) -> dict[str, tf.TensorSpec]:
        """One example of each feature a user's model may take: `build_model`'s first argument."""
        if self.transformed:
            return _transformed_specs(self.transform_output, self.config.label_key)
        return _raw_specs(self.config, self.schema)

    def input_shape(self) -> tuple[int, ...]:
        """The shape of one input of a built-in model."""
        return data.model_input_shape(self.config, self.example_schema)

    def to_inputs(self, features: dict) -> tf.Tensor | dict[str, tf.Tensor]:
        """A batch of parsed (and transformed) features as the model's input."""
        if not self.feature_dict:
            return data.features_to_inputs(features, self.config, self.example_schema)
        specs = self.feature_specs()
        inputs = {}
        for name, spec in specs.items():
            value = features[name]
            if not self.transformed and name == self.config.image_key:
                png = tf.reshape(data.dense(value), [-1])
                inputs[name] = data.decode_images(png, tuple(spec.shape))
            else:
                value = tf.cast(data.dense(value), spec.dtype)
                inputs[name] = tf.reshape(value, [-1, *spec.shape])
        return inputs

    def for_model(self, features: dict, model=None):
        """The model's input from parsed features, narrowed to the inputs `model` declares
        (a user's functional model may take some of the features)."""
        inputs = self.to_inputs(features)
        if model is None or not self.feature_dict:
            return inputs
        return select_inputs(model, inputs)

    def dataset(
        self,
        file_patterns: list[str],
        data_accessor,
        *,
        training: bool,
        model=None,
        num_batches: int | None = None,
        shuffle_seed: int | None = None,
    ) -> tf.data.Dataset:
        """Batches of (model input, label) from the Trainer's examples (`data.make_dataset`);
        the training batches augmented as `config.augment` says (seeded by `config.seed`)."""
        return data.make_dataset(
            file_patterns,
            data_accessor,
            self.example_schema,
            self.config,
            training=training,
            num_batches=num_batches,
            shuffle_seed=shuffle_seed,
            to_inputs=lambda features: self.for_model(features, model),
            augment=self.augmentation() if training else None,
        )

    def augmentation(self):
        """The training batches' augmentation (`config.augment`), or `None`: of the built-in
        resnet's images, or of the raw image feature (`config.image_key`) of a user's model."""
        config = self.config
        if not config.augment:
            return None
        if self.transformed:
            raise ValueError(
                "augment applies to the decoded raw image; with a preprocessing_fn the model "
                "takes Transform's features: augment inside your model instead (e.g. "
                "keras.layers.RandomCrop), or leave augment unset."
            )
        if not self.feature_dict and config.model != "resnet":
            raise ValueError(
                f"augment applies to images; the built-in model {config.model!r} takes numeric "
                f"features: leave augment unset."
            )
        images = ImageAugmentation(config.augment, config.seed)
        if not self.feature_dict:
            return images

        def augment_image_feature(inputs, batch_index):
            if config.image_key not in inputs:
                raise ValueError(
                    f"augment applies to the image feature {config.image_key!r} (image_key), "
                    f"which the model of build_model does not take (it takes "
                    f"{', '.join(sorted(inputs))})."
                )
            return {**inputs, config.image_key: images(inputs[config.image_key], batch_index)}

        return augment_image_feature

    def count_examples(self, file_patterns: list[str], data_accessor) -> int:
        return data.count_examples(
            file_patterns, data_accessor, self.example_schema, self.config.label_key
        )

    def raw_parse_spec(self) -> dict:
        """How serving parses a serialized raw example (the label left out)."""
        if self.transformed:
            spec = dict(self.transform_output.raw_feature_spec())
            spec.pop(self.config.label_key, None)
            return spec
        if not self.feature_dict:
            return data.parse_spec(self.config, self.schema)
        return {
            name: _raw_parse_entry(data.schema_feature(self.schema, name, "feature"), spec)
            for name, spec in self.feature_specs().items()
        }

    def serve(self, serialized: tf.Tensor, model=None) -> tf.Tensor | dict[str, tf.Tensor]:
        """The model's input from a batch of serialized raw tf.Examples: what the serving
        signature, the Evaluator and the SharpnessProbe feed it."""
        features = tf.io.parse_example(serialized, self.raw_parse_spec())
        if self.transformed:
            features = self.transform_layer()(features)
        return self.for_model(features, model)

    def transform_layer(self):
        """The transform graph as a Keras layer, made once: the SavedModel tracks it."""
        if not hasattr(self, "_transform_layer"):
            self._transform_layer = self.transform_output.transform_features_layer()
        return self._transform_layer


def _raw_specs(config: TrainingConfig, schema: schema_pb2.Schema) -> dict[str, tf.TensorSpec]:
    specs = {}
    for feature in schema.feature:
        if feature.name == config.label_key:
            continue
        if feature.name == config.image_key and feature.type == schema_pb2.BYTES:
            height, width = config.input_size or config.image_shape[:2]
            specs[feature.name] = tf.TensorSpec([height, width, config.image_shape[2]], tf.float32)
            continue
        if feature.type not in (schema_pb2.INT, schema_pb2.FLOAT):
            logging.info(
                "Feature %r (not numeric, not the image) is not a model input.", feature.name
            )
            continue
        shape = data.fixed_shape(feature)
        specs[feature.name] = tf.TensorSpec([] if shape == [1] else shape, tf.float32)
    if not specs:
        raise ValueError(
            f"The schema has no feature a model can take besides the label {config.label_key!r}: "
            f"an image ({config.image_key!r}, PNG bytes) or numeric features."
        )
    return dict(sorted(specs.items()))


def _raw_parse_entry(feature: schema_pb2.Feature, spec: tf.TensorSpec) -> tf.io.FixedLenFeature:
    if feature.type == schema_pb2.BYTES:
        return tf.io.FixedLenFeature([1], tf.string)
    dtype = tf.int64 if feature.type == schema_pb2.INT else tf.float32
    return tf.io.FixedLenFeature([max(1, math.prod(spec.shape))], dtype)


def _transformed_specs(transform_output, label_key: str) -> dict[str, tf.TensorSpec]:
    specs = {}
    for name, spec in sorted(transform_output.transformed_feature_spec().items()):
        if name == label_key:
            continue
        if not isinstance(spec, tf.io.FixedLenFeature):
            raise ValueError(
                f"Transformed feature {name!r} is a {type(spec).__name__}, not of fixed "
                f"length: {_TRANSFORMED_FEATURES_HELP}."
            )
        dtype = tf.float32 if spec.dtype in (tf.float32, tf.float64) else spec.dtype
        specs[name] = tf.TensorSpec(spec.shape, dtype)
    return specs
