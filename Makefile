# Every target runs inside the gsam-tfx environment (TFX 1.21), which scripts/in-env builds
# on first use and caches outside the checkout. See README.md.
IN_ENV := scripts/in-env
PYTEST_ARGS ?=

.PHONY: test env lock prune
test:
	$(IN_ENV) python -m pytest $(PYTEST_ARGS)

env:
	python3 scripts/provision.py build

lock:
	python3 scripts/provision.py lock

prune:
	python3 scripts/provision.py prune

# The whole pipeline on the embedded Fashion-MNIST sample; DEMO_ARGS adds runner flags,
# e.g. make demo DEMO_ARGS="--optimizer plain".
DEMO_ARGS ?=
.PHONY: demo
demo:
	$(IN_ENV) python -m pipelines.local_runner $(DEMO_ARGS)
