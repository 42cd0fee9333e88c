"""What the benchmarks share: the machine's description, a text table, the JSON file.

Example:

```python
from bench import report

print(report.table(["model", "ms"], [["mlp", "1.5"]]))
report.write({**report.machine(), "rows": rows}, "bench/results/mine.json")
```
"""

import json
import os
import platform

import keras
import tensorflow as tf


def machine() -> dict:
    """The CPUs, their load while the benchmark ran, the platform and the TF/Keras versions.

    The load average is the one-, five- and fifteen-minute load when called: on a shared
    machine it tells how much of the CPUs other processes took.
    """
    return {
        "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg(),
        "platform": platform.platform(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
    }


def write(report: dict, path: str) -> None:
    """Writes `report` as indented JSON to `path`, creating its folder, and says where."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(report, f, indent=2)
    print(f"wrote {path}")


def table(header: list[str], rows: list[list[str]]) -> str:
    """`rows` of cells under `header`, a rule between: the first column left-aligned, the
    others right-aligned, each as wide as its widest cell."""
    if any(len(row) != len(header) for row in rows):
        raise ValueError(f"every row needs {len(header)} cells, as the header: {rows}")
    widths = [max(len(cells[i]) for cells in [header, *rows]) for i in range(len(header))]

    def line(cells):
        first, *others = cells
        return "  ".join(
            [first.ljust(widths[0]), *(cell.rjust(w) for cell, w in zip(others, widths[1:]))]
        ).rstrip()

    rule = "-" * len(line(header))
    return "\n".join([line(header), rule, *(line(row) for row in rows)])
