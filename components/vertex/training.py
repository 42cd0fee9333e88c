"""VertexTensorBoardTrainer: TFX's Vertex AI Trainer, its job uploading to Vertex TensorBoard.

Vertex AI Training streams a job's TensorBoard logs to the Vertex TensorBoard named in its
CustomJobSpec (`tensorboard`, with a `service_account`) from `AIP_TENSORBOARD_LOG_DIR`, which it
sets to `<base_output_directory>/logs/`. The compiled settings are the same for every run, so
this executor sets `base_output_directory` when the job starts: to the Trainer's own
`model_run` output, which is new for each execution. The logs then land in
`<model_run>/logs/`, beside `history.json`, and each run is a run of its own in Vertex
TensorBoard. `trainer.training.tensorboard.log_dir` is where the Trainer writes them.

Example:

    trainer = VertexTensorBoardTrainer(run_fn="trainer.task.run_fn", examples=..., schema=...,
        custom_config={**training.to_custom_config(), **vertex_training_config(...,
            tensorboard="projects/p/locations/us-central1/tensorboards/123",
            service_account="trainer@p.iam.gserviceaccount.com")})
"""

from __future__ import annotations

from tfx import v1 as tfx
from tfx.dsl.components.base import executor_spec
from tfx.extensions.google_cloud_ai_platform.trainer import executor as vertex_trainer
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import json_utils


class TensorBoardTrainerExecutor(vertex_trainer.GenericExecutor):
    """Starts the Vertex AI Training job with its output folder in the run's `model_run`."""

    def Do(self, input_dict, output_dict, exec_properties):
        key = standard_component_specs.CUSTOM_CONFIG_KEY
        custom_config = json_utils.loads(exec_properties[key])
        model_run = artifact_utils.get_single_uri(
            output_dict[standard_component_specs.MODEL_RUN_KEY]
        )
        job_args = {
            **custom_config[vertex_trainer.TRAINING_ARGS_KEY],
            "base_output_directory": {"output_uri_prefix": model_run},
        }
        custom_config = {**custom_config, vertex_trainer.TRAINING_ARGS_KEY: job_args}
        return super().Do(
            input_dict, output_dict, {**exec_properties, key: json_utils.dumps(custom_config)}
        )


class VertexTensorBoardTrainer(tfx.extensions.google_cloud_ai_platform.Trainer):
    """`google_cloud_ai_platform.Trainer` whose job logs to Vertex TensorBoard."""

    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(TensorBoardTrainerExecutor)
