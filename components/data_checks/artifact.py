"""The artifact type of the RecordCheck's report: `record_check.json` and its counts.

Its type name is `components.RecordCheckReport`: Vertex AI / Kubeflow Pipelines v2 carry a
custom type as a schema title of the form `module.Class` and import that path at run time, so
the class is also exported by the `components` package (as comparison/artifact.py's).

Example:

    report = tfx.dsl.Channel(type=RecordCheckReport)
"""

from tfx import types


class RecordCheckReport(types.Artifact):
    """`record_check.json`: what the RecordCheck found; its counts as custom properties
    (`records`, `bad_records`, `bad_records_by_split_and_kind`, `named_bad_records`)."""

    TYPE_NAME = "components.RecordCheckReport"
