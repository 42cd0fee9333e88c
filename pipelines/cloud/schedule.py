"""A Vertex AI pipeline schedule: when runs start (unix-cron), and how many at most.

The cron expression is checked here, field by field, so a typo fails before compiling rather
than at the schedule API.

Example:

>>> ScheduleSettings("CRON_TZ=Europe/Berlin 0 3 * * MON-FRI", max_runs=20).cron
'CRON_TZ=Europe/Berlin 0 3 * * MON-FRI'
>>> ScheduleSettings("0 25 * * *")
Traceback (most recent call last):
...
ValueError: cron '0 25 * * *': its hour field (25) must be within 0-23.
"""

from __future__ import annotations

import dataclasses
import re

TIME_ZONE = re.compile(r"(CRON_TZ|TZ)=[A-Za-z_]+(/[A-Za-z0-9_+-]+)*")
MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
DAYS = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
# name, lowest, highest, names (their values count from `lowest`)
FIELDS = (
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day-of-month", 1, 31, ()),
    ("month", 1, 12, MONTHS),
    ("day-of-week", 0, 7, DAYS),
)
ITEM = re.compile(r"(?P<range>\*|[A-Z0-9]+(-[A-Z0-9]+)?)(/(?P<step>[0-9]+))?")


@dataclasses.dataclass(frozen=True)
class ScheduleSettings:
    """A schedule of the pipeline.

    Args:
        cron: five unix-cron fields (minute, hour, day of month, month, day of week), each
            `*`, a value, a range `a-b`, a step `*/n` or `a-b/n`, or a comma-separated list of
            those; months and days may be named (JAN, MON); optionally preceded by
            `CRON_TZ=Area/City` (default time zone: UTC).
        max_runs: the schedule ends after this many runs; `None` runs until paused or deleted.
    """

    cron: str
    max_runs: int | None = None

    def __post_init__(self):
        check_cron(self.cron)
        runs = self.max_runs
        if runs is not None and (isinstance(runs, bool) or not isinstance(runs, int) or runs < 1):
            raise ValueError(f"max_runs must be an integer >= 1, got {runs!r}.")


def check_cron(cron: str) -> None:
    """Raises a ValueError naming the first field of `cron` that is not unix-cron."""
    if not isinstance(cron, str):
        raise ValueError(f"cron must be a string, got {cron!r}.")
    fields = cron.split()
    if fields and TIME_ZONE.fullmatch(fields[0]):
        fields = fields[1:]
    if len(fields) != len(FIELDS):
        raise ValueError(
            f"cron {cron!r}: needs five fields (minute hour day-of-month month day-of-week), "
            f"optionally after CRON_TZ=Area/City; got {len(fields)}."
        )
    for text, (name, lowest, highest, names) in zip(fields, FIELDS):
        for item in text.upper().split(","):
            match = ITEM.fullmatch(item)
            if match is None or match["step"] == "0":
                raise ValueError(
                    f"cron {cron!r}: its {name} field has {item!r}, not *, a value, a range "
                    f"a-b or a step */n."
                )
            if match["range"] == "*":
                continue
            bounds = [
                _value(part, cron, name, lowest, highest, names)
                for part in match["range"].split("-")
            ]
            if bounds[0] > bounds[-1]:
                raise ValueError(f"cron {cron!r}: its {name} range {item} runs backwards.")


def _value(text: str, cron: str, name: str, lowest: int, highest: int, names) -> int:
    if text in names:
        return lowest + names.index(text) if name == "month" else names.index(text)
    if not text.isdigit() or not lowest <= int(text) <= highest:
        raise ValueError(
            f"cron {cron!r}: its {name} field ({text}) must be within {lowest}-{highest}"
            + (f" or one of {', '.join(names)}." if names else ".")
        )
    return int(text)
