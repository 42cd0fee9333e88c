"""The release stage: the baseline resolver, the Evaluator against it, the optional
SharpnessProbe, and the Pusher: the all-or-nothing filesystem Pusher, or the VertexPusher."""

from __future__ import annotations

import dataclasses
from typing import Any

import tensorflow_model_analysis as tfma
from tensorflow_model_analysis.proto import config_pb2 as tfma_config
from tfx import v1 as tfx

from components.release.atomic_pusher import AtomicPusher
from components.release.baseline_resolver import BaselineBeforeCandidateStrategy
from components.release.pushed_baseline import PushedBaseline
from components.sharpness.probe import ProbeSettings, probe_component
from components.vertex.push import VertexPusher, VertexPushSettings
from trainer.config import TrainingConfig
from trainer.models import export

# How the Evaluator's baseline is found: the latest model blessed before the candidate (local
# and Beam runners), TFX's LatestBlessedModelStrategy (the only resolver KubeflowV2DagRunner
# compiles: Vertex AI), or the newest model in the push destination, found by a container
# component (Kubeflow Pipelines, whose open-source backend runs no resolvers).
BASELINES = ("before-candidate", "latest-blessed", "latest-pushed")


@dataclasses.dataclass(frozen=True)
class ReleaseSettings:
    """How a candidate is judged and released.

    Args:
        serving_model_dir: where blessed models are pushed, one numbered folder each.
        accuracy_threshold: the eval accuracy a model needs to be blessed, in [0, 1].
        max_accuracy_drop: how far (absolute) the candidate may trail the baseline, in [0, 1].
        sharpness: when set, a SharpnessProbe measures the candidate (and the baseline) after
            the Evaluator, and the Pusher takes its blessing (components/sharpness/probe.py).
        baseline: one of `BASELINES`.
        push: when set, the blessed model also goes to Vertex AI Model Registry (and an
            endpoint) as these settings say (components/vertex/push.py); the numbered copy
            under `serving_model_dir`, which must then be on gs://, is what the registry
            version points at.
    """

    serving_model_dir: str
    accuracy_threshold: float
    max_accuracy_drop: float
    sharpness: ProbeSettings | None = None
    baseline: str = "before-candidate"
    push: VertexPushSettings | None = None

    def __post_init__(self):
        _check_fraction("accuracy_threshold", self.accuracy_threshold)
        _check_fraction("max_accuracy_drop", self.max_accuracy_drop)
        if self.sharpness is not None and not isinstance(self.sharpness, ProbeSettings):
            raise ValueError(
                f"sharpness must be a ProbeSettings, got {type(self.sharpness).__name__}."
            )
        if self.baseline not in BASELINES:
            raise ValueError(
                f"baseline must be one of {', '.join(BASELINES)}, got {self.baseline!r}."
            )
        if (
            self.baseline == "latest-pushed"
            and self.sharpness is not None
            and self.sharpness.max_sharpness_increase is not None
        ):
            raise ValueError(
                "max_sharpness_increase compares with the baseline's Keras model, which the "
                "latest-pushed baseline (Kubeflow Pipelines) does not have: a pushed version "
                "is a SavedModel only."
            )
        if self.push is not None:
            if not isinstance(self.push, VertexPushSettings):
                raise ValueError(
                    f"push must be a VertexPushSettings, got {type(self.push).__name__}."
                )
            if not self.serving_model_dir.startswith("gs://"):
                raise ValueError(
                    f"serving_model_dir must be on gs:// to push to {self.push.push_to}: the "
                    f"registry version points at its copy there, got {self.serving_model_dir!r}."
                )


@dataclasses.dataclass(frozen=True)
class ReleaseStage:
    """The candidate judged against the last blessed model, and pushed if blessed.

    `model_resolver` is the node whose `model` output is the baseline: a Resolver, or on
    Kubeflow the PushedBaseline component.
    """

    model_resolver: Any
    evaluator: Any
    pusher: Any
    sharpness_probe: Any = None

    @property
    def components(self) -> list:
        probe = [self.sharpness_probe] if self.sharpness_probe is not None else []
        return [self.model_resolver, self.evaluator, *probe, self.pusher]


def release_stage(
    examples, model, training: TrainingConfig, settings: ReleaseSettings, model_run=None
) -> ReleaseStage:
    """Baseline resolver -> Evaluator (candidate vs baseline) [-> SharpnessProbe]
    -> Pusher. With `settings.sharpness`, the Pusher takes the probe's blessing, which
    requires the Evaluator's. With `settings.push`, the Pusher is the VertexPusher, which
    labels the registry version from the candidate's `model_run` (its Trainer's), the
    evaluation and the probe's report.

    With `baseline="before-candidate"` the baseline is the latest model blessed before the
    candidate was trained (components/release/baseline_resolver.py), so a cached rerun
    evaluates and pushes nothing new; `"latest-blessed"` uses TFX's LatestBlessedModelStrategy,
    the one KubeflowV2DagRunner compiles; `"latest-pushed"` is the PushedBaseline component
    (components/release/pushed_baseline.py), which reads the push destination.
    """
    history = dict(
        model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
        model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing),
    )
    if settings.baseline == "latest-pushed":
        model_resolver = PushedBaseline(
            candidate=model, serving_model_dir=settings.serving_model_dir
        ).with_id("PushedBaseline")
    elif settings.baseline == "latest-blessed":
        model_resolver = tfx.dsl.Resolver(
            strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy, **history
        ).with_id("latest_blessed_model_resolver")
    else:
        model_resolver = tfx.dsl.Resolver(
            strategy_class=BaselineBeforeCandidateStrategy, candidate=model, **history
        ).with_id("latest_blessed_model_resolver")
    evaluator = evaluator_component(
        examples,
        model,
        eval_config(training.label_key, settings.accuracy_threshold, settings.max_accuracy_drop),
        baseline_model=model_resolver.outputs["model"],
    )
    probe = None
    blessing = evaluator.outputs["blessing"]
    if settings.sharpness is not None:
        probe = probe_component(
            model,
            examples,
            training,
            settings.sharpness,
            baseline_model=model_resolver.outputs["model"],
            evaluator_blessing=blessing,
        )
        blessing = probe.outputs["blessing"]
    if settings.push is None:
        pusher = AtomicPusher(
            model=model,
            model_blessing=blessing,
            push_destination=tfx.proto.PushDestination(
                filesystem=tfx.proto.PushDestination.Filesystem(
                    base_directory=settings.serving_model_dir
                )
            ),
        )
    else:
        if model_run is None:
            raise ValueError("release_stage needs the candidate's model_run to push to Vertex AI.")
        pusher = VertexPusher(
            model=model,
            model_blessing=blessing,
            model_run=model_run,
            evaluation=evaluator.outputs["evaluation"],
            sharpness=None if probe is None else probe.outputs["sharpness"],
            settings=settings.push,
            serving_model_dir=settings.serving_model_dir,
        )
    pusher = pusher.with_id("Pusher")
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


def _check_fraction(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}.")
