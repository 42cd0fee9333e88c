"""The record check alone, on one run's ExampleGen output: seconds and peak memory per way.

Each way runs in a process of its own, on the same Examples artifact, one after the other:

- `in_memory`, `multi_processing`: `components.data_checks.record_check.find_bad_records`, the
  Beam job, with the benchmark's Beam arguments of that mode (bench/pipeline_scale.py);
- `before`: with `before_checkout`, the record check of that checkout, called the same way
  without Beam arguments: the one-process pass that the gate ran before the check became a
  Beam job (commit dce152e and earlier; `git clone` this repository and check it out).

`seconds` is the check's own time (its imports left out); `wall_seconds` its process's, and
`peak_rss_mib` the peak resident memory of its largest process, Beam's worker processes
included, read from the kernel when the process ends (`os.wait4`).

The ways take turns, `--rounds` times, and a way's ratio to `before` is the median of its
per-round ratios: on a shared machine, each compares two runs made one after the other.

Example:

```
python -m bench.record_check_cost --examples OUT/pipeline/ImportExampleGen/examples/1 \
    --before-checkout ../before --rounds 3
```
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from bench import report

# The benchmark's Beam modes (bench/pipeline_scale.py's).
BEAM_MODES = {
    "in_memory": ("--direct_running_mode=in_memory",),
    "multi_processing": ("--direct_running_mode=multi_processing", "--direct_num_workers=2"),
}

# Runs in the measured checkout (its own `components`), prints the check's seconds as JSON.
DRIVER = """
import json, sys, time
sys.path.insert(0, {checkout!r})
from tfx.types import artifact_utils, standard_artifacts
from components.data_checks.record_check import find_bad_records
examples = standard_artifacts.Examples()
examples.uri = {uri!r}
examples.split_names = artifact_utils.encode_split_names({splits!r})
start = time.perf_counter()
found = find_bad_records(examples, "image", (28, 28, 1), *{extra!r})
print("RESULT " + json.dumps({{"seconds": time.perf_counter() - start, "problems": len(found)}}))
"""
HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_driver(checkout: str, uri: str, splits: list[str], extra: list) -> dict:
    """One check in its own process; its seconds, wall seconds and peak memory."""
    code = DRIVER.format(checkout=checkout, uri=uri, splits=splits, extra=extra)
    start = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=checkout,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"the record check of {checkout} failed:\n{output[-4000:]}")
    [result] = [line for line in output.splitlines() if line.startswith("RESULT ")]
    return {
        **json.loads(result.removeprefix("RESULT ")),
        "wall_seconds": wall,
        "peak_rss_mib": usage.ru_maxrss / 1024,  # Linux: KiB
    }


def measure(
    uri: str,
    splits: list[str],
    beam_modes: dict[str, list[str]],
    before_checkout: str | None = None,
    rounds: int = 1,
) -> dict[str, dict]:
    """Way -> its measurements, for the Examples at `uri` with `splits`: the Beam check in
    each of `beam_modes` (mode -> Beam arguments), and `before` with `before_checkout`.

    The ways take turns, `rounds` times. Per way: `rounds` (each run's record), the medians
    `seconds`, `wall_seconds` and `peak_rss_mib`, and with `before`, `ratio_to_before`: the
    median of the rounds' seconds / before's seconds, so each ratio compares two runs made
    one after the other.
    """
    ways = {mode: (HERE, [list(args)]) for mode, args in beam_modes.items()}
    if before_checkout is not None:
        ways["before"] = (before_checkout, [])
    runs = {way: [] for way in ways}
    for _ in range(rounds):
        for way, (checkout, extra) in ways.items():
            load = os.getloadavg()
            runs[way].append(
                {
                    **run_driver(checkout, uri, splits, extra),
                    "load_average_at_start": load,
                    "load_average_at_end": os.getloadavg(),
                }
            )
    measured = {}
    for way, records in runs.items():
        measured[way] = {
            key: statistics.median(record[key] for record in records)
            for key in ("seconds", "wall_seconds", "peak_rss_mib")
        }
        measured[way]["rounds"] = records
        if "before" in runs and way != "before":
            measured[way]["ratio_to_before"] = statistics.median(
                mine["seconds"] / theirs["seconds"]
                for mine, theirs in zip(records, runs["before"])
            )
    return measured


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--examples", required=True,
        help="an Examples artifact's folder (ExampleGen's output: Split-*/ of gzipped TFRecords)",
    )  # fmt: skip
    parser.add_argument(
        "--before-checkout", default=None,
        help="also time the record check of this checkout (a clone at commit dce152e)",
    )  # fmt: skip
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--beam-modes", default="in_memory,multi_processing",
        help="comma-separated, from: in_memory, multi_processing (default: %(default)s)",
    )  # fmt: skip
    parser.add_argument("--output", default=os.path.join("bench", "results", "record_check.json"))
    args = parser.parse_args(argv)
    splits = sorted(
        name.removeprefix("Split-")
        for name in os.listdir(args.examples)
        if name.startswith("Split-")
    )
    if not splits:
        parser.error(f"--examples {args.examples} holds no Split-* folder")
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")
    modes = {}
    for mode in args.beam_modes.split(","):
        if mode not in BEAM_MODES:
            parser.error(f"unknown Beam mode {mode!r}; choose from {', '.join(BEAM_MODES)}")
        modes[mode] = list(BEAM_MODES[mode])
    started = report.machine()
    measured = measure(args.examples, splits, modes, args.before_checkout, args.rounds)
    ways = list(measured)
    print(
        report.table(
            ["way", "s (median)", "/ before", "peak MiB"],
            [
                [
                    way,
                    f"{measured[way]['seconds']:.1f}",
                    f"{measured[way]['ratio_to_before']:.2f}"
                    if "ratio_to_before" in measured[way]
                    else "-",
                    f"{measured[way]['peak_rss_mib']:.0f}",
                ]
                for way in ways
            ],
        )
    )
    report.write(
        {
            **started,
            "load_average_at_end": os.getloadavg(),
            "settings": {
                "examples": args.examples,
                "splits": splits,
                "rounds": args.rounds,
                "beam_modes": modes,
                "before_checkout": args.before_checkout,
            },
            "record_check": measured,
        },
        args.output,
    )


if __name__ == "__main__":
    main()
