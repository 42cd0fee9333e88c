# The gsam-tfx pipeline image: the default image of KubeflowV2DagRunner (Vertex AI Pipelines,
# Kubeflow Pipelines v2) and the Vertex AI Training image of the Trainer.
#
#   docker build -t gsam-tfx .                                           # CPU
#   docker build --build-arg TF_PACKAGE='tensorflow[and-cuda]' -t gsam-tfx-gpu .
#
# It installs with the same scripts as the Debian 13 environment that `make test` builds on
# hosts older than glibc 2.39, and tests/test_image_recipe.py runs its Python step on every
# `make test`.
FROM debian:trixie-slim

ARG TF_PACKAGE=""
ENV PATH=/opt/gsam-tfx-venv/bin:$PATH \
    VIRTUAL_ENV=/opt/gsam-tfx-venv \
    PYTHONUNBUFFERED=1

COPY scripts/install-system.sh /tmp/install/scripts/
RUN bash /tmp/install/scripts/install-system.sh

WORKDIR /pipeline
COPY . /pipeline
RUN GSAM_TF_PACKAGE="$TF_PACKAGE" bash scripts/install-python.sh /opt/gsam-tfx-venv /pipeline project \
    && rm -rf /tmp/install

# No ENTRYPOINT: Vertex and Kubeflow pass the full command (python -m tfx...kubeflow_v2_run_executor ...).
CMD ["python", "-c", "import tfx, trainer.task; print('gsam-tfx image: TFX', tfx.__version__)"]
