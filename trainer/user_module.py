"""The user's module file: `preprocessing_fn` (tf.Transform) and `build_model`, loaded in one place.

A module file may define either or both of:

- `preprocessing_fn(inputs)`: tf.Transform's callback. The pipeline runs TFX's Transform with
  it; the Trainer trains on the transformed examples, and the serving signature applies the
  transform graph to raw examples. The label must come out under its own name, unchanged.
- `build_model(feature_specs, num_classes)` or `build_model(feature_specs, num_classes, hp)`:
  returns an uncompiled Keras model that takes a dict of some of `feature_specs` (a
  `tf.TensorSpec` per feature, one example, no batch dimension, the label left out) and outputs
  class probabilities, `[batch, num_classes]`. With a third argument, the Tuner passes
  KerasTuner's `HyperParameters`, so `--tune` searches the user's model too.

The file travels inside the compiled pipeline as a `ModuleFile` in the components'
`custom_config`: a local file as its source text (so a run never depends on the file staying
where it was, the cache keys on its content, and compiling needs no bucket), a URI such as
`gs://BUCKET/module.py` as its path, read when the component runs. Errors name the file and the
function.

Example:

>>> module = ModuleFile.read("examples/tabular_module.py")
>>> user = module.load()
>>> sorted(name for name in ("preprocessing_fn", "build_model") if user.defines(name))
['build_model', 'preprocessing_fn']
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import inspect
import os
import re
import sys
import types
from typing import Any, Callable

import keras
import numpy as np
import tensorflow as tf

# The key of a component's custom_config that holds the module file.
CUSTOM_CONFIG_KEY = "user_module"
HOOKS = ("preprocessing_fn", "build_model")
# The names tf.Transform calls the hook by, and how our Transform component finds it.
PREPROCESSING_FN = "trainer.user_module.preprocessing_fn"


class UserModuleError(ValueError):
    """The module file does not define what it must, or what it defines misbehaves; the
    message names the file and the function."""


@dataclasses.dataclass(frozen=True)
class ModuleFile:
    """A user's module file as the components receive it.

    Args:
        path: the path the user gave (local, or a URI such as gs://BUCKET/module.py).
        source: the file's text for a local file; `None` for a URI, read when loaded.
    """

    path: str
    source: str | None = None

    def __post_init__(self):
        if not isinstance(self.path, str) or not self.path.endswith(".py"):
            raise ValueError(f"module_file must be a path to a .py file, got {self.path!r}.")

    @classmethod
    def read(cls, path: str) -> ModuleFile:
        """The module file at `path`: a local file's source is read now; a URI
        (`gs://BUCKET/module.py`) is kept as a path, read when a component loads it."""
        if "://" in path:
            return cls(path)
        if not os.path.isfile(path):
            raise ValueError(f"module_file does not exist or is not a file: {path}")
        with open(path, encoding="utf-8") as file:
            return cls(os.path.abspath(path), file.read())

    @property
    def digest(self) -> str:
        """A short digest of the source (of the path, for a URI not read yet)."""
        return hashlib.sha256((self.source or self.path).encode()).hexdigest()[:12]

    def to_custom_config(self) -> dict[str, Any]:
        return {CUSTOM_CONFIG_KEY: {"path": self.path, "source": self.source}}

    @classmethod
    def from_custom_config(cls, custom_config: dict[str, Any] | None) -> ModuleFile | None:
        """The module file of a component's custom_config; `None` when it has none."""
        entry = (custom_config or {}).get(CUSTOM_CONFIG_KEY)
        return None if entry is None else cls(entry["path"], entry.get("source"))

    def load(self) -> UserModule:
        """Executes the module (once per content) and returns its hooks, checked."""
        source = self.source
        if source is None:
            with tf.io.gfile.GFile(self.path) as file:
                source = file.read()
        name = f"gsam_user_module_{re.sub(r'[^0-9A-Za-z_]', '_', _stem(self.path))}_{self.digest}"
        module = sys.modules.get(name)
        if module is None:
            module = _execute(name, source, self.path)
        return UserModule.of(module, self.path)


@dataclasses.dataclass(frozen=True)
class UserModule:
    """The hooks a module file defines; either may be `None`, not both."""

    path: str
    preprocessing_fn: Callable | None
    build_model: Callable | None

    @classmethod
    def of(cls, module: types.ModuleType, path: str) -> UserModule:
        hooks = {name: getattr(module, name, None) for name in HOOKS}
        if not any(hooks.values()):
            raise UserModuleError(
                f"{path} defines neither preprocessing_fn nor build_model; a module file needs "
                f"at least one of them."
            )
        for name, hook in hooks.items():
            if hook is not None and not callable(hook):
                raise UserModuleError(
                    f"{path}: {name} must be a function, got {type(hook).__name__}."
                )
        preprocessing_fn, build_model = hooks["preprocessing_fn"], hooks["build_model"]
        if preprocessing_fn is not None:
            _check_arity(path, "preprocessing_fn", preprocessing_fn, ("inputs",))
        if build_model is not None:
            _check_arity(path, "build_model", build_model, ("feature_specs", "num_classes"), 1)
        return cls(path, preprocessing_fn, build_model)

    def defines(self, name: str) -> bool:
        return getattr(self, name) is not None

    @property
    def takes_hyperparameters(self) -> bool:
        """Whether `build_model` takes KerasTuner's `hp` as a third argument."""
        return self.build_model is not None and _positional_count(self.build_model) >= 3

    def build(self, feature_specs: dict[str, tf.TensorSpec], num_classes: int, hp=None):
        """Calls `build_model` and checks what it returns, before any training.

        The model must be a Keras model that takes a dict of some of the features and returns
        `[batch, num_classes]` class probabilities: it is called on two examples of zeros.
        """
        where = f"{self.path}: build_model"
        if self.build_model is None:
            raise UserModuleError(f"{self.path} defines no build_model.")
        arguments = [dict(feature_specs), num_classes]
        if self.takes_hyperparameters:
            arguments.append(hp)
        model = self.build_model(*arguments)
        if not isinstance(model, keras.Model):
            raise UserModuleError(f"{where} must return a keras.Model, got {type(model).__name__}.")
        check_model(model, feature_specs, num_classes, where)
        return model


def check_model(model: keras.Model, feature_specs, num_classes: int, where: str) -> None:
    """Calls `model` on two examples of zeros; it must give `[2, num_classes]` probabilities."""
    inputs = select_inputs(model, zeros(feature_specs, batch=2), where)
    try:
        outputs = model(inputs, training=False)
    except Exception as error:  # the user's model: any error is theirs to see
        raise UserModuleError(
            f"{where} returned a model that cannot be called on a dict of the features "
            f"{sorted(feature_specs)}: {error}"
        ) from error
    if isinstance(outputs, (dict, list, tuple)):
        raise UserModuleError(
            f"{where} returned a model with several outputs; it must output one tensor of class "
            f"probabilities, [batch, {num_classes}]."
        )
    shape = tuple(outputs.shape)
    if shape != (2, num_classes):
        raise UserModuleError(
            f"{where} returned a model whose output has shape {shape[1:]} per batch, not "
            f"({num_classes},): it must output class probabilities, one per class of the "
            f"label ({num_classes} classes)."
        )
    values = np.asarray(keras.ops.convert_to_numpy(outputs), dtype=np.float64)
    if not (np.all(values >= -1e-6) and np.allclose(values.sum(axis=1), 1.0, atol=1e-3)):
        raise UserModuleError(
            f"{where} returned a model whose outputs are not class probabilities (rows of "
            f"non-negative values summing to 1); end it with a softmax."
        )


def select_inputs(model: keras.Model, features: dict, where: str = "the model"):
    """The features `model` takes: the dict's entries a functional model names as inputs (by
    the keys of a dict of inputs, or the names of a list of them; all of them for a subclassed
    model), or the only feature for a single-input model."""
    structure = getattr(model, "_inputs_struct", None)
    if isinstance(structure, dict):
        missing = sorted(set(structure) - set(features))
        if missing:
            raise UserModuleError(
                f"{where}: the model takes inputs {missing} that are not features "
                f"(features: {sorted(features)})."
            )
        return {name: features[name] for name in structure}
    if isinstance(structure, (list, tuple)):
        return {
            tensor.name: features[tensor.name] for tensor in structure if tensor.name in features
        }
    if structure is not None:
        name = getattr(structure, "name", None)
        if name in features:
            return features[name]
        if len(features) == 1:
            return next(iter(features.values()))
        raise UserModuleError(
            f"{where}: the model takes one input, {name!r}, which is not a feature; name the "
            f"Input after a feature, or take a dict of them (features: {sorted(features)})."
        )
    return dict(features)


def zeros(feature_specs: dict[str, tf.TensorSpec], batch: int) -> dict[str, tf.Tensor]:
    """A batch of zeros for every feature."""
    return {
        name: tf.zeros([batch, *spec.shape], spec.dtype) for name, spec in feature_specs.items()
    }


def preprocessing_fn(inputs, custom_config):
    """The user's `preprocessing_fn`, as TFX's Transform calls it (`PREPROCESSING_FN`)."""
    module = ModuleFile.from_custom_config(custom_config)
    if module is None:
        raise UserModuleError("The Transform's custom_config names no module file.")
    user = module.load()
    if user.preprocessing_fn is None:
        raise UserModuleError(f"{module.path} defines no preprocessing_fn.")
    return user.preprocessing_fn(inputs)


def _execute(name: str, source: str, path: str) -> types.ModuleType:
    spec = importlib.util.spec_from_loader(name, loader=None, origin=path)
    module = importlib.util.module_from_spec(spec)
    module.__file__ = path
    folder = os.path.dirname(path)
    # A local module file may import its neighbours, as TFX's packaging of its folder allows.
    if os.path.isdir(folder) and folder not in sys.path:
        sys.path.append(folder)
    sys.modules[name] = module
    try:
        exec(compile(source, path, "exec"), module.__dict__)  # noqa: S102 - the user's own code
    except Exception as error:
        del sys.modules[name]
        raise UserModuleError(f"{path} failed to load: {type(error).__name__}: {error}") from error
    return module


def _check_arity(path, name, function, required, optional=0):
    count = _positional_count(function)
    if not len(required) <= count <= len(required) + optional:
        expected = ", ".join(required) + ("[, hp]" if optional else "")
        raise UserModuleError(
            f"{path}: {name} must take ({expected}), got {name}{inspect.signature(function)}."
        )


def _positional_count(function) -> int:
    parameters = inspect.signature(function).parameters.values()
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return sum(1 for parameter in parameters if parameter.kind in kinds)


def _stem(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]
