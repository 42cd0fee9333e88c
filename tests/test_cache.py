"""--enable-cache: a rerun of unchanged inputs and config trains, evaluates and pushes nothing;
a schema edited in place is imported again (its cache is keyed by its content)."""

import shutil

from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2
from tfx import v1 as tfx
from tfx.utils import io_utils

from pipelines import configs
from pipelines.local import run_here
from pipelines.local.layout import OutputLayout
from tests.pipeline_support import node_outputs, versions, write_split_sample
from trainer.inputs import data

NODES = ("ImportSchemaGen", "Trainer", "Evaluator", "Pusher")


def completed_executions(layout, node):
    config = tfx.orchestration.metadata.sqlite_metadata_connection_config(layout.metadata_path)
    store = metadata_store.MetadataStore(config)
    context = store.get_context_by_type_and_name("node", f"cached.{node}")
    states = [e.last_known_state for e in store.get_executions_by_context(context.id)]
    return states.count(metadata_store_pb2.Execution.COMPLETE), len(states)


def validated_classes(layout) -> int:
    [schema] = node_outputs(layout, "ValidationGate", "validated_schema")
    domain = data.label_int_domain(
        data.load_schema(io_utils.get_only_uri_in_dir(schema.uri)), "label"
    )
    return domain.max + 1


def test_a_cached_rerun_executes_nothing_new_until_the_schema_changes(tmp_path):
    data_root = write_split_sample(tmp_path / "data", train=32, eval=16)
    schema = tmp_path / "schema.pbtxt"
    shutil.copy(configs.SCHEMA_PATH, schema)
    layout = OutputLayout(str(tmp_path / "out"))
    flags = [
        "--data-root", str(data_root), "--schema", str(schema),
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
    assert validated_classes(layout) == 10

    # The same path, new bytes: 12 classes. The schema is imported again, and the steps
    # after it run on it.
    schema.write_text(schema.read_text().replace("max: 9", "max: 11"))
    assert run_here.run(tfx.orchestration.LocalDagRunner(), "test", flags) == 0

    assert {node: completed_executions(layout, node) for node in NODES} == {
        node: (2, 3) for node in NODES
    }
    assert completed_executions(layout, "ImportExampleGen") == (1, 3)
    assert validated_classes(layout) == 12
    assert len(versions(layout)) == 2
