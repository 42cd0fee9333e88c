"""--enable-cache: a rerun of unchanged inputs and config trains, evaluates and pushes nothing."""

from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2
from tfx import v1 as tfx

from pipelines import configs
from pipelines.local import run_here
from pipelines.local.layout import OutputLayout
from tests.pipeline_support import versions, write_split_sample

NODES = ("Trainer", "Evaluator", "Pusher")


def completed_executions(layout, node):
    config = tfx.orchestration.metadata.sqlite_metadata_connection_config(layout.metadata_path)
    store = metadata_store.MetadataStore(config)
    context = store.get_context_by_type_and_name("node", f"cached.{node}")
    states = [e.last_known_state for e in store.get_executions_by_context(context.id)]
    return states.count(metadata_store_pb2.Execution.COMPLETE), len(states)


def test_a_cached_rerun_executes_no_new_trainer_evaluator_or_pusher(tmp_path):
    data = write_split_sample(tmp_path / "data", train=32, eval=16)
    layout = OutputLayout(str(tmp_path / "out"))
    flags = [
        "--data-root", str(data), "--schema", configs.SCHEMA_PATH,
        "--output-dir", layout.output_dir, "--pipeline-name", "cached",
        "--epochs", "1", "--batch-size", "16", "--train-steps-per-epoch", "2",
        "--accuracy-threshold", "0", "--max-accuracy-drop", "1", "--enable-cache",
    ]  # fmt: skip
    for _ in range(2):
        assert run_here.run(tfx.orchestration.LocalDagRunner(), "test", flags) == 0

    # Each node ran once and was a cache hit the second time.
    assert {node: completed_executions(layout, node) for node in NODES} == {
        node: (1, 2) for node in NODES
    }
    assert len(versions(layout)) == 1
