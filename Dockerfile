# The gsam-tfx pipeline image: the default image of KubeflowV2DagRunner (Vertex AI Pipelines,
# Kubeflow Pipelines v2) and the Vertex AI Training image of the Trainer.
#
#   make image                                   # the keyed build below, and a local base if
#                                                # debian:trixie-slim cannot be pulled
#   docker build -t gsam-tfx .                                           # CPU
#   docker build --build-arg TF_PACKAGE='tensorflow[and-cuda]' -t gsam-tfx-gpu .
#   docker build --secret id=ca_bundle,src=corporate-ca.pem -t gsam-tfx .
#
# It needs BuildKit: the default since Docker 23, DOCKER_BUILDKIT=1 on Docker 20.10.
# The ca_bundle secret, for networks that intercept TLS, adds certificates that pip trusts
# during the build only; no layer keeps it.
#
# It installs with the same scripts as the Debian 13 environment that `make test` builds on
# hosts older than glibc 2.39, and tests/test_image_build.py builds it and runs the compiled
# Vertex Trainer task in it.
ARG BASE_IMAGE=debian:trixie-slim

# Compilers and headers live here only: some dependencies build from source on Python 3.13.
FROM ${BASE_IMAGE} AS build
COPY scripts/install-system.sh /tmp/install/scripts/
RUN bash /tmp/install/scripts/install-system.sh build
# The dependencies first, from pyproject.toml and the lock alone: editing the sources reuses
# this layer, the bulk of the image.
COPY pyproject.toml constraints.txt /pipeline/
COPY scripts/install-python.sh /tmp/install/scripts/
# Declared here, not above: a GPU build shares the steps above with the CPU build.
ARG TF_PACKAGE=""
RUN --mount=type=secret,id=ca_bundle \
    if [ -s /run/secrets/ca_bundle ]; then \
      cat /etc/ssl/certs/ca-certificates.crt /run/secrets/ca_bundle >/tmp/install/ca.pem; \
      export PIP_CERT=/tmp/install/ca.pem; \
    fi \
    && GSAM_TF_PACKAGE="$TF_PACKAGE" bash /tmp/install/scripts/install-python.sh /opt/gsam-tfx-venv /pipeline project
# TensorFlow's C++ headers (430 MB) only serve to compile custom ops: they stay here too.
RUN rm -rf /opt/gsam-tfx-venv/lib/python3.*/site-packages/tensorflow/include

FROM ${BASE_IMAGE}
COPY scripts/install-system.sh /tmp/install/scripts/
RUN bash /tmp/install/scripts/install-system.sh runtime && rm -rf /tmp/install
# A non-root user (uid 1000, group 0 so that OpenShift's arbitrary uids share its rights).
# Vertex AI runs the image's user; the TFX executors write to the pipeline root (gs://) and
# /tmp. The Kubeflow v2 launcher stages artifacts under /gcs, /minio and /s3, which it cannot
# create as non-root (kubeflow/pipelines#5673), so they exist here, writable.
RUN useradd --uid 1000 --gid 0 --create-home --home-dir /home/gsam gsam \
    && mkdir -p /gcs /minio /s3 /pipeline/demo-output \
    && chown 1000:0 /home/gsam /gcs /minio /s3 /pipeline/demo-output \
    && chmod 0775 /home/gsam /gcs /minio /s3 /pipeline/demo-output
ENV PATH=/opt/gsam-tfx-venv/bin:$PATH \
    VIRTUAL_ENV=/opt/gsam-tfx-venv \
    HOME=/home/gsam \
    PYTHONUNBUFFERED=1
COPY --from=build /opt/gsam-tfx-venv /opt/gsam-tfx-venv
WORKDIR /pipeline
COPY . /pipeline
USER 1000

# No ENTRYPOINT: Vertex and Kubeflow pass the full command (python -m tfx...kubeflow_v2_run_executor
# on Vertex, python -m pipelines.cloud.kfp_entrypoint on Kubeflow).
CMD ["python", "-c", "import tfx, trainer.task; print('gsam-tfx image: TFX', tfx.__version__)"]
