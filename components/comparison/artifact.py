"""The artifact type of `ComparisonReport`'s report: a folder of report files.

Its type name is `components.ComparisonReportArtifact`: Vertex AI / Kubeflow Pipelines v2
carry a custom type as a schema title of the form `module.Class` and import that path at
run time, so the class is also exported by the `components` package.

Example:

    report = tfx.dsl.Channel(type=ComparisonReportArtifact)
"""

from tfx import types


class ComparisonReportArtifact(types.Artifact):
    """report.md, report.html, the PNG figures and results.json of a comparison."""

    TYPE_NAME = "components.ComparisonReportArtifact"
