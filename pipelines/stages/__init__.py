"""The stages the one DAG builder (pipelines/pipeline.py) composes: data, training,
comparison and release."""
