"""Vertex AI and Kubeflow Pipelines: compiling for the image, and submitting."""
