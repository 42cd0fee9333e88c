"""Custom TFX components, by concern: `data_checks/`, `comparison/`, `sharpness/`, `release/`.

Vertex AI imports custom artifact types as `components.<Class>` (see comparison/artifact.py),
so the package exports them.
"""

from components.comparison.artifact import ComparisonReportArtifact
from components.data_checks.artifact import RecordCheckReport

__all__ = ["ComparisonReportArtifact", "RecordCheckReport"]
