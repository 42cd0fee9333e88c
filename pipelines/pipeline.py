"""The gsam-tfx pipeline DAG. It holds no configuration: see configs.py and the runners.

ExampleGen -> StatisticsGen -> SchemaGen (or ImportSchemaGen) -> ExampleValidator
-> ValidationGate -> [Tuner] -> Trainer (GSAM) -> Evaluator (against the last blessed model)
[-> SharpnessProbe] -> Pusher.

`create_pipeline` composes small builders, one per stage: `data_stage` (examples, statistics,
schema and the validation gate), `tuner_component` (with `tuning`), `trainer_component` and
`release_stage` (resolver, Evaluator, optionally the SharpnessProbe, Pusher). The pipeline
variants (comparison, tuning, sharpness) compose the same builders; `comparison_stage` trains,
evaluates and, with sharpness, probes every run.

Example:

    from tfx import v1 as tfx
    from pipelines import configs, pipeline
    dag = pipeline.create_pipeline(
        pipeline_name="gsam-tfx", pipeline_root="/tmp/root", data_root=configs.DATA_ROOT,
        schema_path=configs.SCHEMA_PATH, serving_model_dir="/tmp/serving",
        training=configs.TRAINING, accuracy_threshold=0.7, max_accuracy_drop=0.01,
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
            "/tmp/metadata.sqlite"))
    tfx.orchestration.LocalDagRunner().run(dag)
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Sequence

import tensorflow_data_validation as tfdv
import tensorflow_model_analysis as tfma
from ml_metadata.proto import metadata_store_pb2
from tensorflow_model_analysis.proto import config_pb2 as tfma_config
from tfx import v1 as tfx
from tfx.dsl.io import fileio

from components.atomic_pusher import AtomicPusher
from components.baseline_resolver import BaselineBeforeCandidateStrategy
from components.checked_import import CheckedImportExampleGen
from components.comparison_report import comparison_report
from components.label_noise import LabelNoise
from components.sharpness_probe import ProbeSettings, probe_component
from components.validation_gate import ValidationGate
from pipelines.comparison import ComparisonSpec, run_name
from pipelines.vertex_training import vertex_tuning_config
from trainer import export
from trainer.config import TrainingConfig
from trainer.search_space import SearchSpace

RUN_FN = "trainer.task.run_fn"
TUNER_FN = "trainer.tuning.tuner_fn"
DATA_FORMATS = ("tfrecord", "csv")
# Folders that, when both exist under the data root, are the train and eval splits.
SPLIT_FOLDERS = ("train", "eval")


def create_pipeline(
    *,
    pipeline_name: str,
    pipeline_root: str,
    data_root: str,
    serving_model_dir: str,
    training: TrainingConfig,
    accuracy_threshold: float,
    max_accuracy_drop: float,
    schema_path: str | None = None,
    data_format: str = "tfrecord",
    split_folders: bool = True,
    metadata_connection_config: metadata_store_pb2.ConnectionConfig | None = None,
    beam_pipeline_args: Sequence[str] = (),
    vertex_training: dict[str, Any] | None = None,
    tuning: SearchSpace | None = None,
    parallel_trials: int = 1,
    sharpness: ProbeSettings | None = None,
    enable_cache: bool = False,
    comparison: ComparisonSpec | None = None,
    stock_resolver: bool = False,
) -> tfx.dsl.Pipeline:
    """Builds the pipeline; every value is checked here, before anything runs.

    Paths are taken as the components will see them (local, gs://, or inside the image):
    `inspect_local_data` checks a local data root first.

    Args:
        data_root: a folder of TFRecord files of tf.Examples or of CSV files.
        data_format: `"tfrecord"` or `"csv"`.
        split_folders: the data root's `train/` and `eval/` folders are the splits; if false,
            ExampleGen splits the examples 2:1 by hash.
        schema_path: a curated schema (ImportSchemaGen). `None` infers one with SchemaGen.
        training: the Trainer's hyperparameters, passed as its `custom_config`.
        accuracy_threshold: the eval accuracy a model needs to be blessed.
        max_accuracy_drop: how far (absolute) the candidate may trail the last blessed model.
        vertex_training: when set, the Trainer runs as a Vertex AI Training job: a dict of
            `tfx.extensions.google_cloud_ai_platform` settings (see `pipelines/vertex_training.py`).
            With `tuning`, the Tuner runs there too, on the same machines.
        tuning: when set, a Tuner searches this space between the validation gate and the
            Trainer, and the Trainer trains with its best values.
        parallel_trials: trials the Tuner runs at once, one per machine; more than one needs
            `vertex_training`.
        comparison: when set, the comparison variant: one Trainer and Evaluator per method and
            seed (`training` with each method's optimizer), optional label noise before them,
            and a ComparisonReport whose winning model goes on to the release stage.
        sharpness: when set, a SharpnessProbe measures the candidate (and the baseline) after
            the Evaluator, and the Pusher takes its blessing (see
            `components/sharpness_probe.py`). In a comparison, a SharpnessProbe also measures
            every run's model for the report (ungated).
        enable_cache: reuse the outputs of steps whose inputs and settings are unchanged.
        stock_resolver: the baseline from TFX's LatestBlessedModelStrategy (needed by
            KubeflowV2DagRunner) rather than the latest model blessed before the candidate.
    """
    check_settings(training, data_root, data_format, accuracy_threshold, max_accuracy_drop)
    check_tuning(tuning, training, vertex_training, parallel_trials)
    if comparison is not None and not isinstance(comparison, ComparisonSpec):
        raise ValueError(
            f"comparison must be a ComparisonSpec, got {type(comparison).__name__}."
        )
    if comparison is not None and tuning is not None and tuning.searches_the_method:
        raise ValueError(
            "tuning's method_choices and perturb_every_choices cannot be searched in a "
            "comparison: every compared method is tuned on its own."
        )
    data = data_stage(data_root, data_format, split_folders, schema_path, training)
    probe_inputs = None if sharpness is None else SharpnessInputs(sharpness, data.schema, training)
    training_components = []
    if comparison is None:
        hyperparameters = None
        if tuning is not None:
            tuner = tuner_component(
                data.examples, data.schema, training, tuning, vertex_training, parallel_trials
            )
            training_components.append(tuner)
            hyperparameters = tuner.outputs["best_hyperparameters"]
        trainer = trainer_component(
            data.examples, data.schema, training, vertex_training, hyperparameters=hyperparameters
        )
        training_components.append(trainer)
        candidate = trainer.outputs["model"]
    else:
        stage = comparison_stage(
            data, training, comparison, vertex_training, tuning, parallel_trials, sharpness
        )
        training_components, candidate = stage.components, stage.best_model
    release = release_stage(
        data.examples,
        candidate,
        label_key=training.label_key,
        accuracy_threshold=accuracy_threshold,
        max_accuracy_drop=max_accuracy_drop,
        serving_model_dir=serving_model_dir,
        sharpness=probe_inputs,
        stock_resolver=stock_resolver,
    )
    return assemble(
        pipeline_name=pipeline_name,
        pipeline_root=pipeline_root,
        components=[*data.components, *training_components, *release.components],
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=beam_pipeline_args,
        enable_cache=enable_cache,
    )


def check_settings(
    training: TrainingConfig,
    data_root: str,
    data_format: str,
    accuracy_threshold: float,
    max_accuracy_drop: float,
) -> None:
    """The checks every pipeline variant makes before building anything."""
    if not isinstance(training, TrainingConfig):
        raise ValueError(f"training must be a TrainingConfig, got {type(training).__name__}.")
    _check_fraction("accuracy_threshold", accuracy_threshold)
    _check_fraction("max_accuracy_drop", max_accuracy_drop)
    if data_format not in DATA_FORMATS:
        raise ValueError(
            f"data_format must be one of {', '.join(DATA_FORMATS)}, got {data_format!r}."
        )
    if data_format == "csv" and training.model != "mlp":
        raise ValueError(
            f"CSV data at {data_root} is tabular: the training config's model must be 'mlp', "
            f"got {training.model!r}."
        )


def check_tuning(
    tuning: SearchSpace | None,
    training: TrainingConfig,
    vertex_training: dict[str, Any] | None,
    parallel_trials: int,
) -> None:
    """The checks of the tuning settings, before building anything."""
    if tuning is not None:
        if not isinstance(tuning, SearchSpace):
            raise ValueError(f"tuning must be a SearchSpace, got {type(tuning).__name__}.")
        tuning.check_training(training)
    if (
        isinstance(parallel_trials, bool)
        or not isinstance(parallel_trials, int)
        or parallel_trials < 1
    ):
        raise ValueError(f"parallel_trials must be an integer >= 1, got {parallel_trials!r}.")
    if parallel_trials > 1 and (tuning is None or vertex_training is None):
        raise ValueError(
            f"parallel_trials ({parallel_trials}) needs tuning on Vertex AI Training (tuning "
            f"and vertex_training); elsewhere the Tuner runs one trial at a time."
        )


@dataclasses.dataclass(frozen=True)
class DataStage:
    """ExampleGen -> StatisticsGen -> SchemaGen -> ExampleValidator -> ValidationGate."""

    example_gen: Any
    statistics_gen: Any
    schema_gen: Any
    example_validator: Any
    validation_gate: Any

    @property
    def examples(self):
        return self.example_gen.outputs["examples"]

    @property
    def schema(self):
        """The schema, available only once the gate passed: training depends on the gate."""
        return self.validation_gate.outputs["validated_schema"]

    @property
    def components(self) -> list:
        return [
            self.example_gen,
            self.statistics_gen,
            self.schema_gen,
            self.example_validator,
            self.validation_gate,
        ]


def data_stage(
    data_root: str,
    data_format: str,
    split_folders: bool,
    schema_path: str | None,
    training: TrainingConfig,
) -> DataStage:
    """Reads the examples, computes statistics, takes or infers the schema, and gates.

    TFRecords are imported by `CheckedImportExampleGen`, which names a file cut short or a
    record that is not a tf.Example (components/checked_import.py). For an image model the
    statistics include TFDV's image statistics (semantic domains), which a schema's
    `image_domain` constrains, and the gate decodes every image to the model's `image_shape`.
    The gate also gives the label of an inferred schema its class range, from the statistics.
    """
    images = training.model == "resnet"
    example_gen = _example_gen(data_root, data_format, split_folders)
    statistics_gen = tfx.components.StatisticsGen(
        examples=example_gen.outputs["examples"],
        stats_options=tfdv.StatsOptions(enable_semantic_domain_stats=True) if images else None,
    )
    if schema_path is None:
        schema_gen = tfx.components.SchemaGen(
            statistics=statistics_gen.outputs["statistics"], infer_feature_shape=True
        )
    else:
        schema_gen = tfx.components.ImportSchemaGen(schema_file=schema_path)
    example_validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"]
    )
    validation_gate = ValidationGate(
        schema=schema_gen.outputs["schema"],
        anomalies=example_validator.outputs["anomalies"],
        statistics=statistics_gen.outputs["statistics"],
        examples=example_gen.outputs["examples"],
        label_key=training.label_key,
        image_key=training.image_key if images else "",
        image_shape=json.dumps(list(training.image_shape) if images else None),
    )
    return DataStage(example_gen, statistics_gen, schema_gen, example_validator, validation_gate)


def tuner_component(
    examples,
    schema,
    training: TrainingConfig,
    tuning: SearchSpace,
    vertex_training: dict[str, Any] | None = None,
    parallel_trials: int = 1,
    component_id: str = "Tuner",
):
    """The Tuner running `trainer.tuning.tuner_fn` over `tuning`, its trials trained like
    `training`; on Vertex AI Training with `vertex_training`, `parallel_trials` at a time."""
    tuner_args = dict(
        tuner_fn=TUNER_FN,
        examples=examples,
        schema=schema,
        custom_config={**training.to_custom_config(), **tuning.to_custom_config()},
    )
    if vertex_training is None:
        tuner = tfx.components.Tuner(**tuner_args)
    else:
        tuner_args["custom_config"].update(vertex_tuning_config(vertex_training, parallel_trials))
        tuner = tfx.extensions.google_cloud_ai_platform.Tuner(
            **tuner_args, tune_args=tfx.proto.TuneArgs(num_parallel_trials=parallel_trials)
        )
    return tuner if component_id == "Tuner" else tuner.with_id(component_id)


def trainer_component(
    examples,
    schema,
    training: TrainingConfig,
    vertex_training: dict[str, Any] | None = None,
    component_id: str = "Trainer",
    hyperparameters=None,
):
    """The Trainer running `trainer.task.run_fn` with `training` as its custom_config, and
    the tuned values of `hyperparameters` (a Tuner's `best_hyperparameters`) laid over it."""
    trainer_args = dict(
        run_fn=RUN_FN,
        examples=examples,
        schema=schema,
        hyperparameters=hyperparameters,
        custom_config=training.to_custom_config(),
    )
    if vertex_training is None:
        trainer = tfx.components.Trainer(**trainer_args)
    else:
        trainer_args["custom_config"] = {**trainer_args["custom_config"], **vertex_training}
        trainer = tfx.extensions.google_cloud_ai_platform.Trainer(**trainer_args)
    return trainer if component_id == "Trainer" else trainer.with_id(component_id)


@dataclasses.dataclass(frozen=True)
class ComparisonStage:
    """Label noise (optional), a Trainer and an Evaluator per run, and the report."""

    components: list
    best_model: Any


def comparison_stage(
    data: DataStage,
    training: TrainingConfig,
    spec: ComparisonSpec,
    vertex_training: dict[str, Any] | None = None,
    tuning: SearchSpace | None = None,
    parallel_trials: int = 1,
    sharpness: ProbeSettings | None = None,
) -> ComparisonStage:
    """Trains every (method, seed) run of `spec` on the same examples, evaluates each on the
    eval split, and reports. The Trainers do not depend on one another, so orchestrators that
    can run them in parallel do. With `tuning`, each method is tuned once, on its first seed's
    config (plain training searches the learning rate alone), and all its seeds train with
    the tuned values. With `sharpness`, a SharpnessProbe per run (`SharpnessProbe.gsam.seed1`,
    ...) measures its model with those settings, its limits left out: the report shows the
    measures per method, and only the release stage gates."""
    components = []
    train_examples = data.examples
    if spec.label_noise > 0:
        noise = LabelNoise(
            examples=data.examples,
            schema=data.schema,
            noise_rate=spec.label_noise,
            seed=spec.label_noise_seed,
            label_key=training.label_key,
        )
        components.append(noise)
        train_examples = noise.outputs["noisy_examples"]
    run_config = eval_config(training.label_key, accuracy_threshold=0.0, max_accuracy_drop=None)
    run_probe = (
        None
        if sharpness is None
        else dataclasses.replace(sharpness, max_top_eigenvalue=None, max_sharpness_increase=None)
    )
    runs = {}
    tuned = {}
    for (method, seed), config in spec.training_configs(training).items():
        if tuning is not None and method not in tuned:
            tuner = tuner_component(
                train_examples,
                data.schema,
                config,
                tuning,
                vertex_training,
                parallel_trials,
                component_id=f"Tuner.{method}",
            )
            components.append(tuner)
            tuned[method] = tuner.outputs["best_hyperparameters"]
        name = run_name(method, seed)
        trainer = trainer_component(
            train_examples,
            data.schema,
            config,
            vertex_training,
            component_id=f"Trainer.{name}",
            hyperparameters=tuned.get(method),
        )
        evaluator = evaluator_component(
            data.examples, trainer.outputs["model"], run_config, component_id=f"Evaluator.{name}"
        )
        components += [trainer, evaluator]
        runs[(method, seed)] = {
            "model": trainer.outputs["model"],
            "model_run": trainer.outputs["model_run"],
            "evaluation": evaluator.outputs["evaluation"],
        }
        if run_probe is not None:
            probe = probe_component(
                trainer.outputs["model"], data.examples, data.schema, config, run_probe
            ).with_id(f"SharpnessProbe.{name}")
            components.append(probe)
            runs[(method, seed)]["sharpness"] = probe.outputs["sharpness"]
    settings = {
        "methods": list(spec.methods),
        "seeds": spec.seeds,
        "budget": spec.budget,
        "label_noise": spec.label_noise,
        "label_noise_seed": spec.label_noise_seed,
        "training": training.to_dict(),
    }
    if run_probe is not None:
        settings["sharpness"] = {"split": run_probe.split, **run_probe.measure_arguments()}
    report = comparison_report(runs, settings=settings, label_key=training.label_key)
    return ComparisonStage(components=[*components, report], best_model=report.outputs["best_model"])


@dataclasses.dataclass(frozen=True)
class SharpnessInputs:
    """What `release_stage` needs to add a SharpnessProbe: its settings, the schema channel
    and the training config (how the Trainer decoded the examples)."""

    settings: ProbeSettings
    schema: Any
    training: TrainingConfig

    def __post_init__(self):
        if not isinstance(self.settings, ProbeSettings):
            raise ValueError(
                f"sharpness must be a ProbeSettings, got {type(self.settings).__name__}."
            )


@dataclasses.dataclass(frozen=True)
class ReleaseStage:
    """The candidate judged against the last blessed model, and pushed if blessed."""

    model_resolver: Any
    evaluator: Any
    pusher: Any
    sharpness_probe: Any = None

    @property
    def components(self) -> list:
        probe = [self.sharpness_probe] if self.sharpness_probe is not None else []
        return [self.model_resolver, self.evaluator, *probe, self.pusher]


def release_stage(
    examples,
    model,
    *,
    label_key: str,
    accuracy_threshold: float,
    max_accuracy_drop: float,
    serving_model_dir: str,
    sharpness: SharpnessInputs | None = None,
    stock_resolver: bool = False,
) -> ReleaseStage:
    """Baseline resolver -> Evaluator (candidate vs baseline) [-> SharpnessProbe]
    -> AtomicPusher. With `sharpness`, the Pusher takes the probe's blessing, which requires
    the Evaluator's.

    The baseline is the latest model blessed before the candidate was trained
    (components/baseline_resolver.py), so a cached rerun evaluates and pushes nothing new;
    `stock_resolver` uses TFX's LatestBlessedModelStrategy instead, the one KubeflowV2DagRunner
    compiles.
    """
    history = dict(
        model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
        model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing),
    )
    if stock_resolver:
        model_resolver = tfx.dsl.Resolver(
            strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy, **history
        )
    else:
        model_resolver = tfx.dsl.Resolver(
            strategy_class=BaselineBeforeCandidateStrategy, candidate=model, **history
        )
    model_resolver = model_resolver.with_id("latest_blessed_model_resolver")
    evaluator = evaluator_component(
        examples,
        model,
        eval_config(label_key, accuracy_threshold, max_accuracy_drop),
        baseline_model=model_resolver.outputs["model"],
    )
    probe = None
    blessing = evaluator.outputs["blessing"]
    if sharpness is not None:
        probe = probe_component(
            model,
            examples,
            sharpness.schema,
            sharpness.training,
            sharpness.settings,
            baseline_model=model_resolver.outputs["model"],
            evaluator_blessing=blessing,
        )
        blessing = probe.outputs["blessing"]
    pusher = AtomicPusher(
        model=model,
        model_blessing=blessing,
        push_destination=tfx.proto.PushDestination(
            filesystem=tfx.proto.PushDestination.Filesystem(base_directory=serving_model_dir)
        ),
    ).with_id("Pusher")
    return ReleaseStage(model_resolver, evaluator, pusher, probe)


def evaluator_component(
    examples, model, config: tfma.EvalConfig, baseline_model=None, component_id="Evaluator"
):
    """TFMA's Evaluator on the eval split."""
    evaluator = tfx.components.Evaluator(
        examples=examples, model=model, baseline_model=baseline_model, eval_config=config
    )
    return evaluator if component_id == "Evaluator" else evaluator.with_id(component_id)


def assemble(
    *,
    pipeline_name: str,
    pipeline_root: str,
    components: list,
    metadata_connection_config: metadata_store_pb2.ConnectionConfig | None,
    beam_pipeline_args: Sequence[str],
    enable_cache: bool,
) -> tfx.dsl.Pipeline:
    return tfx.dsl.Pipeline(
        pipeline_name=pipeline_name,
        pipeline_root=pipeline_root,
        components=components,
        enable_cache=enable_cache,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=list(beam_pipeline_args),
    )


def eval_config(
    label_key: str, accuracy_threshold: float, max_accuracy_drop: float | None
) -> tfma.EvalConfig:
    """TFMA on the serving signature.

    Blessing looks at the overall accuracy: it must clear `accuracy_threshold` and may trail
    the baseline by at most `max_accuracy_drop` (`None`: no baseline comparison). Per-class
    slices are reported, not gated.
    """
    overall = tfma.SlicingSpec()
    change = (
        None
        if max_accuracy_drop is None
        else tfma.GenericChangeThreshold(
            direction=tfma.MetricDirection.HIGHER_IS_BETTER,
            absolute={"value": -max_accuracy_drop},
        )
    )
    return tfma.EvalConfig(
        model_specs=[
            tfma.ModelSpec(
                model_type="tf_generic",
                signature_name=export.SIGNATURE_NAME,
                label_key=label_key,
                prediction_key=export.OUTPUT_KEY,
            )
        ],
        slicing_specs=[overall, tfma.SlicingSpec(feature_keys=[label_key])],
        metrics_specs=[
            tfma.MetricsSpec(
                metrics=[
                    tfma.MetricConfig(class_name="ExampleCount"),
                    tfma.MetricConfig(class_name="SparseCategoricalCrossentropy"),
                    tfma.MetricConfig(
                        class_name="SparseCategoricalAccuracy",
                        per_slice_thresholds=[
                            tfma_config.PerSliceMetricThreshold(
                                slicing_specs=[overall],
                                threshold=tfma.MetricThreshold(
                                    value_threshold=tfma.GenericValueThreshold(
                                        lower_bound={"value": accuracy_threshold}
                                    ),
                                    change_threshold=change,
                                ),
                            )
                        ],
                    ),
                ]
            )
        ],
    )


def inspect_local_data(
    data_root: str, data_format: str = "auto", schema_path: str | None = None
) -> tuple[str, bool]:
    """Checks a local data root; returns its format and whether it has split folders.

    `data_format="auto"` means CSV when the folder holds .csv files, else TFRecord.
    """
    if data_format != "auto" and data_format not in DATA_FORMATS:
        raise ValueError(
            f"data_format must be auto or one of {', '.join(DATA_FORMATS)}, got {data_format!r}."
        )
    if not fileio.isdir(data_root):
        raise ValueError(f"data_root is not a folder: {data_root}")
    files = [name for _, _, names in fileio.walk(data_root) for name in names]
    if not files:
        raise ValueError(f"data_root holds no files: {data_root}")
    if schema_path is not None and not fileio.exists(schema_path):
        raise ValueError(f"schema_path does not exist: {schema_path}")
    if data_format == "auto":
        data_format = "csv" if any(name.endswith(".csv") for name in files) else "tfrecord"
    split_folders = all(fileio.isdir(os.path.join(data_root, name)) for name in SPLIT_FOLDERS)
    return data_format, split_folders


def _example_gen(data_root: str, data_format: str, split_folders: bool):
    input_config = (
        tfx.proto.Input(
            splits=[tfx.proto.Input.Split(name=name, pattern=f"{name}/*") for name in SPLIT_FOLDERS]
        )
        if split_folders
        else None
    )
    if data_format == "csv":
        return tfx.components.CsvExampleGen(input_base=data_root, input_config=input_config)
    return CheckedImportExampleGen(input_base=data_root, input_config=input_config).with_id(
        "ImportExampleGen"
    )


def _check_fraction(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}.")
