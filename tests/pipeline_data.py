"""Small slices of the embedded Fashion-MNIST sample, for pipeline tests."""

from pathlib import Path

import tensorflow as tf

from pipelines import configs


def write_split_sample(root: Path, train: int, eval: int, bad_eval_label: int | None = None) -> Path:
    """Writes `train/` and `eval/` TFRecords with the first examples of each split.

    With `bad_eval_label`, the first eval example gets that label (an anomaly for the schema).
    """
    for split, count in (("train", train), ("eval", eval)):
        source = Path(configs.DATA_ROOT) / split / "data.tfrecord"
        (root / split).mkdir(parents=True, exist_ok=True)
        with tf.io.TFRecordWriter(str(root / split / "data.tfrecord")) as writer:
            for index, record in enumerate(tf.data.TFRecordDataset(str(source)).take(count)):
                example = tf.train.Example.FromString(record.numpy())
                if split == "eval" and index == 0 and bad_eval_label is not None:
                    example.features.feature["label"].int64_list.value[:] = [bad_eval_label]
                writer.write(example.SerializeToString())
    return root
