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

Example:

    from bench import record_check_cost
    print(record_check_cost.measure("out/pipeline/ImportExampleGen/examples/1",
                                    ["train", "eval"], {"in_memory": []}))
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

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
) -> dict[str, dict]:
    """Way -> its measurement, for the Examples at `uri` with `splits`: the Beam check in
    each of `beam_modes` (mode -> Beam arguments), and `before` with `before_checkout`."""
    ways = {mode: (HERE, [list(args)]) for mode, args in beam_modes.items()}
    if before_checkout is not None:
        ways["before"] = (before_checkout, [])
    measured = {}
    for way, (checkout, extra) in ways.items():
        load = os.getloadavg()
        measured[way] = {
            **run_driver(checkout, uri, splits, extra),
            "load_average_at_start": load,
            "load_average_at_end": os.getloadavg(),
        }
    return measured
