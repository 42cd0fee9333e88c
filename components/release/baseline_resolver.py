"""The Evaluator's baseline: the latest model blessed among those trained before the candidate.

TFX's `LatestBlessedModelStrategy` returns the latest blessed model, whichever it is. With the
cache on, a rerun of unchanged inputs reuses the cached candidate, which the first run blessed:
the baseline becomes the candidate itself, the Evaluator's inputs change, and the Evaluator and
Pusher run again and push the same model a second time. `BaselineBeforeCandidateStrategy` makes
the baseline a function of the candidate (the latest blessed model with a smaller artifact id),
so a rerun resolves the same baseline as the first run and every later step is a cache hit. A
candidate is never compared against itself either.

KubeflowV2DagRunner compiles only TFX's own resolver strategies, so Vertex AI and Kubeflow keep
`LatestBlessedModelStrategy`.

Example:

    resolver = tfx.dsl.Resolver(
        strategy_class=BaselineBeforeCandidateStrategy,
        candidate=trainer.outputs["model"],
        model=tfx.dsl.Channel(type=standard_artifacts.Model),
        model_blessing=tfx.dsl.Channel(type=standard_artifacts.ModelBlessing),
    ).with_id("latest_blessed_model_resolver")
"""

from __future__ import annotations

from tfx import v1 as tfx
from tfx.components.evaluator import constants

CANDIDATE_KEY = "candidate"
MODEL_KEY = "model"
BLESSING_KEY = "model_blessing"


class BaselineBeforeCandidateStrategy(tfx.dsl.experimental.ResolverStrategy):
    """Resolves `model` and `model_blessing` to the latest blessed model older than `candidate`.

    Inputs: `candidate` (the model under evaluation), `model` (all models) and
    `model_blessing` (all blessings). Outputs `model` and `model_blessing`, empty when no model
    older than the candidate is blessed, and `candidate` unchanged.
    """

    def resolve_artifacts(self, store, input_dict):
        missing = {CANDIDATE_KEY, MODEL_KEY, BLESSING_KEY} - set(input_dict)
        if missing:
            raise ValueError(f"{type(self).__name__} needs the channels {sorted(missing)}.")
        result = {CANDIDATE_KEY: input_dict[CANDIDATE_KEY], MODEL_KEY: [], BLESSING_KEY: []}
        if not input_dict[CANDIDATE_KEY]:
            return result
        candidate_id = min(model.id for model in input_dict[CANDIDATE_KEY])
        blessings = {
            blessing.get_int_custom_property(constants.ARTIFACT_PROPERTY_CURRENT_MODEL_ID_KEY): (
                blessing
            )
            for blessing in input_dict[BLESSING_KEY]
            if blessing.get_int_custom_property(constants.ARTIFACT_PROPERTY_BLESSED_KEY) == 1
        }
        older = [m for m in input_dict[MODEL_KEY] if m.id < candidate_id and m.id in blessings]
        if older:
            baseline = max(older, key=lambda model: model.id)
            result.update({MODEL_KEY: [baseline], BLESSING_KEY: [blessings[baseline.id]]})
        return result
