"""The Evaluator's baseline on Kubeflow Pipelines, without a resolver: the newest pushed model.

The open-source Kubeflow Pipelines backend runs no resolver executors ("resolver executors not
implemented", kubeflow/pipelines backend/src/v2/compiler/argocompiler/dag.go) and neither does
`kfp.local`, so TFX's `LatestBlessedModelStrategy` cannot find the last blessed model there.
The push destination can: the AtomicPusher pushes only blessed models, each into a version
folder numbered by its push time, so the newest blessed model is the highest-numbered version.

`PushedBaseline` copies that version into its `model` output, under `Format-Serving/` where
the Evaluator looks for a Model artifact's SavedModel. A version holding the candidate itself
(the same SavedModel fingerprint: a cached Trainer's model, pushed before) is passed over, so a
candidate is never its own baseline. With no other version (the first run), the output is
marked with `NO_MODEL_PROPERTY` (`no_model.py`), and the image's entrypoint
(`pipelines/cloud/kfp_entrypoint.py`) hands the Evaluator no baseline, as a resolver that
found nothing would: TFX then applies the accuracy threshold alone, without the change
threshold.

The copy is the SavedModel only: a pushed version has no `Format-Keras/`, so a SharpnessProbe
measures no baseline on Kubeflow.

Example:

    baseline = PushedBaseline(
        candidate=trainer.outputs["model"], serving_model_dir="gs://bucket/serving"
    ).with_id("PushedBaseline")
    evaluator = tfx.components.Evaluator(
        examples=..., model=trainer.outputs["model"], baseline_model=baseline.outputs["model"],
        eval_config=...)
"""

import os

from absl import logging
from tfx import v1 as tfx
from tfx.dsl.io import fileio
from tfx.utils import io_utils, path_utils

from components.release.atomic_pusher import fingerprint_of, pushed_versions
from components.release.no_model import PROPERTY as NO_MODEL_PROPERTY

VERSION_PROPERTY = "pushed_version"
DESTINATION_PROPERTY = "pushed_destination"
SAVED_MODEL_FILE = "saved_model.pb"


def newest_other_version(serving_model_dir: str, candidate_dir: str) -> str | None:
    """The newest version folder under `serving_model_dir` that holds a SavedModel other than
    the one in `candidate_dir`; None when there is none."""
    own = fingerprint_of(candidate_dir)
    for version in reversed(pushed_versions(serving_model_dir)):
        path = os.path.join(serving_model_dir, version)
        if not fileio.exists(os.path.join(path, SAVED_MODEL_FILE)):
            logging.warning("%s holds no %s; not a baseline.", path, SAVED_MODEL_FILE)
        elif own is None or fingerprint_of(path) != own:
            return path
    return None


@tfx.dsl.components.component
def PushedBaseline(
    candidate: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Model],
    model: tfx.dsl.components.OutputArtifact[tfx.types.standard_artifacts.Model],
    serving_model_dir: tfx.dsl.components.Parameter[str],
) -> None:
    """`model`: the newest model pushed to `serving_model_dir` that is not `candidate`, or
    an empty Model marked `NO_MODEL_PROPERTY` (see the module's docstring)."""
    version = newest_other_version(serving_model_dir, path_utils.serving_model_path(candidate.uri))
    if version is None:
        logging.info("No pushed model under %s but the candidate: no baseline.", serving_model_dir)
        model.set_int_custom_property(NO_MODEL_PROPERTY, 1)
        return
    io_utils.copy_dir(version, path_utils.serving_model_dir(model.uri))
    model.set_int_custom_property(NO_MODEL_PROPERTY, 0)
    model.set_string_custom_property(VERSION_PROPERTY, os.path.basename(version))
    model.set_string_custom_property(DESTINATION_PROPERTY, version)
    logging.info("Baseline: %s, copied to %s.", version, model.uri)
