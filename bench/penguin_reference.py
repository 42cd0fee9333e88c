"""TFX's own penguin example, end to end on this machine: the reference for a run's fixed cost.

Runs `tfx.examples.penguin.penguin_pipeline_local.create_pipeline` as TFX's end-to-end test
does (Keras module file from the wheel; no tuner, bulk inferrer, example diff or transform
cache) with LocalDagRunner: CsvExampleGen, StatisticsGen, SchemaGen, Transform, Trainer
(100 steps), the latest-blessed-model resolver, Evaluator and Pusher. The wheel ships no
penguin data, so `write_penguin_csv` draws a synthetic `penguins_processed.csv` of the same
columns and size (334 rows; the species 0..2, four measurements scaled to [0, 1]).

    python -m bench.penguin_reference --work-dir /tmp/penguin \
        --beam-arg=--direct_running_mode=in_memory

The component times are in the run's metadata store, `WORK_DIR/metadata.sqlite`, pipeline
`PIPELINE_NAME`.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys

import numpy as np

PIPELINE_NAME = "penguin-reference"
FEATURES = ("culmen_length_mm", "culmen_depth_mm", "flipper_length_mm", "body_mass_g")
ROWS = 334
SEED = 20201111


def write_penguin_csv(path: str, rows: int = ROWS, seed: int = SEED) -> None:
    """A synthetic `penguins_processed.csv`: `species` (0..2, in turn) and the four
    measurements, each its species' mean in [0.2, 0.8] plus noise, clipped to [0, 1]."""
    rng = np.random.default_rng(seed)
    means = rng.uniform(0.2, 0.8, size=(3, len(FEATURES)))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(("species", *FEATURES))
        for row in range(rows):
            species = row % 3
            values = np.clip(means[species] + rng.normal(0, 0.05, len(FEATURES)), 0, 1)
            writer.writerow((species, *(f"{value:.6f}" for value in values)))


def run(work_dir: str, beam_args: list[str]) -> None:
    """Writes the data under `work_dir` and runs the penguin pipeline there."""
    from tfx import v1 as tfx
    from tfx.examples.penguin import penguin_pipeline_local

    data_root = os.path.join(work_dir, "data")
    write_penguin_csv(os.path.join(data_root, "labelled", "penguins_processed.csv"))
    examples_dir = os.path.dirname(penguin_pipeline_local.__file__)
    dag = penguin_pipeline_local.create_pipeline(
        pipeline_name=PIPELINE_NAME,
        pipeline_root=os.path.join(work_dir, "pipeline"),
        data_root=data_root,
        module_file=os.path.join(examples_dir, "penguin_utils_keras.py"),
        accuracy_threshold=0.0,
        serving_model_dir=os.path.join(work_dir, "serving"),
        metadata_path=os.path.join(work_dir, "metadata.sqlite"),
        user_provided_schema_path=None,
        enable_tuning=False,
        enable_bulk_inferrer=False,
        examplegen_input_config=None,
        examplegen_range_config_date=None,
        resolver_range_config=None,
        beam_pipeline_args=beam_args,
        enable_transform_input_cache=False,
        enable_example_diff=False,
    )
    tfx.orchestration.LocalDagRunner().run(dag)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work-dir", required=True, help="an empty or new folder")
    parser.add_argument(
        "--beam-arg", action="append", default=[], dest="beam_args",
        help="a Beam pipeline argument, repeatable",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if os.path.isdir(args.work_dir) and os.listdir(args.work_dir):
        parser.error(f"--work-dir {args.work_dir} is not empty: a reference run starts afresh.")
    # TFX's Beam executors parse sys.argv as absl flags, where ours are unknown.
    sys.argv = sys.argv[:1]
    run(args.work_dir, args.beam_args)


if __name__ == "__main__":
    main()
