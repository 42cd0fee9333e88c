"""The pipeline: the one DAG builder (`pipeline.py`), its stages, the runners and their flags.

Entry points: `python -m pipelines.local_runner`, `beam_runner`, `vertex_runner`,
`kubeflow_runner`. `local/` is a run on this machine (console, summary), `cloud/` compiling and
submitting for Vertex AI and Kubeflow, `flags/` the flags they share, `stages/` the parts of
the DAG.
"""
