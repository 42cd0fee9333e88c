"""SharpnessProbe: how flat the candidate's minimum is, beside the baseline's; optionally a gate.

It reads the Keras model the Trainer keeps beside its serving export in the Model artifact
(`trainer.models.export.keras_model_path`: `<model>/Format-Keras/model.keras`; the serving
SavedModel cannot be differentiated with respect to its weights), makes model inputs of the
first `max_examples` raw examples of a split with the candidate's own serving path (its
`model_inputs` signature: image decoding, numeric features or a tf.Transform graph, as in
training), and runs `trainer.gsam.sharpness.measure` in inference mode on the candidate and,
when given, on the baseline (same examples, same seed).

Outputs:

- `sharpness` (a `SharpnessReport`): `sharpness.json` (settings, both models' measures, the
  gate's checks and reasons) and `summary.md` (the two models side by side); the candidate's
  measures are also custom properties of the artifact;
- `blessing` (a `ModelBlessing`, shaped like the Evaluator's): blessed only when the Evaluator
  blessed the candidate and every sharpness limit holds (`components.sharpness.gate`); its
  `blessing_message` names the measure, value and limit. The Pusher takes this blessing.

Example:

    probe = SharpnessProbe(
        model=trainer.outputs["model"],
        examples=example_gen.outputs["examples"],
        baseline_model=model_resolver.outputs["model"],
        evaluator_blessing=evaluator.outputs["blessing"],
        training_config=json.dumps(training.to_dict()),
        max_top_eigenvalue=500.0,
    )
    pusher = AtomicPusher(model=..., model_blessing=probe.outputs["blessing"], ...)
"""

import dataclasses
import json
import os

import keras
import tensorflow as tf
from tfx import v1 as tfx
from tfx.components.evaluator import constants as evaluator_constants
from tfx.types import artifact_utils
from tfx.utils import io_utils, path_utils

from components.sharpness import gate
from trainer.config import TrainingConfig
from trainer.gsam.sharpness import RESULT_KEYS, check_arguments, measure, read_batches
from trainer.inputs import data
from trainer.models import export
from trainer.models.builtin import training_loss

REPORT_FILE = "sharpness.json"
SUMMARY_FILE = "summary.md"
# Examples measured by default. On the demo ResNet, `measure`'s defaults on 128 examples took
# 18 CPU seconds (256: 51), so candidate and baseline together stay within about 30 s on two
# cores (bench/sharpness_cost.py; README, "Sharpness").
DEFAULT_MAX_EXAMPLES = 128


class SharpnessReport(tfx.dsl.Artifact):
    """`sharpness.json` and `summary.md` written by a SharpnessProbe."""

    # Kubeflow V2 / Vertex compile a custom type to this schema title and their container
    # imports it as a class path, so it names the class as the `components` package exports it.
    TYPE_NAME = "components.SharpnessReport"


@dataclasses.dataclass(frozen=True)
class ProbeSettings:
    """What the probe measures and how it gates; checked when built.

    Args:
        split: the Examples split to measure on.
        max_top_eigenvalue, max_sharpness_increase, increase_measure: the gate's limits
            (see `components.sharpness.gate.decide`); none set means report only.
        rho, adaptive, ascent_steps, power_iterations, hutchinson_samples, seed, tolerance,
            max_examples: `trainer.gsam.sharpness.measure`'s settings.
    """

    split: str = "eval"
    max_top_eigenvalue: float | None = None
    max_sharpness_increase: float | None = None
    increase_measure: str = "top_eigenvalue"
    rho: float = 0.05
    adaptive: bool = False
    ascent_steps: int = 5
    power_iterations: int = 20
    hutchinson_samples: int = 10
    seed: int = 0
    tolerance: float = 1e-3
    max_examples: int = DEFAULT_MAX_EXAMPLES

    def __post_init__(self):
        if not isinstance(self.split, str) or not self.split:
            raise ValueError(f"split must be a non-empty split name, got {self.split!r}.")
        gate.check_limits(
            self.max_top_eigenvalue, self.max_sharpness_increase, self.increase_measure
        )
        check_arguments(**self.measure_arguments())

    def measure_arguments(self) -> dict:
        """The keyword arguments of `trainer.gsam.sharpness.measure`."""
        names = (
            "rho",
            "adaptive",
            "ascent_steps",
            "power_iterations",
            "hutchinson_samples",
            "seed",
            "tolerance",
            "max_examples",
        )
        return {name: getattr(self, name) for name in names}

    def component_parameters(self) -> dict:
        """The SharpnessProbe's parameters: the measure's settings as one JSON string, and
        unset limits left out."""
        parameters = {
            "split": self.split,
            "max_top_eigenvalue": self.max_top_eigenvalue,
            "max_sharpness_increase": self.max_sharpness_increase,
            "increase_measure": self.increase_measure,
            "measure_settings": json.dumps(self.measure_arguments()),
        }
        return {name: value for name, value in parameters.items() if value is not None}


def probe_component(model, examples, training: TrainingConfig, settings, **inputs):
    """A SharpnessProbe on `model` with `settings` (a `ProbeSettings`).

    `inputs` are the optional `baseline_model` and `evaluator_blessing` channels.
    """
    return SharpnessProbe(
        model=model,
        examples=examples,
        training_config=json.dumps(training.to_dict()),
        **inputs,
        **settings.component_parameters(),
    )


@tfx.dsl.components.component
def SharpnessProbe(
    model: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Model],
    examples: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Examples],
    sharpness: tfx.dsl.components.OutputArtifact[SharpnessReport],
    blessing: tfx.dsl.components.OutputArtifact[tfx.types.standard_artifacts.ModelBlessing],
    training_config: tfx.dsl.components.Parameter[str],
    baseline_model: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Model] = None,
    evaluator_blessing: tfx.dsl.components.InputArtifact[
        tfx.types.standard_artifacts.ModelBlessing
    ] = None,
    split: tfx.dsl.components.Parameter[str] = "eval",
    max_top_eigenvalue: tfx.dsl.components.Parameter[float] = None,
    max_sharpness_increase: tfx.dsl.components.Parameter[float] = None,
    increase_measure: tfx.dsl.components.Parameter[str] = "top_eigenvalue",
    measure_settings: tfx.dsl.components.Parameter[str] = "{}",
) -> None:
    settings = ProbeSettings(
        split=split,
        max_top_eigenvalue=max_top_eigenvalue,
        max_sharpness_increase=max_sharpness_increase,
        increase_measure=increase_measure,
        **json.loads(measure_settings),
    )
    config = TrainingConfig.from_dict(json.loads(training_config))
    batches = read_split(examples, model, config.label_key, settings.split, settings.max_examples)
    report = {
        "split": settings.split,
        "examples": sum(int(tf.shape(y)[0]) for _, y in batches),
        "settings": dataclasses.asdict(settings),
        "candidate": measure_model(model.uri, batches, settings),
        "baseline": None,
        "baseline_note": "there is no baseline model",
        "evaluator_blessed": None,
    }
    if baseline_model is not None:
        if tf.io.gfile.exists(export.keras_model_path(baseline_model.uri)):
            report["baseline"] = measure_model(baseline_model.uri, batches, settings)
            report["baseline_note"] = f"baseline model {baseline_model.uri}"
        else:
            report["baseline_note"] = (
                f"the baseline model {baseline_model.uri} has no Keras model "
                f"({export.KERAS_MODEL_DIR}); it was trained before the Trainer kept one"
            )
    if evaluator_blessing is not None:
        verdict = evaluator_blessing.get_int_custom_property(
            evaluator_constants.ARTIFACT_PROPERTY_BLESSED_KEY
        )
        report["evaluator_blessed"] = verdict == evaluator_constants.BLESSED_VALUE
    decision = gate.decide(
        report["candidate"],
        report["baseline"],
        evaluator_blessed=report["evaluator_blessed"],
        max_top_eigenvalue=settings.max_top_eigenvalue,
        max_sharpness_increase=settings.max_sharpness_increase,
        increase_measure=settings.increase_measure,
    )
    report["gate"] = decision.to_dict()
    write_report(report, sharpness)
    write_blessing(decision, report["evaluator_blessed"], blessing, model, baseline_model)


def read_split(examples, model, label_key: str, split: str, max_examples: int, batch_size=64):
    """The first `max_examples` examples of `split`, with their labels, as the candidate
    `model` itself makes model inputs of raw examples (its serving SavedModel's `model_inputs`
    signature: the same preprocessing as serving, a tf.Transform graph included)."""
    splits = artifact_utils.decode_split_names(examples.split_names)
    if split not in splits:
        raise ValueError(
            f"split {split!r} is not a split of the examples (splits: {', '.join(splits)})."
        )
    serving_dir = path_utils.serving_model_path(model.uri)
    signatures = tf.saved_model.load(serving_dir).signatures
    if export.INPUTS_SIGNATURE_NAME not in signatures:
        raise ValueError(
            f"The model at {serving_dir} has no {export.INPUTS_SIGNATURE_NAME!r} signature; the "
            f"SharpnessProbe needs a model exported by trainer.task.run_fn."
        )
    model_inputs = signatures[export.INPUTS_SIGNATURE_NAME]
    files = sorted(tf.io.gfile.glob(io_utils.all_files_pattern(
        artifact_utils.get_split_uri([examples], split)
    )))
    records = tf.data.TFRecordDataset(files, compression_type=data.tfrecord_compression(files[0]))
    label_spec = {label_key: tf.io.FixedLenFeature([1], tf.int64)}
    batches = []
    for serialized in records.take(max_examples).batch(batch_size):
        inputs = model_inputs(**{export.INPUT_NAME: serialized})
        if set(inputs) == {export.SINGLE_INPUT_KEY}:
            inputs = inputs[export.SINGLE_INPUT_KEY]
        labels = tf.reshape(tf.io.parse_example(serialized, label_spec)[label_key], [-1])
        batches.append((inputs, labels))
    return read_batches(batches, max_examples)


def measure_model(model_uri: str, batches, settings: ProbeSettings) -> dict:
    """`trainer.gsam.sharpness.measure` of the Keras model kept in the Model artifact."""
    path = export.keras_model_path(model_uri)
    if not tf.io.gfile.exists(path):
        raise ValueError(
            f"The model at {model_uri} has no Keras model at {path}: the SharpnessProbe needs "
            f"a model trained by trainer.task.run_fn, which keeps one beside the serving export."
        )
    model = keras.saving.load_model(path, compile=False)
    return measure(model, batches, training_loss(), **settings.measure_arguments())


def read_report(uri: str) -> dict:
    """The `sharpness.json` a SharpnessProbe wrote to its `sharpness` output at `uri`."""
    return json.loads(io_utils.read_string_file(os.path.join(uri, REPORT_FILE)))


def write_report(report: dict, artifact) -> None:
    """`sharpness.json`, `summary.md`, and the candidate's measures as custom properties."""
    io_utils.write_string_file(
        os.path.join(artifact.uri, REPORT_FILE), json.dumps(report, indent=2, sort_keys=True)
    )
    io_utils.write_string_file(os.path.join(artifact.uri, SUMMARY_FILE), render_summary(report))
    for name, value in report["candidate"].items():
        if isinstance(value, int):
            artifact.set_int_custom_property(name, value)
        else:
            artifact.set_float_custom_property(name, value)
    artifact.set_int_custom_property("blessed", int(report["gate"]["blessed"]))


def write_blessing(decision, evaluator_blessed, blessing, model, baseline_model) -> None:
    """The ModelBlessing the Pusher reads, with the Evaluator's properties and files."""
    constants = evaluator_constants
    blessing.set_string_custom_property(
        constants.ARTIFACT_PROPERTY_CURRENT_MODEL_URI_KEY, model.uri
    )
    blessing.set_int_custom_property(constants.ARTIFACT_PROPERTY_CURRENT_MODEL_ID_KEY, model.id)
    if baseline_model is not None:
        blessing.set_string_custom_property(
            constants.ARTIFACT_PROPERTY_BASELINE_MODEL_URI_KEY, baseline_model.uri
        )
        blessing.set_int_custom_property(
            constants.ARTIFACT_PROPERTY_BASELINE_MODEL_ID_KEY, baseline_model.id
        )
    blessing.set_string_custom_property(
        constants.ARTIFACT_PROPERTY_BLESSING_MESSAGE_KEY,
        "; ".join((evaluator_verdict(evaluator_blessed), *decision.reasons)),
    )
    blessed = decision.blessed
    blessing.set_int_custom_property(
        constants.ARTIFACT_PROPERTY_BLESSED_KEY,
        constants.BLESSED_VALUE if blessed else constants.NOT_BLESSED_VALUE,
    )
    marker = constants.BLESSED_FILE_NAME if blessed else constants.NOT_BLESSED_FILE_NAME
    io_utils.write_string_file(os.path.join(blessing.uri, marker), "")


def render_summary(report: dict) -> str:
    """The Markdown summary: settings, the two models side by side, the gate's verdict."""
    settings = report["settings"]
    candidate, baseline = report["candidate"], report["baseline"]
    perturbation = "|w|-scaled (adaptive)" if settings["adaptive"] else "SAM"
    lines = [
        "# Sharpness",
        "",
        (
            f"{report['examples']} examples of the `{report['split']}` split, inference mode; "
            f"rho {settings['rho']:g} ({perturbation}), {settings['ascent_steps']} ascent "
            f"steps, at most {settings['power_iterations']} power iterations (tolerance "
            f"{settings['tolerance']:g}), {settings['hutchinson_samples']} Hutchinson samples, "
            f"seed {settings['seed']}. Baseline: {report['baseline_note']}."
        ),
        "",
        "| measure | candidate | baseline |",
        "| --- | ---: | ---: |",
    ]
    for name in RESULT_KEYS:
        shown = _number(baseline[name]) if baseline else "-"
        lines.append(f"| {name} | {_number(candidate[name])} | {shown} |")
    decision = report["gate"]
    verdict = evaluator_verdict(report["evaluator_blessed"])
    lines += ["", f"Blessed: {'yes' if decision['blessed'] else 'no'} ({verdict})"]
    lines += [f"- {reason}" for reason in decision["reasons"]]
    return "\n".join(lines) + "\n"


def evaluator_verdict(evaluator_blessed: bool | None) -> str:
    """The Evaluator's part of the decision, in words."""
    if evaluator_blessed is None:
        return "no Evaluator blessing was given"
    return f"the Evaluator {'blessed' if evaluator_blessed else 'did not bless'} the model"


def _number(value) -> str:
    return str(value) if isinstance(value, int) else f"{value:.6g}"
