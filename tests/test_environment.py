"""The environment that `make test` builds holds the whole TFX 1.21 stack, and it works."""

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_the_stack_imports_at_the_pinned_versions():
    import apache_beam
    import keras
    import kfp
    import ml_metadata
    import tensorflow as tf
    import tensorflow_data_validation as tfdv
    import tensorflow_model_analysis as tfma
    import tfx

    assert tf.__version__.startswith("2.21.")
    assert keras.__version__.startswith("3.")
    assert tfx.__version__ == "1.21.0"
    assert tfma.__version__.startswith("0.52.")
    assert tfdv.__version__.startswith("1.21.")
    assert apache_beam.__version__.startswith("2.")
    assert kfp.__version__.startswith("2.")
    assert ml_metadata.__version__.startswith("1.21.")
    # Product code uses Keras 3: tf.keras must resolve to it, not to the tf-keras that TFMA brings.
    assert tf.keras.Model is keras.Model


def test_sqlite_ml_metadata_round_trips_an_artifact(tmp_path):
    from ml_metadata import metadata_store
    from ml_metadata.proto import metadata_store_pb2

    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = str(tmp_path / "metadata.sqlite")
    config.sqlite.connection_mode = (
        metadata_store_pb2.SqliteMetadataSourceConfig.READWRITE_OPENCREATE
    )
    store = metadata_store.MetadataStore(config)
    artifact_type = metadata_store_pb2.ArtifactType(name="Model")
    artifact_type.properties["accuracy"] = metadata_store_pb2.DOUBLE
    type_id = store.put_artifact_type(artifact_type)
    artifact = metadata_store_pb2.Artifact(type_id=type_id, uri="/models/1")
    artifact.properties["accuracy"].double_value = 0.875
    [artifact_id] = store.put_artifacts([artifact])

    reopened = metadata_store.MetadataStore(config)
    [loaded] = reopened.get_artifacts_by_id([artifact_id])
    assert loaded.uri == "/models/1"
    assert loaded.properties["accuracy"].double_value == 0.875


def test_a_beam_pipeline_runs_on_the_direct_runner_in_memory():
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.testing.util import assert_that, equal_to

    options = PipelineOptions(["--runner=DirectRunner", "--direct_running_mode=in_memory"])
    with beam.Pipeline(options=options) as pipeline:
        counts = (
            pipeline
            | beam.Create(["gsam", "sam", "gsam", "plain", "gsam"])
            | beam.combiners.Count.PerElement()
        )
        assert_that(counts, equal_to([("gsam", 3), ("sam", 1), ("plain", 1)]))


def test_in_env_runs_in_the_callers_folder_outside_the_checkout(tmp_path):
    """From a folder outside the checkout, a command reads a file there through a relative and
    an absolute path, sees the caller's $HOME, and still imports the project."""
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "labels.txt").write_text("cat\ndog\n")
    script = (
        "import os, pipelines.configs\n"
        "print(os.getcwd())\n"
        "print(open('mine/labels.txt').read().split())\n"
        f"print(open({str(tmp_path / 'mine' / 'labels.txt')!r}).read().split())\n"
        "print(os.environ['HOME'], os.path.isdir(os.environ['HOME']))\n"
    )
    result = subprocess.run(
        [str(REPO / "scripts" / "in-env"), "python", "-c", script],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert not tmp_path.is_relative_to(REPO)
    assert result.stdout.splitlines() == [
        str(tmp_path),
        "['cat', 'dog']",
        "['cat', 'dog']",
        f"{os.environ['HOME']} True",
    ]
