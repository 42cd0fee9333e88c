"""GSAM in someone else's TFX pipeline: TFX's own penguin example, as the tfx package ships it,
with its module's `run_fn` changed to train through `trainer.training.fit.train`
(examples/penguin_gsam.py), on synthetic penguin data."""

import json
import os

import pytest
import tensorflow as tf

from bench.penguin_reference import write_penguin_csv
from pipelines.local.layout import OutputLayout
from tests.pipeline_support import executed_nodes, node_outputs
from trainer.training.history import HISTORY_FILE

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODULE = os.path.join(REPO, "examples", "penguin_gsam.py")


def test_the_penguin_pipeline_trains_with_gsam_and_serves_its_own_signatures(tmp_path):
    from tfx import v1 as tfx
    from tfx.examples.penguin import penguin_pipeline_local

    data_root = tmp_path / "data"
    write_penguin_csv(str(data_root / "labelled" / "penguins_processed.csv"))
    layout = OutputLayout(str(tmp_path / "out"))
    dag = penguin_pipeline_local.create_pipeline(
        pipeline_name="penguin-gsam",
        pipeline_root=layout.pipeline_root,
        data_root=str(data_root),
        module_file=MODULE,
        accuracy_threshold=0.0,
        serving_model_dir=layout.serving_model_dir,
        metadata_path=layout.metadata_path,
        user_provided_schema_path=None,
        enable_tuning=False,
        enable_bulk_inferrer=False,
        examplegen_input_config=None,
        examplegen_range_config_date=None,
        resolver_range_config=None,
        beam_pipeline_args=["--direct_running_mode=in_memory"],
        enable_transform_input_cache=False,
        enable_example_diff=False,
    )
    tfx.orchestration.LocalDagRunner().run(dag)

    assert {"CsvExampleGen", "Transform", "Trainer", "Evaluator", "Pusher"} <= executed_nodes(
        layout
    )
    [model_run] = node_outputs(layout, "Trainer", "model_run")
    with open(os.path.join(model_run.uri, HISTORY_FILE)) as file:
        history = json.load(file)
    # The optimizer was GSAM: its rho, alpha and surrogate gap are in the history.
    assert history["method"] == "gsam" and history["config"]["alpha"] == 0.01
    [epoch] = history["epochs"]
    assert epoch["rho"] == pytest.approx(0.05) and epoch["surrogate_gap"] > 0
    assert epoch["steps"] == 100 and epoch["passes"] == 200
    # TFX's own signatures were exported: raw examples in, transformed features and logits out.
    [model] = node_outputs(layout, "Trainer", "model")
    serving = tf.saved_model.load(os.path.join(model.uri, "Format-Serving"))
    assert set(serving.signatures) == {"serving_default", "transform_features"}
    [pushed] = os.listdir(layout.serving_model_dir)
    assert pushed.isdigit()
