"""What `trainer.gsam.sharpness.measure` costs on the demo ResNet, by the number of examples.

Measures the Trainer's ResNet (28x28x1 inputs, 10 classes) with `measure`'s default settings
(rho 0.05, 5 ascent steps, at most 20 power iterations, 10 Hutchinson samples, seed 0) on the
first N images of the embedded sample's eval split, decoded as the Trainer decodes them, for
each N of `--examples`. `--model` takes a trained `.keras` file (what the Trainer keeps in its
Model artifact, `Format-Keras/model.keras`); without it a freshly initialized model is
measured, whose power iteration may stop after a different number of products.

Reported per N: wall seconds (`measure`'s own `seconds`) and the process's CPU seconds. On a
shared machine the wall time grows with the other processes' load; CPU seconds divided by
the cores is the closer estimate of an idle machine's wall time.

Usage:

```
python -m bench.sharpness_cost --examples 128 256 512
python -m bench.sharpness_cost --model demo-output/pipeline/Trainer/model/6/Format-Keras/model.keras
```

Prints a table and writes JSON to `--output` (default `bench/results/sharpness_cost.json`).
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from bench import report  # noqa: E402
from pipelines import configs  # noqa: E402
from trainer.config import TrainingConfig  # noqa: E402
from trainer.gsam import sharpness
from trainer.inputs import data  # noqa: E402
from trainer.models.builtin import build_resnet, training_loss  # noqa: E402

DEFAULT_OUTPUT = os.path.join("bench", "results", "sharpness_cost.json")
SHOWN = ("top_eigenvalue", "eigen_iterations", "trace", "trace_stderr", "surrogate_gap")


def eval_batches(count, batch_size):
    """The first `count` eval images of the sample as (images, labels) batches."""
    config = TrainingConfig(batch_size=batch_size)
    schema = data.load_schema(configs.SCHEMA_PATH)
    spec = {
        **data.parse_spec(config, schema),
        config.label_key: tf.io.FixedLenFeature([1], "int64"),
    }

    def decode(records):
        features = tf.io.parse_example(records, spec)
        labels = tf.reshape(features.pop(config.label_key), [-1])
        return data.features_to_inputs(features, config, schema), labels

    records = tf.data.TFRecordDataset(os.path.join(configs.DATA_ROOT, "eval", "data.tfrecord"))
    return sharpness.read_batches(records.take(count).batch(batch_size).map(decode), count)


def load_model(path):
    if path is None:
        keras.utils.set_random_seed(0)
        return build_resnet((28, 28, 1), 10)
    return keras.saving.load_model(path, compile=False)


def measure_row(model, count, batch_size):
    batches = eval_batches(count, batch_size)
    cpu = time.process_time()
    result = sharpness.measure(model, batches, training_loss())
    return {
        "examples": count,
        "wall_seconds": result["seconds"],
        "cpu_seconds": time.process_time() - cpu,
        **{name: result[name] for name in SHOWN},
    }


def format_table(rows):
    header = f"{'examples':>8} {'wall s':>8} {'CPU s':>8} {'top eig':>9} {'iters':>5} "
    header += f"{'trace':>16} {'gap':>9}"
    lines = [header]
    for row in rows:
        trace = f"{row['trace']:.4g} ± {row['trace_stderr']:.2g}"
        lines.append(
            f"{row['examples']:>8} {row['wall_seconds']:>8.1f} {row['cpu_seconds']:>8.1f} "
            f"{row['top_eigenvalue']:>9.4g} {row['eigen_iterations']:>5} {trace:>16} "
            f"{row['surrogate_gap']:>9.4g}"
        )
    return "\n".join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="a trained .keras file (default: fresh)")
    parser.add_argument("--examples", type=int, nargs="+", default=[128, 256, 512])
    parser.add_argument("--batch-size", type=int, default=configs.TRAINING.batch_size)
    parser.add_argument("--output", default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    if any(count < 1 for count in args.examples):
        parser.error(f"--examples must be >= 1, got {args.examples}.")
    return args


def main(argv=None):
    args = parse_args(argv)
    model = load_model(args.model)
    rows = [measure_row(model, count, args.batch_size) for count in args.examples]
    results = {
        "model": args.model or "fresh build_resnet((28, 28, 1), 10), seed 0",
        **report.machine(),
        "settings": {"batch_size": args.batch_size, "measure": "defaults"},
        "rows": rows,
    }
    print(format_table(rows))
    print(f"load average {results['load_average'][0]:.1f} on {results['cpu_count']} CPUs")
    report.write(results, args.output)


if __name__ == "__main__":
    main()
