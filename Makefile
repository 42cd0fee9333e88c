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
# make image IMAGE_ARGS="--tf-package 'tensorflow[and-cuda]'" passes flags to build_image.py.
IMAGE_ARGS ?=

.PHONY: demo test image bench env lock prune

# The whole pipeline on the embedded Fashion-MNIST sample, then a summary of the run.
demo:
	$(IN_ENV) python -m pipelines.local_runner $(DEMO_ARGS)

# The suite runs while scripts/build_image.py holds a Docker daemon and the image (built, or
# reused when its inputs are unchanged); without Docker the image tests skip, saying why.
test:
	python3 scripts/build_image.py --allow-no-docker -- $(IN_ENV) python -m pytest $(PYTEST_ARGS)

# The Docker image, gsam-tfx:<hash of its inputs>; prints the tag and the size.
image:
	python3 scripts/build_image.py $(IMAGE_ARGS)

# Step time and peak memory of plain Keras, SAM and GSAM; a table, and bench/results/*.json.
bench:
	$(IN_ENV) python -m bench.step_time $(BENCH_ARGS)

env:
	python3 scripts/provision.py build

lock:
	python3 scripts/provision.py lock

prune:
	python3 scripts/provision.py prune
