"""Custom TFX components, by concern: `data_checks/`, `comparison/`, `sharpness/`, `release/`,
`vertex/`.

Vertex AI imports custom artifact types as `components.<Class>` (see comparison/artifact.py),
so the package exports them.
"""

import importlib

from components.comparison.artifact import ComparisonReportArtifact
from components.data_checks.artifact import RecordCheckReport

# Exported on first use: their modules import TensorFlow, which `import components` need not.
_LAZY = {
    "ExperimentRuns": "components.vertex.experiments",
    "SharpnessReport": "components.sharpness.probe",
}

__all__ = ["ComparisonReportArtifact", "ExperimentRuns", "RecordCheckReport", "SharpnessReport"]


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'components' has no attribute {name!r}")
