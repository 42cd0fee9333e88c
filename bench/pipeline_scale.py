"""How the whole pipeline's cost grows with the data, beside TFX's penguin example.

For each train size (default 10,000, 30,000 and 60,000 Fashion-MNIST images, each root
with the 10,000 test images as its eval split; 600,000 repeats the 60,000 ten times, shifted;
bench/fashion_mnist_roots.py), and for each Beam mode of the data components:

- `in_memory`: `--direct_running_mode=in_memory` (the runners' default);
- `multi_processing`: `--direct_running_mode=multi_processing --direct_num_workers=2`;

runs the local pipeline (`python -m pipelines.local_runner`, the demo's model and
settings, the curated schema) in a fresh output folder with the same training budget:
one epoch of `--steps` steps, accuracy threshold 0 so the Pusher pushes. Each component's
wall time comes from ML Metadata's execution records (`pipelines.local.summary`), the run's wall
time and peak memory from its process. Then, on that run's ExampleGen output, the record check
alone in each Beam mode (and, with `--record-check-before`, an earlier commit's one-process
check), each in its own process, one after the other (bench/record_check_cost.py), and the
Trainer's input pipeline against in-memory tensors (bench/input_throughput.py). With
`--checkout`, the pipeline runs are another checkout's code. Once per benchmark, TFX's penguin
example runs end to end with the default Beam mode (bench/penguin_reference.py): the
reference for a run's fixed cost. Everything runs one at a time, in one benchmark run, so
the ratios compare measurements under the same machine load; the load averages are in the
JSON.

Usage:

```
python -m bench.pipeline_scale                   # 10k, 30k, 60k; both Beam modes; penguin
python -m bench.pipeline_scale --sizes 10000 --beam-modes in_memory --no-penguin
python -m bench.pipeline_scale --sizes 60000,600000 --beam-modes in_memory --no-penguin \
    --no-throughput --record-check-before ../before   # a clone at commit dce152e
```

Prints the tables (bench/scale_table.py) and writes JSON to `--output`
(default `bench/results/pipeline_scale.json`).
"""

import argparse
import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tfx.types import artifact_utils  # noqa: E402

from bench import (  # noqa: E402
    fashion_mnist_roots,
    input_throughput,
    penguin_reference,
    record_check_cost,
    report,
    scale_table,
)
from pipelines import configs  # noqa: E402
from pipelines.local import summary  # noqa: E402
from pipelines.local.layout import output_layout  # noqa: E402

BEAM_MODES = record_check_cost.BEAM_MODES
DEFAULT_SIZES = (10000, 30000, 60000)
DEFAULT_OUTPUT = os.path.join("bench", "results", "pipeline_scale.json")
LOG_TAIL_CHARS = 4000


def default_beam_mode() -> str:
    """The mode whose Beam arguments the runners use by default (`configs.BEAM_PIPELINE_ARGS`)."""
    for mode, beam_args in BEAM_MODES.items():
        if tuple(beam_args) == tuple(configs.BEAM_PIPELINE_ARGS):
            return mode
    raise ValueError(
        f"configs.BEAM_PIPELINE_ARGS {configs.BEAM_PIPELINE_ARGS} is none of the benchmark's "
        f"Beam modes {BEAM_MODES}."
    )


def timed_run(command: list[str], log_path: str, cwd: str | None = None) -> tuple[float, float]:
    """Runs `command` in `cwd`, its output to `log_path`; returns its wall seconds and the
    peak resident memory (MiB) of its largest process, its finished subprocesses (Beam
    workers) included. A failure raises with the end of the log."""
    start = time.perf_counter()
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=cwd)
        _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        with open(log_path) as log:
            tail = log.read()[-LOG_TAIL_CHARS:]
        raise RuntimeError(f"{' '.join(command)} failed ({log_path}):\n{tail}")
    return seconds, usage.ru_maxrss / 1024  # Linux: KiB


def component_seconds(metadata_path: str, pipeline_name: str) -> dict[str, float]:
    """Seconds per component type of the newest run of `pipeline_name`, from ML Metadata."""
    store = summary.read_only_store(metadata_path)
    return summary.seconds_per_component(store, summary.newest_run(store, pipeline_name))


def measured_run(
    command: list[str],
    log_path: str,
    metadata_path: str,
    pipeline_name: str,
    beam_mode: str,
    cwd: str | None = None,
) -> dict:
    """Runs a pipeline's `command` and returns its record for bench/scale_table.py: its wall
    time and peak memory, its components' times from ML Metadata, the load averages when it
    started and ended."""
    load = os.getloadavg()
    wall, peak_mib = timed_run(command, log_path, cwd)
    return {
        "beam_mode": beam_mode,
        "wall_seconds": wall,
        "peak_rss_mib": peak_mib,
        "seconds_per_component": component_seconds(metadata_path, pipeline_name),
        "load_average_at_start": load,
        "load_average_at_end": os.getloadavg(),
    }


def run_pipeline(
    data_root: str, output_dir: str, beam_mode: str, steps: int, checkout: str | None = None
) -> dict:
    """One local run of the pipeline on `data_root`, in its own process (the code of
    `checkout`, default this one); its record."""
    command = [
        sys.executable, "-m", "pipelines.local_runner",
        "--data-root", data_root,
        "--schema", configs.SCHEMA_PATH,
        "--output-dir", output_dir,
        "--epochs", "1",
        "--train-steps-per-epoch", str(steps),
        "--accuracy-threshold", "0",
        *(f"--beam-arg={beam_arg}" for beam_arg in BEAM_MODES[beam_mode]),
    ]  # fmt: skip
    metadata_path = output_layout(output_dir).metadata_path
    return measured_run(
        command, f"{output_dir}.log", metadata_path, configs.PIPELINE_NAME, beam_mode, checkout
    )


def run_penguin(work_dir: str, beam_mode: str) -> dict:
    """TFX's penguin example, end to end in its own process; its record."""
    command = [
        sys.executable, "-m", "bench.penguin_reference", "--work-dir", work_dir,
        *(f"--beam-arg={beam_arg}" for beam_arg in BEAM_MODES[beam_mode]),
    ]  # fmt: skip
    metadata_path = os.path.join(work_dir, "metadata.sqlite")
    return measured_run(
        command, f"{work_dir}.log", metadata_path, penguin_reference.PIPELINE_NAME, beam_mode
    )


def warm_imports() -> None:
    """Imports TFX once untimed, so the first timed run does not pay for a cold file cache."""
    subprocess.run([sys.executable, "-c", "from tfx import v1"], check=True)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes", default=",".join(map(str, DEFAULT_SIZES)),
        help="comma-separated train sizes, each 10..60000 or a multiple of 60000 up to "
        f"{fashion_mnist_roots.MAX_REPEATS * fashion_mnist_roots.TRAIN_IMAGES} "
        "(default: %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--beam-modes", default=",".join(BEAM_MODES),
        help="comma-separated, from: " + ", ".join(BEAM_MODES) + " (default: %(default)s)",
    )  # fmt: skip
    parser.add_argument("--steps", type=int, default=50, help="training steps per run")
    parser.add_argument("--no-penguin", action="store_true", help="skip the penguin reference")
    parser.add_argument(
        "--no-throughput", action="store_true", help="skip the input pipeline's images/s"
    )
    parser.add_argument(
        "--no-record-check", action="store_true", help="skip timing the record check alone"
    )
    parser.add_argument(
        "--record-check-before", default=None, metavar="CHECKOUT",
        help="also time the record check of this checkout (a clone at commit dce152e: the "
        "one-process check before the Beam job)",
    )  # fmt: skip
    parser.add_argument("--throughput-steps", type=int, default=20, help="timed steps a round")
    parser.add_argument("--throughput-rounds", type=int, default=3)
    parser.add_argument(
        "--cache-dir", default=fashion_mnist_roots.DEFAULT_CACHE_DIR,
        help="where the data roots are kept between runs (default: %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--work-dir", default=None,
        help="where the runs write (default: a new temporary folder, removed at the end)",
    )  # fmt: skip
    parser.add_argument(
        "--checkout", default=None,
        help="run the pipeline from this checkout, e.g. a clone of an earlier commit, to "
        "measure before and after a change (default: this one)",
    )  # fmt: skip
    parser.add_argument("--output", default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    for flag in ("checkout", "record_check_before"):
        checkout = getattr(args, flag)
        if checkout is not None:
            setattr(args, flag, os.path.abspath(checkout))
            if not os.path.isfile(os.path.join(checkout, "pipelines", "local_runner.py")):
                parser.error(
                    f"--{flag.replace('_', '-')} {checkout} is no checkout of this repository"
                )
    try:
        args.sizes = sorted({int(size) for size in args.sizes.split(",")})
    except ValueError:
        parser.error(f"--sizes must be comma-separated integers, got {args.sizes!r}")
    for size in args.sizes:
        try:
            fashion_mnist_roots.check_train_size(size)
        except ValueError as error:
            parser.error(f"--sizes: {error}")
    args.beam_modes = args.beam_modes.split(",")
    for mode in args.beam_modes:
        if mode not in BEAM_MODES:
            parser.error(f"unknown Beam mode {mode!r}; choose from {', '.join(BEAM_MODES)}")
    for flag in ("steps", "throughput_steps", "throughput_rounds"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be >= 1")
    if args.work_dir is not None and os.path.exists(args.work_dir):
        parser.error(f"--work-dir {args.work_dir} exists: the runs start in a new folder")
    return args


def main(argv=None):
    args = parse_args(argv)
    started = time.perf_counter()
    default_mode = default_beam_mode()
    machine_at_start = report.machine()
    roots = {size: fashion_mnist_roots.data_root(size, args.cache_dir) for size in args.sizes}
    work_dir = args.work_dir or tempfile.mkdtemp(prefix="gsam-tfx-bench-pipeline-")
    os.makedirs(work_dir, exist_ok=True)
    warm_imports()
    penguin = None
    if not args.no_penguin:
        print(f"penguin reference ({default_mode})", flush=True)
        penguin = run_penguin(os.path.join(work_dir, "penguin"), default_mode)
    runs, throughput, record_checks = [], {}, {}
    for size in args.sizes:
        for mode in args.beam_modes:
            print(f"{size:,} images, Beam {mode}", flush=True)
            output_dir = os.path.join(work_dir, f"{size}-{mode}")
            record = run_pipeline(roots[size], output_dir, mode, args.steps, args.checkout)
            runs.append({"train_images": size, **record})
            examples = input_throughput.examples_of_run(output_layout(output_dir).metadata_path)
            if mode == args.beam_modes[0] and not args.no_record_check:
                print(f"{size:,} images, the record check alone", flush=True)
                record_checks[size] = record_check_cost.measure(
                    examples.uri,
                    artifact_utils.decode_split_names(examples.split_names),
                    {mode: list(beam_args) for mode, beam_args in BEAM_MODES.items()},
                    args.record_check_before,
                )
            if mode == args.beam_modes[0] and not args.no_throughput:
                print(f"{size:,} images, input throughput", flush=True)
                throughput[size] = input_throughput.measure(
                    examples, steps=args.throughput_steps, rounds=args.throughput_rounds
                )
            if args.work_dir is None:
                shutil.rmtree(output_dir)
    if args.work_dir is None:
        shutil.rmtree(work_dir)
    goals = scale_table.targets(runs, penguin, throughput, default_mode)
    results = {
        **machine_at_start,
        "load_average_at_end": os.getloadavg(),
        "bench_seconds": time.perf_counter() - started,
        "settings": {
            "sizes": args.sizes,
            "eval_images": fashion_mnist_roots.EVAL_SIZE,
            "training": dataclasses.replace(
                configs.TRAINING, epochs=1, train_steps_per_epoch=args.steps
            ).to_dict(),
            "beam_modes": {mode: list(BEAM_MODES[mode]) for mode in args.beam_modes},
            "default_beam_mode": default_mode,
            "data_roots": roots,
            "checkout": args.checkout or os.getcwd(),
        },
        "runs": runs,
        "penguin": penguin,
        "throughput": throughput,
        "record_check": record_checks,
        "targets": goals,
    }
    print(scale_table.format_tables(runs, penguin, throughput, goals, record_checks))
    print(
        f"bench {results['bench_seconds'] / 60:.1f} min; load average "
        f"{machine_at_start['load_average'][0]:.1f} at start, "
        f"{results['load_average_at_end'][0]:.1f} at end, on {results['cpu_count']} CPUs"
    )
    report.write(results, args.output)


if __name__ == "__main__":
    main()
