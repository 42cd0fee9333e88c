"""Classifies serialized tf.Examples with an exported (or pushed) model.

    python -m trainer.predict --model demo-output/serving/<version> \\
        --examples data/fashion_mnist/eval/data.tfrecord --count 5

Classes are named as the model records them (`--class-names` at training; the sample's
labels.txt for the sample), or by `--labels FILE`; otherwise they are printed as numbers.

The serving signature fails on the whole batch when one example is malformed (no image
feature, bytes that are not a PNG, a feature of the wrong type). `classify` then finds which
ones by classifying each alone, and raises `MalformedExamplesError` with every index and its
reason; no probabilities are returned, and the command prints none and exits 1.
"""

import argparse
import os

import numpy as np
import tensorflow as tf

from trainer.models import export
from trainer.op_errors import without_graph_dump


class MalformedExamplesError(ValueError):
    """Examples the model cannot classify; `problems` maps their indices to the reasons."""

    def __init__(self, problems: dict[int, str]):
        self.problems = problems
        super().__init__(
            "\n".join(f"example {index}: {reason}" for index, reason in problems.items())
        )


def classify(model_dir: str, serialized_examples: list[bytes]) -> np.ndarray:
    """Class probabilities, [len(serialized_examples), num_classes], from `serving_default`.

    Raises:
        MalformedExamplesError: some examples cannot be classified; it names each by index.
    """
    serving = tf.saved_model.load(model_dir).signatures[export.SIGNATURE_NAME]
    try:
        return _probabilities(serving, serialized_examples)
    except tf.errors.InvalidArgumentError:
        problems = {}
        for index, example in enumerate(serialized_examples):
            try:
                _probabilities(serving, [example])
            except tf.errors.InvalidArgumentError as error:
                problems[index] = without_graph_dump(error.message).splitlines()[-1]
        if not problems:
            raise
        raise MalformedExamplesError(problems) from None


def _probabilities(serving, serialized_examples: list[bytes]) -> np.ndarray:
    outputs = serving(**{export.INPUT_NAME: tf.constant(serialized_examples)})
    return outputs[export.OUTPUT_KEY].numpy()


def read_examples(pattern: str, count: int) -> list[bytes]:
    files = tf.io.gfile.glob(pattern)
    if not files:
        raise FileNotFoundError(f"--examples matches no file: {pattern}")
    return [record.numpy() for record in tf.data.TFRecordDataset(files).take(count)]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="SavedModel folder")
    parser.add_argument("--examples", required=True, help="TFRecord file(s) of tf.Examples")
    parser.add_argument("--count", type=int, default=5)
    parser.add_argument(
        "--labels",
        default=None,
        help="class names, one a line (default: those recorded with the model, if any)",
    )
    parser.add_argument("--label-key", default="label")
    args = parser.parse_args(argv)
    if not tf.io.gfile.exists(os.path.join(args.model, "saved_model.pb")):
        parser.error(f"--model is not a SavedModel folder: {args.model}")
    if args.labels is None:
        names = export.read_class_names(args.model) or []
    else:
        if not os.path.exists(args.labels):
            parser.error(f"--labels: no such file: {args.labels}")
        with open(args.labels) as labels:
            names = labels.read().splitlines()
    examples = read_examples(args.examples, args.count)
    try:
        classified = classify(args.model, examples)
    except MalformedExamplesError as error:
        parser.exit(
            1,
            f"{len(error.problems)} of {len(examples)} examples cannot be classified, so none "
            f"was:\n{error}\n",
        )
    for serialized, probabilities in zip(examples, classified):
        predicted = int(np.argmax(probabilities))
        truth = tf.train.Example.FromString(serialized).features.feature[args.label_key]
        truth = truth.int64_list.value[0] if truth.int64_list.value else None
        print(
            f"predicted {_named(predicted, names)} "
            f"p={probabilities[predicted]:.3f}  label {_named(truth, names)}"
        )


def _named(label, names):
    if label is None or label >= len(names):
        return str(label)
    return f"{label} ({names[label]})"


if __name__ == "__main__":
    main()
