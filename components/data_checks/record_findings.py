"""What the record check found, in memory that does not grow with the records.

`Findings` is what a pass over some records found: records and bad records per split, and per
kind of problem (split, feature, problem) its records per file and the first
`NAMED_RECORDS` of them, in file order, with their errors. Findings of any parts merge
(`merge_findings`, associative and commutative: Beam combines them in any order), and their
size depends on the kinds of problem and the files, never on the records: 10,000 bad records
of one kind keep 10 named, the rest counted. `BadRecords` is one kind as the gate reports it,
one readable line each.

Example:

    part = Findings()
    part.add("train", "data.gz", first_index=0, problems=[[], [("image", "have no image", "")]])
    total = merge_findings([part, other_part])
    for bad in total.bad_records({"train": ["data.gz"]}):
        print(bad.line())  # [train] image: 1 of 2 records have no image: record 1 of data.gz
"""

from __future__ import annotations

import bisect
import dataclasses
import heapq
import json
from collections.abc import Iterable

# The feature name of a problem of a whole split, as ExampleValidator names its own.
DATASET = "<dataset>"
# Records named per kind of problem; the others are counted.
NAMED_RECORDS = 10

# A named record: (file, index in the file from 0, the record's own error or "").
Named = tuple[str, int, str]


@dataclasses.dataclass(frozen=True)
class BadRecords:
    """Records of one split that share one problem with one feature.

    Attributes:
        split: the split's name.
        feature: the feature, or `DATASET` for a problem of the whole split.
        problem: what is wrong, completing "N of M records ...".
        records_in_split: how many records the split holds.
        counts: each file of the split with the problem, and how many of its records have it.
        where: the first `NAMED_RECORDS` such records (in file order) by file: their indices.
        example: the first such record's own error, if it has one.
    """

    split: str
    feature: str
    problem: str
    records_in_split: int
    counts: dict[str, int]
    where: dict[str, list[int]]
    example: str = ""

    @property
    def count(self) -> int:
        return sum(self.counts.values())

    @property
    def kind(self) -> str:
        """`feature: problem`, the key of the counts per kind."""
        return f"{self.feature}: {self.problem}"

    def line(self) -> str:
        """One readable line: split, feature, count, problem, then records by file."""
        if self.feature == DATASET:
            return f"[{self.split}] {DATASET}: {self.problem} ({', '.join(self.counts)})"
        example = f" (first: {self.example})" if self.example else ""
        places = "; ".join(
            f"{_listed(self.where.get(path, []), count)} of {path}"
            for path, count in self.counts.items()
        )
        return (
            f"[{self.split}] {self.feature}: {self.count} of {self.records_in_split} records "
            f"{self.problem}{example}: {'record' if self.count == 1 else 'records'} {places}"
        )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> BadRecords:
        return cls(**values)


@dataclasses.dataclass
class KindFindings:
    """One kind of problem: its records per file, and the first `NAMED_RECORDS` named, in
    file order."""

    counts: dict[str, int] = dataclasses.field(default_factory=dict)
    named: list[Named] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Findings:
    """What the record check found in some records (see the module docstring).

    Attributes:
        records: records checked, per split.
        bad: records with at least one problem, per split.
        kinds: (split, feature, problem) -> its `KindFindings`.
    """

    records: dict[str, int] = dataclasses.field(default_factory=dict)
    bad: dict[str, int] = dataclasses.field(default_factory=dict)
    kinds: dict[tuple[str, str, str], KindFindings] = dataclasses.field(default_factory=dict)

    def add(
        self, split: str, path: str, first_index: int, problems: list[list[tuple[str, str, str]]]
    ) -> None:
        """Adds consecutive records of the file `path`, from `first_index` on, given each
        record's problems as `record_problems.chunk_problems` finds them."""
        self.records[split] = self.records.get(split, 0) + len(problems)
        for offset, found in enumerate(problems):
            if found:
                self.bad[split] = self.bad.get(split, 0) + 1
            for feature, problem, error in found:
                kind = self.kinds.setdefault((split, feature, problem), KindFindings())
                kind.counts[path] = kind.counts.get(path, 0) + 1
                named = (path, first_index + offset, error)
                if len(kind.named) < NAMED_RECORDS or named < kind.named[-1]:
                    bisect.insort(kind.named, named)
                    del kind.named[NAMED_RECORDS:]

    def bad_records(self, files: dict[str, list[str]]) -> list[BadRecords]:
        """Every problem found, by split in the order of `files` (split -> its files; a
        split without files: its folder), then by the first record with it: a split with no
        records is one `DATASET` problem."""
        found = []
        for split, paths in files.items():
            records = self.records.get(split, 0)
            if records == 0:
                empty = {path: 0 for path in paths}
                found.append(BadRecords(split, DATASET, "the split holds no records", 0, empty, {}))
                continue
            kinds = [(key, kind) for key, kind in self.kinds.items() if key[0] == split]
            for (_, feature, problem), kind in sorted(kinds, key=_first_named):
                where = {}
                for path, index, _ in kind.named:
                    where.setdefault(path, []).append(index)
                counts = {path: kind.counts[path] for path in sorted(kind.counts)}
                example = kind.named[0][2]
                found.append(BadRecords(split, feature, problem, records, counts, where, example))
        return found

    def to_json(self) -> str:
        kinds = [[*key, kind.counts, kind.named] for key, kind in self.kinds.items()]
        return json.dumps({"records": self.records, "bad": self.bad, "kinds": kinds})

    @classmethod
    def from_json(cls, text: str) -> Findings:
        values = json.loads(text)
        kinds = {
            (split, feature, problem): KindFindings(counts, [tuple(named) for named in names])
            for split, feature, problem, counts, names in values["kinds"]
        }
        return cls(values["records"], values["bad"], kinds)


@dataclasses.dataclass(frozen=True)
class RecordCheckResult:
    """What the record check found in all records: what the gate decides on.

    Attributes:
        records: records per split.
        bad: records with at least one problem, per split.
        problems: every problem (`Findings.bad_records`), problems of whole splits included.
    """

    records: dict[str, int]
    bad: dict[str, int]
    problems: list[BadRecords]

    @classmethod
    def from_findings(cls, findings: Findings, files: dict[str, list[str]]) -> RecordCheckResult:
        """`findings` of every record of the splits of `files` (split -> its files)."""
        records = {split: findings.records.get(split, 0) for split in files}
        bad = {split: findings.bad.get(split, 0) for split in files}
        return cls(records, bad, findings.bad_records(files))

    @property
    def bad_record_count(self) -> int:
        """Records with at least one problem, in all splits."""
        return sum(self.bad.values())

    def counts_by_split_and_kind(self) -> dict[str, dict[str, int]]:
        """Split -> `feature: problem` -> records with it (problems of records only)."""
        counts = {}
        for bad in self.problems:
            if bad.feature != DATASET:
                counts.setdefault(bad.split, {})[bad.kind] = bad.count
        return counts

    def to_json(self) -> str:
        problems = [bad.to_dict() for bad in self.problems]
        return json.dumps(
            {"records": self.records, "bad": self.bad, "problems": problems}, indent=2
        )

    @classmethod
    def from_json(cls, text: str) -> RecordCheckResult:
        values = json.loads(text)
        problems = [BadRecords.from_dict(bad) for bad in values["problems"]]
        return cls(values["records"], values["bad"], problems)


def merge_findings(parts: Iterable[Findings]) -> Findings:
    """The findings of all `parts` together (of no part: none)."""
    total = Findings()
    for part in parts:
        for split, records in part.records.items():
            total.records[split] = total.records.get(split, 0) + records
        for split, bad in part.bad.items():
            total.bad[split] = total.bad.get(split, 0) + bad
        for key, kind in part.kinds.items():
            merged = total.kinds.setdefault(key, KindFindings())
            for path, count in kind.counts.items():
                merged.counts[path] = merged.counts.get(path, 0) + count
            _keep_first(merged, kind.named)
    return total


def _keep_first(kind: KindFindings, named: list[Named]) -> None:
    """Keeps the first `NAMED_RECORDS` of `kind.named` and `named`, in file order."""
    kind.named = heapq.nsmallest(NAMED_RECORDS, [*kind.named, *named])


def _first_named(item) -> tuple:
    (_, feature, problem), kind = item
    path, index, _ = kind.named[0]
    return path, index, feature, problem


def _listed(indices: list[int], count: int) -> str:
    """`0, 4 and 7 more`: the named indices of a file, then how many more it has."""
    shown = ", ".join(str(index) for index in indices)
    more = count - len(indices)
    if not shown:
        return str(count)
    return f"{shown} and {more} more" if more > 0 else shown
