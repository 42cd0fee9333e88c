"""How stale is the stored direction of `perturb_every` > 1? A study along exact GSAM's path.

Trains the comparison's ResNet with exact GSAM, in memory, on the embedded Fashion-MNIST sample
with the comparison's label noise (`components.comparison.label_noise.LabelFlipper`, the same
flips as `make compare`), and at every step measures what the cheap steps of
`perturb_every=k` would have had to work with:

- `cos(u_t, u_{t-a})`: the flatness direction stored `a` steps ago against today's;
- `cos(g_t, g_{t-a})`: the clean gradients `a` steps apart (the signal of `perturb_every="auto"`);
- `recovered`: the share of exact GSAM's change to the clean gradient, `d - g`, that the
  reused direction (`formulas.reused_gsam_direction` with the `u` of `a` steps ago)
  reproduces: `1 - |d~ - d|^2 / |d - g|^2` (1: all of it; 0: no better than the clean step;
  below 0: worse);
- over windows of 50 steps, the error of what `perturb_every=k` would add up, reusing each
  stored `u` for the k - 1 steps after it, against exact GSAM's sum of `d - g`, and the
  error of leaving the cheap steps' `d - g` out altogether (`skip`), both relative to the
  exact sum's squared norm.

The path is exact GSAM's, so the numbers say how well reuse could track it, not how a run
with reuse drifts. Prints one row per epoch and writes JSON (`--output`).

Usage:

```
python -m bench.reuse_staleness                                  # make compare's settings
python -m bench.reuse_staleness --input-size 28 --alpha 0.1 --epochs 16
```
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from bench import report  # noqa: E402
from components.comparison.label_noise import LabelFlipper  # noqa: E402
from pipelines import configs  # noqa: E402
from trainer.gsam import formulas  # noqa: E402
from trainer.gsam.gradients import training_pass  # noqa: E402
from trainer.inputs.data import decode_images  # noqa: E402
from trainer.models.builtin import build_resnet, training_loss  # noqa: E402

AGES = (1, 2, 5, 10, 20)
REUSE_EVERY = (2, 5, 10, 20)
WINDOW = 50
NUM_CLASSES = 10
DEFAULT_OUTPUT = os.path.join("bench", "results", "reuse_staleness.json")


def noisy_training_data(size, noise, noise_seed):
    """The sample's train split as arrays: images at `size` x `size`, labels flipped as the
    comparison's LabelNoise flips them."""
    flip = LabelFlipper(noise, noise_seed, NUM_CLASSES, "label")
    images, labels = [], []
    path = os.path.join(configs.DATA_ROOT, "train", "data.tfrecord")
    for record in tf.data.TFRecordDataset(path):
        record, _ = flip(record.numpy()) if noise > 0 else (record.numpy(), False)
        example = tf.train.Example.FromString(record)
        images.append(example.features.feature["image"].bytes_list.value[0])
        labels.append(example.features.feature["label"].int64_list.value[0])
    pixels = decode_images(tf.constant(images), (size, size, 1))
    return pixels.numpy(), np.array(labels, np.int64)


class Study:
    """Exact GSAM steps on flat vectors, and the measures above, in one compiled step."""

    def __init__(self, model, rho, alpha):
        self.model = model
        self.rho, self.alpha = rho, alpha
        self.shapes = [v.shape for v in model.trainable_variables]
        size = sum(int(np.prod(shape)) for shape in self.shapes)
        depth = max(AGES)
        self.past_u = tf.Variable(tf.zeros((depth, size)), trainable=False)
        self.past_g = tf.Variable(tf.zeros((depth, size)), trainable=False)
        self.exact_sum = tf.Variable(tf.zeros((size,)), trainable=False)
        self.stored = {k: tf.Variable(tf.zeros((size,)), trainable=False) for k in REUSE_EVERY}
        self.sums = {
            (k, kind): tf.Variable(tf.zeros((size,)), trainable=False)
            for k in REUSE_EVERY
            for kind in ("reuse", "skip")
        }

    @tf.function
    def step(self, x, y, t):
        model = self.model
        weights = [tf.convert_to_tensor(v) for v in model.trainable_variables]
        _, grads, _, updates = training_pass(model, weights, x, y, None)
        e = formulas.perturbation(grads, weights, self.rho)
        _, perturbed, _, _ = training_pass(model, [w + d for w, d in zip(weights, e)], x, y, None)
        g = tf.concat([tf.reshape(t_, [-1]) for t_ in grads], 0)
        g_p = tf.concat([tf.reshape(t_, [-1]) for t_ in perturbed], 0)
        d = formulas.gsam_direction([g], [g_p], self.alpha)[0]
        u = formulas.flatness_direction([g], [g_p])[0]
        change = tf.reduce_sum(tf.square(d - g))
        out = {}
        depth = self.past_u.shape[0]
        for age in AGES:
            old_u = self.past_u[(t - age) % depth]
            reused = formulas.reused_gsam_direction([g], [old_u], self.alpha)[0]
            out[f"recovered_{age}"] = 1.0 - tf.reduce_sum(tf.square(reused - d)) / change
            out[f"cos_u_{age}"] = _cosine(u, old_u)
            out[f"cos_g_{age}"] = _cosine(g, self.past_g[(t - age) % depth])
        self.past_u[t % depth].assign(u)
        self.past_g[t % depth].assign(g)
        self._add_to_windows(g, d, u, t, out)
        for variable, value in updates:
            variable.assign(value)
        offsets = np.cumsum([0] + [int(np.prod(shape)) for shape in self.shapes])
        model.optimizer.apply(
            [tf.reshape(d[a:b], shape) for a, b, shape in zip(offsets, offsets[1:], self.shapes)],
            model.trainable_variables,
        )
        return out

    def _add_to_windows(self, g, d, u, t, out):
        """Sums of `d - g` over the window: exact, reused every k steps, or left out."""
        self.exact_sum.assign_add(d - g)
        for k in REUSE_EVERY:
            perturbs = tf.equal(t % k, 0)
            stored = self.stored[k]
            stored.assign(tf.where(perturbs, u, stored))
            reused = formulas.reused_gsam_direction([g], [stored], self.alpha)[0]
            self.sums[k, "reuse"].assign_add(tf.where(perturbs, d - g, reused - g))
            self.sums[k, "skip"].assign_add(tf.where(perturbs, d - g, tf.zeros_like(g)))
        closes = tf.equal((t + 1) % WINDOW, 0)
        exact = tf.reduce_sum(tf.square(self.exact_sum))
        for (k, kind), total in self.sums.items():
            out[f"window_error_{kind}_{k}"] = tf.reduce_sum(tf.square(total - self.exact_sum)) / exact
        out["window_closes"] = closes

        def reset():
            for variable in [self.exact_sum, *self.sums.values()]:
                variable.assign(tf.zeros_like(variable))

        tf.cond(closes, reset, lambda: None)


def _cosine(a, b):
    return tf.reduce_sum(a * b) / (tf.norm(a) * tf.norm(b) + 1e-12)


def epoch_summary(rows, epoch):
    """Means over one epoch's steps (the first max(AGES) steps of training left out, and the
    window errors only where a window closed)."""
    ages = [row for row in rows if row["step"] >= max(AGES)]
    closed = [row for row in rows if row["window_closes"]]
    summary = {"epoch": epoch}
    for name in rows[0]:
        if name.startswith(("recovered", "cos_")):
            summary[name] = float(np.mean([row[name] for row in ages]))
        elif name.startswith("window_error") and closed:
            summary[name] = float(np.mean([row[name] for row in closed]))
    return summary


def format_table(epochs):
    columns = [f"cos_u_{a}" for a in (1, 20)] + [f"cos_g_{a}" for a in (1, 20)]
    columns += [f"recovered_{a}" for a in (1, 20)]
    columns += [f"window_error_{kind}_{k}" for k in (5, 10) for kind in ("reuse", "skip")]
    rows = [[str(e["epoch"]), *[f"{e.get(c, float('nan')):+.3f}" for c in columns]] for e in epochs]
    return report.table(["epoch", *columns], rows)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input-size", type=int, default=14, help="images resized to N x N")
    parser.add_argument("--alpha", type=float, default=0.01)
    parser.add_argument("--rho", type=float, default=0.2)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seed", type=int, default=1, help="initialization and data order")
    parser.add_argument("--label-noise", type=float, default=0.3)
    parser.add_argument("--label-noise-seed", type=int, default=0)
    parser.add_argument("--learning-rate", type=float, default=1e-3, help="Adam's, constant")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--output", default=DEFAULT_OUTPUT)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    x, y = noisy_training_data(args.input_size, args.label_noise, args.label_noise_seed)
    keras.utils.set_random_seed(args.seed)
    model = build_resnet((args.input_size, args.input_size, 1), NUM_CLASSES)
    model.compile(optimizer=keras.optimizers.Adam(args.learning_rate), loss=training_loss())
    model.optimizer.build(model.trainable_variables)
    study = Study(model, args.rho, args.alpha)
    batches = iter(
        tf.data.Dataset.from_tensor_slices((x, y))
        .shuffle(len(x), seed=args.seed)
        .batch(args.batch_size)
        .repeat()
    )
    steps_per_epoch = int(np.ceil(len(x) / args.batch_size))
    epochs, start = [], time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        rows = []
        for i in range(steps_per_epoch):
            t = (epoch - 1) * steps_per_epoch + i
            measures = study.step(*next(batches), tf.constant(t, tf.int64))
            rows.append({"step": t, **{k: float(v) for k, v in measures.items()}})
        epochs.append(epoch_summary(rows, epoch))
        print(f"epoch {epoch}: {time.perf_counter() - start:.0f} s", flush=True)
    print(format_table(epochs))
    report.write(
        {**report.machine(), "settings": vars(args), "ages": AGES, "epochs": epochs},
        args.output,
    )


if __name__ == "__main__":
    main()
