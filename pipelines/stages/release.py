"""The release stage: the baseline resolver, the Evaluator against it, the optional
SharpnessProbe, and the all-or-nothing Pusher."""

from __future__ import annotations

import dataclasses
from typing import Any

import tensorflow_model_analysis as tfma
from tensorflow_model_analysis.proto import config_pb2 as tfma_config
from tfx import v1 as tfx

from components.release.atomic_pusher import AtomicPusher
from components.release.baseline_resolver import BaselineBeforeCandidateStrategy
from components.sharpness.probe import ProbeSettings, probe_component
from trainer.config import TrainingConfig
from trainer.models import export


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
    (components/release/baseline_resolver.py), so a cached rerun evaluates and pushes nothing new;
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
