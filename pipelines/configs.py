"""Defaults of the gsam-tfx pipeline. Runners override them from their command line."""

import os

from trainer.config import TrainingConfig

PIPELINE_NAME = "gsam-tfx"
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The embedded Fashion-MNIST sample (10k train, 2k eval), with its curated schema.
DATA_ROOT = os.path.join(REPO_ROOT, "data", "fashion_mnist")
SCHEMA_PATH = os.path.join(DATA_ROOT, "schema.pbtxt")
CLASS_NAMES_PATH = os.path.join(DATA_ROOT, "labels.txt")
OUTPUT_DIR = os.path.join(REPO_ROOT, "demo-output")

TRAINING = TrainingConfig(
    model="resnet",
    epochs=10,
    batch_size=64,
    learning_rate=0.05,
    lr_schedule="cosine",
    warmup_epochs=0.5,
    optimizer="gsam",
    rho_max=0.04,
    rho_min=0.02,
    alpha=0.01,
)

# Blessing: the candidate needs this eval accuracy, and may trail the last blessed model by
# at most MAX_ACCURACY_DROP (absolute).
ACCURACY_THRESHOLD = 0.7
MAX_ACCURACY_DROP = 0.01

# Beam runs the data components (ExampleGen, StatisticsGen, Evaluator) with the DirectRunner,
# here and in the cloud runners' containers. In one process: multi_processing starts worker
# processes for every component, which made them 2-3x slower from 10,000 to 60,000 train
# images on 2 cores (`make bench-pipeline`; README, "Performance", says when to switch).
BEAM_PIPELINE_ARGS = ("--direct_running_mode=in_memory",)
