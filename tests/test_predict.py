"""trainer.predict: classifying serialized tf.Examples with an exported model, from the CLI."""

import re

import numpy as np
import pytest
import tensorflow as tf

from tests import trainer_examples
from tests.trainer_examples import bytes_feature, with_image
from trainer import predict
from trainer.config import TrainingConfig
from trainer.inputs import data
from trainer.models import export
from trainer.models.builtin import build_model

LABELS = [f"class-{index}" for index in range(10)]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """An (untrained) image model's SavedModel, 3 examples labelled 3, 7, 0, and a labels
    file."""
    root = tmp_path_factory.mktemp("predict")
    config = TrainingConfig()
    model = build_model(config, 10, config.image_shape)
    trainer_examples.export_model(
        model, config, data.load_schema(trainer_examples.SAMPLE_SCHEMA), str(root / "model")
    )
    images = trainer_examples.random_images(np.random.default_rng(0), 3)
    examples = [
        trainer_examples.image_example(image, label) for image, label in zip(images, (3, 7, 0))
    ]
    with tf.io.TFRecordWriter(str(root / "examples.tfrecord")) as writer:
        for example in examples:
            writer.write(example)
    (root / "labels.txt").write_text("\n".join(LABELS) + "\n")
    return root, model, images


def test_classify_returns_the_signatures_probabilities(exported):
    root, model, images = exported
    examples = predict.read_examples(str(root / "examples.tfrecord"), count=3)
    probabilities = predict.classify(str(root / "model"), examples)
    expected = model(images.astype("float32") / 255.0, training=False)
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)


def test_each_line_names_the_predicted_and_the_true_class(exported, capsys):
    root, _, _ = exported
    predict.main(
        [
            "--model",
            str(root / "model"),
            "--examples",
            str(root / "examples.tfrecord"),
            "--count",
            "2",
            "--labels",
            str(root / "labels.txt"),
        ]
    )
    probabilities = predict.classify(
        str(root / "model"), predict.read_examples(str(root / "examples.tfrecord"), count=2)
    )
    expected = [
        f"predicted {np.argmax(p)} ({LABELS[np.argmax(p)]}) p={p.max():.3f}  "
        f"label {label} ({LABELS[label]})"
        for p, label in zip(probabilities, (3, 7))
    ]
    assert capsys.readouterr().out.splitlines() == expected


def test_without_names_or_a_label_the_numbers_are_printed(exported, tmp_path, capsys):
    """A 10-class model that records no class names prints numbers, not Fashion-MNIST's
    names (a digits model once printed `predicted 2 (Pullover)`)."""
    root, _, images = exported
    unlabelled = tf.train.Example(
        features=tf.train.Features(
            feature={
                "image": tf.train.Feature(
                    bytes_list=tf.train.BytesList(value=[tf.io.encode_png(images[0]).numpy()])
                )
            }
        )
    ).SerializeToString()
    with tf.io.TFRecordWriter(str(tmp_path / "unlabelled.tfrecord")) as writer:
        writer.write(unlabelled)
    predict.main(
        [
            "--model",
            str(root / "model"),
            "--examples",
            str(tmp_path / "unlabelled.tfrecord"),
        ]
    )
    [line] = capsys.readouterr().out.splitlines()
    [probabilities] = predict.classify(str(root / "model"), [unlabelled])
    assert line == f"predicted {np.argmax(probabilities)} p={probabilities.max():.3f}  label None"


def test_the_class_names_recorded_with_the_model_are_printed(exported, tmp_path, capsys):
    root, model, _ = exported
    names = [f"digit {index}" for index in range(10)]
    config = TrainingConfig(class_names=names)
    schema = data.load_schema(trainer_examples.SAMPLE_SCHEMA)
    trainer_examples.export_model(model, config, schema, str(tmp_path / "named"), names)
    assert export.read_class_names(str(tmp_path / "named")) == names
    predict.main(
        ["--model", str(tmp_path / "named"), "--examples", str(root / "examples.tfrecord")]
    )
    [probabilities] = predict.classify(
        str(tmp_path / "named"), predict.read_examples(str(root / "examples.tfrecord"), 1)
    )
    predicted = int(np.argmax(probabilities))
    assert capsys.readouterr().out.splitlines()[0] == (
        f"predicted {predicted} ({names[predicted]}) p={probabilities.max():.3f}  label 3 (digit 3)"
    )


def test_a_labels_file_that_does_not_exist_is_a_usage_error(exported, tmp_path, capsys):
    root, _, _ = exported
    missing = tmp_path / "no-such-labels.txt"
    with pytest.raises(SystemExit) as exit_info:
        predict.main(
            [
                "--model",
                str(root / "model"),
                "--examples",
                str(root / "examples.tfrecord"),
                "--labels",
                str(missing),
            ]
        )
    assert exit_info.value.code == 2
    assert f"--labels: no such file: {missing}" in capsys.readouterr().err


def test_a_folder_that_is_not_a_saved_model_is_a_usage_error(exported, tmp_path, capsys):
    root, _, _ = exported
    with pytest.raises(SystemExit) as exit_info:
        predict.main(["--model", str(tmp_path), "--examples", str(root / "examples.tfrecord")])
    assert exit_info.value.code == 2
    assert f"--model is not a SavedModel folder: {tmp_path}" in capsys.readouterr().err


def test_examples_that_match_no_file_are_named(exported, tmp_path):
    root, _, _ = exported
    pattern = str(tmp_path / "missing-*.tfrecord")
    message = re.escape(f"--examples matches no file: {pattern}")
    with pytest.raises(FileNotFoundError, match=message):
        predict.main(["--model", str(root / "model"), "--examples", pattern])


def test_malformed_examples_are_reported_by_index_and_none_is_classified(
    exported, tmp_path, capsys
):
    root, _, _ = exported
    examples = predict.read_examples(str(root / "examples.tfrecord"), count=3)
    examples[0] = with_image(examples[0], None)
    examples[2] = with_image(examples[2], bytes_feature(b"these bytes are no PNG"))
    with pytest.raises(predict.MalformedExamplesError) as error:
        predict.classify(str(root / "model"), examples)
    problems = error.value.problems
    assert sorted(problems) == [0, 2]
    assert "Feature: image (data type: string) is required" in problems[0]
    assert "Unknown image file format" in problems[2]
    assert all("\n" not in reason and "{{node" not in reason for reason in problems.values())
    assert str(error.value) == f"example 0: {problems[0]}\nexample 2: {problems[2]}"

    path = tmp_path / "malformed.tfrecord"
    with tf.io.TFRecordWriter(str(path)) as writer:
        for example in examples:
            writer.write(example)
    with pytest.raises(SystemExit) as exit_info:
        predict.main(["--model", str(root / "model"), "--examples", str(path)])
    assert exit_info.value.code == 1
    printed = capsys.readouterr()
    assert printed.out == ""
    assert printed.err == (f"2 of 3 examples cannot be classified, so none was:\n{error.value}\n")
