# Vertex AI imports custom artifact types as `components.<Class>` (see report_artifact.py).
from components.report_artifact import ComparisonReportArtifact

__all__ = ["ComparisonReportArtifact"]
