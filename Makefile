# Every target runs inside the gsam-tfx environment (TFX 1.21), which scripts/in-env builds on
# first use and caches outside the checkout. See README.md.
IN_ENV := scripts/in-env
export TF_CPP_MIN_LOG_LEVEL ?= 2

# make demo DEMO_ARGS="--optimizer plain" passes flags to pipelines.local_runner.
DEMO_ARGS ?=
# make test PYTEST_ARGS="-k gsam -x" passes flags to pytest.
PYTEST_ARGS ?=
# make bench BENCH_ARGS="--models mlp" passes flags to bench.step_time.
BENCH_ARGS ?=
# make bench-pipeline BENCH_SIZES=10000 measures one train size; BENCH_PIPELINE_ARGS passes
# flags to bench.pipeline_scale (e.g. "--beam-modes in_memory --no-penguin").
BENCH_SIZES ?=
BENCH_PIPELINE_ARGS ?=
# Debian's dataset-fashion-mnist package puts the IDX files here (bench-pipeline's data).
FASHION_MNIST_IDX := /usr/share/datasets/fashion-mnist
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
# make compare COMPARE_ARGS="--seeds 5" passes flags to the comparison run (they win).
COMPARE_ARGS ?=
# The comparison's settings, chosen by measuring (README, "Does it help on my data?"): 30%
# symmetric label noise, Adam at a constant 1e-3, rho 0.2, 8 epochs, 3 seeds per method, the
# images resized to 14x14 (a quarter of the compute of 28x28, for the same gains).
COMPARE_SETTINGS := --compare --methods plain,sam,gsam --seeds 3 --label-noise 0.3 \
	--base-optimizer adam --learning-rate 0.001 --lr-schedule constant \
	--rho-max 0.2 --rho-min 0.2 --epochs 8 --input-size 14x14 \
	--output-dir compare-output --pipeline-name gsam-tfx-compare

# make image IMAGE_ARGS="--tf-package 'tensorflow[and-cuda]'" passes flags to build_image.py.
IMAGE_ARGS ?=
# make kubeflow-local KUBEFLOW_LOCAL_ARGS="--epochs 3" passes flags to pipelines.kubeflow_runner
# (they win). The default is a short smoke run, one epoch of 30 steps (about 0.2 eval accuracy),
# blessed at any accuracy: KUBEFLOW_LOCAL_ARGS="--epochs 10 --accuracy-threshold 0.7" trains for real.
KUBEFLOW_LOCAL_OUTPUT := kubeflow-local-output
KUBEFLOW_LOCAL_SETTINGS := --epochs 1 --train-steps-per-epoch 30 --accuracy-threshold 0
KUBEFLOW_LOCAL_ARGS ?=

.PHONY: demo compare test image kubeflow-local bench bench-pipeline env lock prune

# The whole pipeline on the embedded Fashion-MNIST sample, then a summary of the run.
demo:
	$(IN_ENV) python -m pipelines.local_runner $(DEMO_ARGS)

# plain / SAM / GSAM on the embedded sample, seeds and label noise; prints the table and
# writes the report (markdown, HTML, figures).
compare:
	$(IN_ENV) python -m pipelines.local_runner $(COMPARE_SETTINGS) $(COMPARE_ARGS)

# The suite runs while scripts/build_image.py holds a Docker daemon and the image (built, or
# reused when its inputs are unchanged); without Docker the image tests skip, saying why.
test:
	python3 scripts/build_image.py --allow-no-docker -- $(IN_ENV) python -m pytest $(PYTEST_ARGS)

# The Docker image, gsam-tfx:<hash of its inputs>; prints the tag and the size.
image:
	python3 scripts/build_image.py $(IMAGE_ARGS)

# The Kubeflow Pipelines YAML for the embedded sample, run here by KFP's own local runner
# (kfp.local's DockerRunner) in the image above: a line per task, then the pushed model's path
# under kubeflow-local-output/serving/. Exits 1 if a task fails.
kubeflow-local:
	python3 scripts/build_image.py $(IMAGE_ARGS) -- $(IN_ENV) sh -c 'exec python -m \
		pipelines.kubeflow_runner --run-local --image "$$GSAM_TFX_IMAGE" \
		--pipeline-root $(KUBEFLOW_LOCAL_OUTPUT) --output-file $(KUBEFLOW_LOCAL_OUTPUT)/pipeline.yaml \
		$(KUBEFLOW_LOCAL_SETTINGS) $(KUBEFLOW_LOCAL_ARGS)'

# Step time and peak memory of plain Keras, SAM and GSAM; a table, and bench/results/*.json.
bench:
	$(IN_ENV) python -m bench.step_time $(BENCH_ARGS)

# The whole pipeline at 10k, 30k and 60k train images, both Beam modes, the input pipeline's
# images/s and TFX's penguin example; a table, and bench/results/pipeline_scale.json.
bench-pipeline:
	test -d $(FASHION_MNIST_IDX) || $(SUDO) apt-get install -y dataset-fashion-mnist
	$(IN_ENV) python -m bench.pipeline_scale $(if $(BENCH_SIZES),--sizes $(BENCH_SIZES)) \
		$(BENCH_PIPELINE_ARGS)

env:
	python3 scripts/provision.py build

lock:
	python3 scripts/provision.py lock

prune:
	python3 scripts/provision.py prune
