"""From the pipeline benchmark's measurements to its tables and its three targets.

Pure logic, no TFX: the measurements come in as plain records.

- A run: `{"train_images": 10000, "beam_mode": "in_memory", "wall_seconds": 95.0,
  "seconds_per_component": {"ImportExampleGen": 5.1, "Trainer": 41.0, ...}}`, the component
  times as `pipelines.local.summary.seconds_per_component` reads them from ML Metadata, the wall
  time the whole runner process's.
- The penguin reference: the same, without `train_images` and `beam_mode`.
- Throughput, per train size: `{"images_per_second": {"pipeline": ..., "in_memory": ...},
  "ratio": ..., "cpu_ratio": ..., "augment_ratio": ..., "augment_cpu_ratio": ...}`
  (bench/input_throughput.py; the augment ratios: with every augmentation / without).
- The record check alone, per train size: way (`before`, a Beam mode) -> `{"seconds": ...,
  "wall_seconds": ..., "peak_rss_mib": ...}` (bench/record_check_cost.py).

A run's non-training time is its wall time less the Trainer's: the part that does not shrink
with fewer training steps. The data components are those the Beam mode drives (ExampleGen,
StatisticsGen, the schema and validation steps, the RecordCheck, Evaluator).

Targets (issue 14): the input pipeline at least `MIN_INPUT_RATIO` of the in-memory rate at
every size; non-training time growing sub-linearly with the train images; and non-training
time at 10,000 images at most the penguin pipeline's end-to-end time.
"""

from __future__ import annotations

from bench import report

# Table column -> the component types (as ML Metadata names them: the class name) it adds up.
COLUMNS = {
    "ExampleGen": ("CheckedImportExampleGen", "ImportExampleGen", "CsvExampleGen"),
    "Statistics": ("StatisticsGen",),
    "Schema": ("ContentKeyedImportSchemaGen", "ImportSchemaGen", "SchemaGen"),
    "Validator": ("ExampleValidator",),
    "RecordCheck": ("RecordCheck",),
    "Gate": ("ValidationGate",),
    "Transform": ("Transform",),
    "Trainer": ("Trainer",),
    "Evaluator": ("Evaluator",),
    "Pusher": ("AtomicPusher", "Pusher"),
}
OTHER = "other"  # every component type no column names: the baseline resolver
DATA_COLUMNS = (
    "ExampleGen",
    "Statistics",
    "Schema",
    "Validator",
    "RecordCheck",
    "Gate",
    "Evaluator",
)
MIN_INPUT_RATIO = 0.9
FIXED_COST_IMAGES = 10000
# The growth row leaves out columns under this many seconds: their ratios are timer noise.
MIN_GROWTH_SECONDS = 1.0


def grouped(seconds_per_component: dict[str, float]) -> dict[str, float | None]:
    """Seconds per table column (`None` where the run had none of its components), and
    `OTHER` for the component types no column names."""
    known = {name for names in COLUMNS.values() for name in names}
    columns = {}
    for column, names in COLUMNS.items():
        present = [seconds_per_component[name] for name in names if name in seconds_per_component]
        columns[column] = sum(present) if present else None
    columns[OTHER] = sum(s for name, s in seconds_per_component.items() if name not in known)
    return columns


def non_training_seconds(run: dict) -> float:
    """The run's wall time less its Trainer's."""
    return run["wall_seconds"] - grouped(run["seconds_per_component"])["Trainer"]


def data_seconds(run: dict) -> float:
    """Seconds of the components the Beam mode drives."""
    columns = grouped(run["seconds_per_component"])
    return sum(columns[column] or 0.0 for column in DATA_COLUMNS)


def runs_of_mode(runs: list[dict], beam_mode: str) -> list[dict]:
    """The runs in `beam_mode`, fewest train images first."""
    return sorted(
        (run for run in runs if run["beam_mode"] == beam_mode), key=lambda r: r["train_images"]
    )


def growth(runs: list[dict], beam_mode: str) -> dict | None:
    """How non-training time grew from the fewest to the most train images in `beam_mode`:
    `images_factor`, `non_training_factor` and whether the growth is sub-linear. `None` with
    fewer than two sizes."""
    ordered = runs_of_mode(runs, beam_mode)
    if len(ordered) < 2:
        return None
    first, last = ordered[0], ordered[-1]
    images = last["train_images"] / first["train_images"]
    factor = non_training_seconds(last) / non_training_seconds(first)
    return {
        "from_images": first["train_images"],
        "to_images": last["train_images"],
        "images_factor": images,
        "non_training_factor": factor,
        "met": factor < images,
    }


def targets(runs: list[dict], penguin: dict | None, throughput: dict, beam_mode: str) -> dict:
    """The three targets, measured on the runs in `beam_mode` (the runners' default): each
    with its numbers and `met` (`None` where this benchmark run lacks what it needs)."""
    ratios = {images: measured["ratio"] for images, measured in throughput.items()}
    fixed = next(
        (r for r in runs_of_mode(runs, beam_mode) if r["train_images"] == FIXED_COST_IMAGES),
        None,
    )
    fixed_cost = {
        "non_training_seconds": fixed and non_training_seconds(fixed),
        "penguin_seconds": penguin and penguin["wall_seconds"],
        "met": None,
    }
    if fixed and penguin:
        fixed_cost["met"] = fixed_cost["non_training_seconds"] <= fixed_cost["penguin_seconds"]
    return {
        "beam_mode": beam_mode,
        "input_ratio": {
            "min_ratio": MIN_INPUT_RATIO,
            "ratios": ratios,
            "met": all(r >= MIN_INPUT_RATIO for r in ratios.values()) if ratios else None,
        },
        "non_training_growth": growth(runs, beam_mode),
        "fixed_cost": fixed_cost,
    }


def format_tables(
    runs: list[dict],
    penguin: dict | None,
    throughput: dict,
    goals: dict,
    record_checks: dict | None = None,
) -> str:
    """The component table (runs, the penguin reference, the growth of the default mode),
    the Beam modes side by side, the input throughput, the record check alone, and the
    targets."""
    header = ["run", *COLUMNS, OTHER, "wall", "non-train", "peak MiB"]
    ordered = sorted(runs, key=lambda r: (r["train_images"], r["beam_mode"]))
    rows = [_run_row(f"{r['train_images']:,} {r['beam_mode']}", r) for r in ordered]
    if penguin:
        rows.append(_run_row("penguin (TFX example)", penguin))
    mode = goals["beam_mode"]
    default_runs = runs_of_mode(runs, mode)
    if len(default_runs) >= 2:
        first, last = default_runs[0], default_runs[-1]
        rows.append(
            [f"growth {last['train_images']:,}/{first['train_images']:,} {mode}"]
            + [
                _factor(a, b) if (b or 0) >= MIN_GROWTH_SECONDS else "-"
                for a, b in zip(_values(last), _values(first))
            ]
            + [_factor(last.get("peak_rss_mib"), first.get("peak_rss_mib"))]
        )
    sections = [report.table(header, rows)]
    sections.append(
        "seconds; Schema: (Import)SchemaGen; Gate: ValidationGate (before the RecordCheck, "
        "it also checked the records); other: the baseline resolver; non-train: wall less "
        "Trainer; peak MiB: the runner process's peak resident memory"
    )
    sections.append(_beam_table(runs))
    if throughput:
        sections.append(
            report.table(
                [
                    "train images",
                    "pipeline img/s",
                    "in-memory img/s",
                    "ratio",
                    "CPU ratio",
                    "augmented / not",
                    "CPU augmented / not",
                ],
                [
                    [
                        f"{images:,}",
                        f"{measured['images_per_second']['pipeline']:.0f}",
                        f"{measured['images_per_second']['in_memory']:.0f}",
                        f"{measured['ratio']:.3f}",
                        f"{measured['cpu_ratio']:.3f}",
                        _optional_ratio(measured, "augment_ratio"),
                        _optional_ratio(measured, "augment_cpu_ratio"),
                    ]
                    for images, measured in sorted(throughput.items())
                ],
            )
        )
    if record_checks:
        sections.append(_record_check_table(record_checks))
    sections.append(_targets_text(goals))
    return "\n\n".join(sections)


def _record_check_table(record_checks: dict) -> str:
    """Per train size, each way's seconds and peak memory of the record check alone."""
    ways = sorted({way for measured in record_checks.values() for way in measured})
    rows = []
    for images, measured in sorted(record_checks.items(), key=lambda item: int(item[0])):
        cells = [_seconds(measured.get(way, {}).get("seconds")) for way in ways]
        cells += [_mib(measured.get(way, {}).get("peak_rss_mib")) for way in ways]
        rows.append([f"{int(images):,}", *cells])
    header = [
        "record check alone",
        *(f"s {way}" for way in ways),
        *(f"peak MiB {way}" for way in ways),
    ]
    return report.table(header, rows)


def _run_row(name: str, run: dict) -> list[str]:
    return [name, *(_seconds(value) for value in _values(run)), _mib(run.get("peak_rss_mib"))]


def _values(run: dict) -> list[float | None]:
    columns = grouped(run["seconds_per_component"])
    return [*columns.values(), run["wall_seconds"], non_training_seconds(run)]


def _beam_table(runs: list[dict]) -> str:
    modes = sorted({r["beam_mode"] for r in runs})
    rows = []
    for images in sorted({r["train_images"] for r in runs}):
        seconds = {
            r["beam_mode"]: data_seconds(r) for r in runs if r["train_images"] == images
        }
        cells = [_seconds(seconds.get(mode)) for mode in modes]
        if len(modes) == 2:
            cells.append(_factor(seconds.get(modes[1]), seconds.get(modes[0])))
        rows.append([f"{images:,}", *cells])
    header = ["train images", *(f"data s {mode}" for mode in modes)]
    if len(modes) == 2:
        header.append(f"{modes[1]}/{modes[0]}")
    return report.table(header, rows)


def _targets_text(goals: dict) -> str:
    lines = [f"targets (Beam {goals['beam_mode']}):"]
    inputs = goals["input_ratio"]
    if inputs["ratios"]:
        lowest = min(inputs["ratios"].values())
        lines.append(
            f"  input pipeline >= {inputs['min_ratio']} x in-memory at every size: "
            f"lowest {lowest:.3f} ({_verdict(inputs['met'])})"
        )
    rise = goals["non_training_growth"]
    if rise:
        lines.append(
            f"  non-training time {rise['from_images']:,} -> {rise['to_images']:,} images: "
            f"x{rise['non_training_factor']:.2f} for x{rise['images_factor']:.1f} the images "
            f"(sub-linear: {_verdict(rise['met'])})"
        )
    fixed = goals["fixed_cost"]
    if fixed["met"] is not None:
        lines.append(
            f"  non-training time at {FIXED_COST_IMAGES:,} images "
            f"{fixed['non_training_seconds']:.0f} s <= penguin end to end "
            f"{fixed['penguin_seconds']:.0f} s ({_verdict(fixed['met'])})"
        )
    return "\n".join(lines)


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _mib(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _factor(numerator: float | None, denominator: float | None) -> str:
    if numerator is None or not denominator:
        return "-"
    return f"{numerator / denominator:.2f}"


def _verdict(met: bool | None) -> str:
    return {True: "met", False: "missed", None: "n/a"}[met]


def _optional_ratio(measured: dict, name: str) -> str:
    """A ratio that measurements from before it existed lack."""
    return "-" if measured.get(name) is None else f"{measured[name]:.3f}"
