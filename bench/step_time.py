"""Training step time and peak memory of plain Keras, SAM and GSAM.

For each model (`bench.models`) and with and without `jit_compile`, times
Keras's compiled training step (`model.train_function`, the step `fit` runs)
of these methods on one fixed batch:

- `plain`: the bare model and its optimizer;
- `sam`: `GSAM(model, rho=0.05, alpha=0)`;
- `gsam`: `GSAM(model, rho=0.05, alpha=0.01)`;
- `gsam-k2`, `gsam-k5`, `gsam-k10`, `gsam-k20`: `gsam` with `perturb_every=k`,
  the perturbed pass every k-th step (expected ratio to plain about 1 + 1/k).
  Their measurements span whole cycles of k steps (the step count per
  round is a multiple of k), so each holds the same share of perturbing
  steps. With `--jit on` on a CPU, XLA runs the perturbed pass (inside a
  conditional) about 20x slower, so those rows are not the method's cost;
  see `GSAM`'s docstring.
- `gsam-auto`: `gsam` with `perturb_every="auto"` at its default budget
  (0.1): it decides at each step, so the JSON records the share of the
  timed steps that ran the perturbed pass (`perturbed_fraction`), and its
  rounds span whole cycles of 1 / budget steps.

All configurations of a model live in one process and are timed in
interleaved rounds (the order rotates every round), so the ratios compare
steps measured under the same machine load; the reported ratio is the median
over rounds of the per-round ratio. The JSON also holds process CPU time per
step and its ratios, which other processes' load on a shared CPU barely
moves. Peak memory is measured per method in its
own subprocess: the process's peak resident set size (and, on a GPU,
TensorFlow's peak device memory) over building, compiling and a few steps.

Targets (the floor is 2.0: two forward-backward passes): GSAM/SAM <= 1.05 and
GSAM/plain <= 2.05; with the perturbed pass every 5th step, gsam-k5/plain <= 1.3; deciding by
itself, gsam-auto/plain <= 1.15.

Usage:

```
python -m bench.step_time                 # both models, jit off and on
python -m bench.step_time --models mlp --jit off --rounds 3 --no-memory
```

Prints a table and writes JSON to `--output`
(default `bench/results/step_time.json`).
"""

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from bench import models, report  # noqa: E402
from trainer.gsam import GSAM  # noqa: E402

# Methods whose steps may skip the perturbed pass, and their `perturb_every`.
PERTURB_EVERY = {"gsam-k2": 2, "gsam-k5": 5, "gsam-k10": 10, "gsam-k20": 20, "gsam-auto": "auto"}
METHODS = ("plain", "sam", "gsam", *PERTURB_EVERY)
TARGETS = {"gsam/sam": 1.05, "gsam/plain": 2.05, "gsam-k5/plain": 1.3, "gsam-auto/plain": 1.15}
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUTPUT = os.path.join("bench", "results", "step_time.json")


def compiled_model(model_name, method, jit_compile):
    """The model for `method`, compiled with SGD (momentum 0.9)."""
    model = models.build(model_name)
    if method != "plain":
        model = GSAM(
            model,
            rho=0.05,
            alpha=0.0 if method == "sam" else 0.01,
            perturb_every=PERTURB_EVERY.get(method, 1),
        )
    model.compile(
        optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        jit_compile=jit_compile,
    )
    return model


def batch(batch_size):
    """One fixed batch, `(images, labels, None)` as `train_on_batch` passes
    it to the step (so timing reuses the step traced by the warm-up)."""
    images = tf.random.stateless_normal((batch_size, *models.INPUT_SHAPE), seed=(1, 2))
    labels = tf.random.stateless_uniform(
        (batch_size,), seed=(3, 4), maxval=models.NUM_CLASSES, dtype=tf.int32
    )
    return images, labels, None


def run_steps(model, data, steps):
    """Wall-clock and process CPU seconds per step over `steps` steps."""
    start, start_cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        model.train_function([data])
    # Reading a weight waits for every update, also on an asynchronous GPU.
    model.trainable_variables[0].numpy()
    wall = (time.perf_counter() - start) / steps
    return wall, (time.process_time() - start_cpu) / steps


def warm_up(model, data):
    """Builds the model, traces (with XLA: compiles) its step and returns
    the duration of one more step."""
    model.train_on_batch(data[0], data[1])
    return run_steps(model, data, 1)[0]


def time_model(model_name, jit_modes, batch_size, steps, rounds, min_seconds):
    """Per-step (wall, CPU) seconds of each (method, jit), round by round, and the share of
    the timed steps that ran the perturbed pass.

    Each measurement runs at least `steps` steps and at least `min_seconds`,
    in whole cycles of `perturb_every` (auto: 1 / budget) steps.
    """
    data = batch(batch_size)
    configs = [(m, j) for j in jit_modes for m in METHODS]
    compiled, steps_per_round, perturbed_before = {}, {}, {}
    for config in configs:
        model = compiled[config] = compiled_model(model_name, *config)
        step_seconds = warm_up(model, data)
        least = max(steps, math.ceil(min_seconds / step_seconds))
        cycle = _cycle(model)
        steps_per_round[config] = cycle * math.ceil(least / cycle)
        perturbed_before[config] = _perturbed_steps(model)
    seconds = {config: [] for config in configs}
    for r in range(rounds):
        order = configs[r % len(configs) :] + configs[: r % len(configs)]
        for config in order:
            seconds[config].append(run_steps(compiled[config], data, steps_per_round[config]))
    perturbed_fraction = {
        config: (_perturbed_steps(compiled[config]) - perturbed_before[config])
        / (rounds * steps_per_round[config])
        for config in configs
        if config[0] in PERTURB_EVERY
    }
    return seconds, steps_per_round, perturbed_fraction


def _cycle(model):
    """Steps in one cycle of the perturbed pass: perturb_every, or 1 / budget for auto."""
    every = getattr(model, "perturb_every", 1)
    return round(1 / model.perturb_budget) if every == "auto" else every


def _perturbed_steps(model):
    return int(model.perturbed_steps.numpy()) if hasattr(model, "perturbed_steps") else 0


def peak_memory(model_name, method, jit, batch_size, steps):
    """Peak memory of one method, measured in a fresh interpreter."""
    command = [
        sys.executable, "-m", "bench.step_time", "--memory-probe",
        f"{model_name},{method},{int(jit)},{batch_size},{steps}",
    ]  # fmt: skip
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"Memory probe {command} failed:\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def memory_probe(spec):
    """Runs in the subprocess: prints this process's peak memory as JSON."""
    model_name, method, jit, batch_size, steps = spec.split(",")
    gpus = tf.config.list_physical_devices("GPU")
    data = batch(int(batch_size))
    model = compiled_model(model_name, method, bool(int(jit)))
    baseline_mb = _current_rss_mb()
    if gpus:
        tf.config.experimental.reset_memory_stats("GPU:0")
    warm_up(model, data)
    run_steps(model, data, int(steps))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {
        "peak_rss_mb": peak_mb,
        "training_rss_mb": peak_mb - baseline_mb,
        "gpu_peak_mb": None,
    }
    if gpus:
        info = tf.config.experimental.get_memory_info("GPU:0")
        result["gpu_peak_mb"] = info["peak"] / 2**20
    print(json.dumps(result))


def _current_rss_mb():
    with open("/proc/self/statm") as statm:
        resident_pages = int(statm.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def summarize(model_name, jit, seconds, steps_per_round, perturbed_fraction, memory):
    """Median step times, per-round ratios' medians, the share of perturbing steps and memory
    of one row."""
    wall = {m: [w for w, _ in seconds[m, jit]] for m in METHODS}
    cpu = {m: [c for _, c in seconds[m, jit]] for m in METHODS}
    row = {
        "model": model_name,
        "jit_compile": jit,
        "steps_per_round": {m: steps_per_round[m, jit] for m in METHODS},
        "perturbed_fraction": {m: perturbed_fraction[m, jit] for m in PERTURB_EVERY},
        "step_ms": {m: 1000 * statistics.median(wall[m]) for m in METHODS},
        "step_ms_rounds": {m: [1000 * t for t in wall[m]] for m in METHODS},
        "cpu_ms_rounds": {m: [1000 * t for t in cpu[m]] for m in METHODS},
        "ratios": {},
        "cpu_time_ratios": {},
        "memory": {m: memory.get((model_name, m, jit)) for m in METHODS},
    }
    pairs = [("gsam", "plain"), ("gsam", "sam"), ("sam", "plain")]
    pairs += [(m, base) for m in PERTURB_EVERY for base in ("plain", "gsam")]
    for numerator, denominator in pairs:
        name = f"{numerator}/{denominator}"
        for key, times in (("ratios", wall), ("cpu_time_ratios", cpu)):
            row[key][name] = statistics.median(
                a / b for a, b in zip(times[numerator], times[denominator])
            )
    row["meets_targets"] = all(row["ratios"][name] <= limit for name, limit in TARGETS.items())
    return row


def format_table(rows):
    header = (
        f"{'model':<9} {'jit':<4} {'plain ms':>9} {'sam ms':>9} "
        f"{'gsam ms':>9} {'gsam/plain':>10} {'gsam/sam':>9} "
        f"{'sam/plain':>9} {'targets':>7}  peak MB plain/sam/gsam"
    )
    lines = [header, "-" * len(header)]
    for row in rows:
        ms, ratios = row["step_ms"], row["ratios"]
        peaks = "/".join(_peak_text(row["memory"][m]) for m in ("plain", "sam", "gsam"))
        lines.append(
            f"{row['model']:<9} {'on' if row['jit_compile'] else 'off':<4} "
            f"{ms['plain']:>9.1f} {ms['sam']:>9.1f} {ms['gsam']:>9.1f} "
            f"{ratios['gsam/plain']:>10.3f} {ratios['gsam/sam']:>9.3f} "
            f"{ratios['sam/plain']:>9.3f} "
            f"{'met' if row['meets_targets'] else 'missed':>7}  {peaks}"
        )
    header = (
        f"{'model':<9} {'jit':<4} {'method':<9} {'ms':>9} {'/plain':>7} {'/gsam':>7} "
        f"{'passes':>6}  peak MB"
    )
    lines += ["", header, "-" * len(header)]
    for row in rows:
        for method in PERTURB_EVERY:
            lines.append(
                f"{row['model']:<9} {'on' if row['jit_compile'] else 'off':<4} {method:<9} "
                f"{row['step_ms'][method]:>9.1f} {row['ratios'][f'{method}/plain']:>7.3f} "
                f"{row['ratios'][f'{method}/gsam']:>7.3f} "
                f"{1 + row['perturbed_fraction'][method]:>6.3f}  "
                f"{_peak_text(row['memory'][method])}"
            )
    limits = ", ".join(f"{k} <= {v}" for k, v in TARGETS.items())
    lines.append(
        f"targets: {limits} (ratios: median over rounds; passes: forward-backward passes per "
        "timed step)"
    )
    return "\n".join(lines)


def _peak_text(memory):
    if memory is None:
        return "-"
    if memory["gpu_peak_mb"] is not None:
        return f"{memory['gpu_peak_mb']:.0f}"
    return f"{memory['peak_rss_mb']:.0f}"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--models", default=",".join(models.MODELS),
        help="comma-separated, from: " + ", ".join(models.MODELS),
    )  # fmt: skip
    parser.add_argument("--jit", choices=("both", "off", "on"), default="both")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=1, help="least timed steps per round")
    parser.add_argument(
        "--min-seconds", type=float, default=0.3,
        help="least duration of one measurement, in seconds",
    )  # fmt: skip
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument(
        "--memory-steps", type=int, default=2,
        help="steps after warm-up in each memory probe",
    )  # fmt: skip
    parser.add_argument("--no-memory", action="store_true", help="skip the memory probes")
    parser.add_argument("--output", default=DEFAULT_OUTPUT)
    parser.add_argument("--memory-probe", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    names = args.models.split(",")
    for name in names:
        if name not in models.MODELS:
            parser.error(f"unknown model {name!r}; choose from {models.MODELS}")
    for flag in ("batch_size", "steps", "rounds", "memory_steps"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be >= 1")
    if args.min_seconds < 0:
        parser.error("--min-seconds must be >= 0")
    args.models = names
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.memory_probe:
        memory_probe(args.memory_probe)
        return
    jit_modes = {"both": (False, True), "off": (False,), "on": (True,)}[args.jit]
    memory = {}
    if not args.no_memory:
        for name in args.models:
            for jit in jit_modes:
                for method in METHODS:
                    memory[name, method, jit] = peak_memory(
                        name, method, jit, args.batch_size, args.memory_steps
                    )
    rows = []
    for name in args.models:
        seconds, steps_per_round, perturbed_fraction = time_model(
            name,
            jit_modes,
            args.batch_size,
            args.steps,
            args.rounds,
            args.min_seconds,
        )
        rows.extend(
            summarize(name, jit, seconds, steps_per_round, perturbed_fraction, memory)
            for jit in jit_modes
        )
    gpus = tf.config.list_physical_devices("GPU")
    results = {
        "device": "GPU" if gpus else "CPU",
        "device_details": [tf.config.experimental.get_device_details(gpu) for gpu in gpus],
        **report.machine(),
        "settings": {
            "batch_size": args.batch_size,
            "least_steps_per_round": args.steps,
            "least_seconds_per_measurement": args.min_seconds,
            "rounds": args.rounds,
            "memory_steps": None if args.no_memory else args.memory_steps,
            "memory": "peak RSS per method in its own process"
            + (", and TensorFlow's peak GPU memory" if gpus else ""),
        },
        "targets": TARGETS,
        "rows": rows,
    }
    print(format_table(rows))
    report.write(results, args.output)


if __name__ == "__main__":
    main()
