"""Where a local run writes: the pipeline root, ML Metadata, pushed models and logs."""

from __future__ import annotations

import dataclasses
import os

from pipelines.flags.parsing import absolute, is_uri


@dataclasses.dataclass(frozen=True)
class OutputLayout:
    """Where a local run writes: everything under one output folder, local or a URI such as
    gs://BUCKET/out, except ML Metadata's SQLite file when `metadata_file` puts it elsewhere.
    """

    output_dir: str
    metadata_file: str | None = None

    def __post_init__(self):
        if self.metadata_file is None and is_uri(self.output_dir):
            raise ValueError(
                f"output_dir {self.output_dir} is not local, and ML Metadata's SQLite file must "
                f"be: set metadata_path, e.g. to metadata.sqlite."
            )

    @property
    def pipeline_root(self) -> str:
        return os.path.join(self.output_dir, "pipeline")

    @property
    def metadata_path(self) -> str:
        return self.metadata_file or os.path.join(self.output_dir, "metadata.sqlite")

    @property
    def serving_model_dir(self) -> str:
        return os.path.join(self.output_dir, "serving")

    @property
    def logs_dir(self) -> str:
        """Run logs, appended to as a run goes: under the output folder, or beside ML
        Metadata's file when the output folder is a URI."""
        local = os.path.dirname(self.metadata_path) if is_uri(self.output_dir) else self.output_dir
        return os.path.join(local, "logs")

    def log_path(self, run_id: str) -> str:
        """The full log of the run `run_id`."""
        return os.path.join(self.logs_dir, f"{run_id}.log")


def output_layout(output_dir: str, metadata_path: str | None = None) -> OutputLayout:
    """The layout of `--output-dir` and `--metadata-path`, local paths made absolute."""
    return OutputLayout(absolute(output_dir), metadata_path and absolute(metadata_path))
