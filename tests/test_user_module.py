"""The user's module file (trainer/user_module.py): loading, its contract and clear errors,
the feature specs `build_model` receives, and run_fn training a user's model."""

import os
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format
from tensorflow_metadata.proto.v0 import schema_pb2

from tests import trainer_examples
from trainer.config import TrainingConfig
from trainer.inputs.features import ModelInputs
from trainer.user_module import ModuleFile, UserModuleError, check_model, select_inputs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TABULAR_MODULE = os.path.join(REPO, "examples", "tabular_module.py")

# build_model over every feature, softmax out.
DENSE_MODEL = """
import keras

def build_model(feature_specs, num_classes):
    inputs = {name: keras.Input(spec.shape, dtype=spec.dtype, name=name)
              for name, spec in sorted(feature_specs.items())}
    flat = [keras.layers.Reshape((-1,))(tensor) for tensor in inputs.values()]
    x = keras.layers.Concatenate()(flat) if len(flat) > 1 else flat[0]
    return keras.Model(inputs, keras.layers.Dense(num_classes, activation="softmax")(x))
"""


def write_module(tmp_path, source, name="module.py"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(source))
    return str(path)


def test_a_local_module_travels_as_its_source_and_a_bucket_path_as_a_path(tmp_path):
    path = write_module(tmp_path, DENSE_MODEL)
    module = ModuleFile.read(path)
    assert module.source == textwrap.dedent(DENSE_MODEL) and module.path == path
    assert ModuleFile.from_custom_config(module.to_custom_config()) == module
    # The run no longer depends on the file: editing it afterwards changes nothing loaded.
    (tmp_path / "module.py").write_text("x = 1\n")
    assert module.load().defines("build_model")
    remote = ModuleFile.read("gs://bucket/module.py")
    assert remote.source is None and remote.path == "gs://bucket/module.py"
    assert ModuleFile.from_custom_config({}) is None


def test_the_example_module_defines_both_hooks():
    user = ModuleFile.read(TABULAR_MODULE).load()
    assert user.defines("preprocessing_fn") and user.defines("build_model")
    assert not user.takes_hyperparameters
    specs = {"a": tf.TensorSpec([1], tf.float32), "b": tf.TensorSpec([1], tf.float32)}
    assert user.build(specs, 3).output_shape == (None, 3)


BAD_MODULES = [
    ("x = 1\n", "defines neither preprocessing_fn nor build_model"),
    ("build_model = 3\n", "build_model must be a function, got int"),
    (
        "def build_model(specs):\n    pass\n",
        r"build_model must take \(feature_specs, num_classes\[, hp\]\)",
    ),
    ("def preprocessing_fn():\n    pass\n", r"preprocessing_fn must take \(inputs\)"),
    ("raise RuntimeError('broken import')\n", "failed to load: RuntimeError: broken import"),
    (
        "def build_model(specs, n):\n    return None\n",
        "build_model must return a keras.Model, got NoneType",
    ),
]


@pytest.mark.parametrize("source, message", BAD_MODULES, ids=lambda value: str(value)[:20])
def test_a_module_that_breaks_the_contract_is_named_with_its_function(tmp_path, source, message):
    path = write_module(tmp_path, source)
    specs = {"a": tf.TensorSpec([], tf.float32)}
    with pytest.raises(UserModuleError, match=f"{path}.*{message}|{path}: {message}"):
        ModuleFile.read(path).load().build(specs, 3)


@pytest.mark.parametrize(
    "layer, message",
    [
        ("keras.layers.Dense(4, activation='softmax')", r"shape \(4,\) per batch, not \(3,\)"),
        ("keras.layers.Dense(3, bias_initializer='ones')", "not class probabilities"),
    ],
    ids=["wrong-shape", "logits"],
)
def test_a_model_of_the_wrong_output_fails_before_training(tmp_path, layer, message):
    path = write_module(
        tmp_path,
        f"""
        import keras

        def build_model(feature_specs, num_classes):
            inputs = keras.Input(feature_specs["a"].shape, name="a")
            return keras.Model(inputs, {layer}(keras.layers.Reshape((1,))(inputs)))
        """,
    )
    with pytest.raises(UserModuleError, match=f"{path}: build_model returned .*{message}"):
        ModuleFile.read(path).load().build({"a": tf.TensorSpec([], tf.float32)}, 3)


def test_inputs_are_narrowed_to_what_the_model_names():
    a, b = keras.Input((), name="a"), keras.Input((2,), name="b")
    merged = keras.layers.Concatenate()([keras.layers.Reshape((1,))(a), b])
    model = keras.Model({"a": a, "b": b}, keras.layers.Dense(2, activation="softmax")(merged))
    features = {name: tf.zeros([2, *shape]) for name, shape in (("a", []), ("b", [2]), ("c", [5]))}
    assert sorted(select_inputs(model, features)) == ["a", "b"]
    single = keras.Model(b, keras.layers.Dense(2, activation="softmax")(b))
    assert select_inputs(single, features).shape == (2, 2)
    with pytest.raises(UserModuleError, match=r"takes inputs \['d'\] that are not features"):
        select_inputs(keras.Model({"d": a}, a), features)
    specs = {"a": tf.TensorSpec([], tf.float32), "b": tf.TensorSpec([2], tf.float32)}
    check_model(model, specs, 2, "test")


def test_raw_feature_specs_decode_images_and_make_numbers_float32_scalars():
    schema = text_format.Parse(
        trainer_examples.TABULAR_SCHEMA
        + 'feature { name: "image" type: BYTES shape { dim { size: 1 } } }',
        schema_pb2.Schema(),
    )
    config = TrainingConfig(image_shape=(28, 28, 1), input_size=(14, 14))
    specs = ModelInputs(config, schema, feature_dict=True).feature_specs()
    assert specs == {
        "count": tf.TensorSpec([], tf.float32),
        "image": tf.TensorSpec([14, 14, 1], tf.float32),
        "size": tf.TensorSpec([2], tf.float32),
    }


def test_run_fn_trains_the_modules_model_with_gsam_and_serves_raw_examples(tmp_path):
    module = ModuleFile.read(write_module(tmp_path, DENSE_MODEL))
    rng = np.random.default_rng(0)
    splits = {
        "train": trainer_examples.random_tabular_examples(rng, 48),
        "eval": trainer_examples.random_tabular_examples(rng, 8),
    }
    config = TrainingConfig(model="mlp", epochs=1, batch_size=16, min_train_steps=0)
    serving_dir, run_dir = trainer_examples.run_trainer(
        tmp_path,
        config,
        splits,
        trainer_examples.TABULAR_SCHEMA,
        custom_config={**config.to_custom_config(), **module.to_custom_config()},
    )
    keras_model = keras.saving.load_model(
        os.path.join(os.path.dirname(serving_dir), "Format-Keras", "model.keras")
    )
    assert sorted(keras_model.input) == ["count", "size"]  # the dict of numeric features
    served = trainer_examples.serve(serving_dir, splits["eval"])
    parsed = [tf.train.Example.FromString(record).features.feature for record in splits["eval"]]
    expected = keras_model(
        {
            "count": tf.constant([float(f["count"].int64_list.value[0]) for f in parsed]),
            "size": tf.constant([list(f["size"].float_list.value) for f in parsed]),
        },
        training=False,
    )
    np.testing.assert_allclose(served, expected, atol=1e-5)
    history = open(os.path.join(run_dir, "history.json")).read()
    assert '"rho"' in history and '"surrogate_gap"' in history


def test_train_refuses_a_keras_2_model_and_says_why():
    import tf_keras

    from trainer.training import fit

    model = tf_keras.Sequential([tf_keras.layers.Dense(2, input_shape=(3,))])
    with pytest.raises(ValueError, match=r"Keras 3 model \(keras.Model\), got tf_keras.*"):
        fit.train(model, None, None, None, config=TrainingConfig())
    with pytest.raises(ValueError, match="TF_USE_LEGACY_KERAS=1"):
        fit.check_keras_3(model)
    fit.check_keras_3(keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]))
