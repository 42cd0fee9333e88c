"""Where the Trainer writes its TensorBoard logs.

On Vertex AI Training with a Vertex TensorBoard, the job uploads what appears under
`AIP_TENSORBOARD_LOG_DIR` (components/vertex/training.py sets it to `<model_run>/logs/`);
elsewhere the logs go to the Trainer's `model_run` folder, beside `history.json`.

Example:

>>> log_dir("/root/Trainer/model_run/7", environ={})
'/root/Trainer/model_run/7'
>>> log_dir("gs://b/run", environ={"AIP_TENSORBOARD_LOG_DIR": "gs://b/run/logs/"})
'gs://b/run/logs/'
"""

from __future__ import annotations

import os
from collections.abc import Mapping

VERTEX_LOG_DIR = "AIP_TENSORBOARD_LOG_DIR"


def log_dir(model_run_dir: str, environ: Mapping[str, str] | None = None) -> str:
    """Vertex AI's TensorBoard log folder when the job has one, else `model_run_dir`."""
    environ = os.environ if environ is None else environ
    return environ.get(VERTEX_LOG_DIR) or model_run_dir
