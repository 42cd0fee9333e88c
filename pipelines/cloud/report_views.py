"""Adds, to a compiled pipeline spec, the tasks that show the reports in the Vertex AI console.

Vertex AI renders output artifacts of the kfp types `system.Markdown` and `system.HTML` in a
run's page. TFX 1.21 compiles every artifact as a `tfx.*` or custom type (tensorflow/tfx#5640),
and its container would have to import a class for `system.Markdown` to write one. So the
compiled spec gets, after the ComparisonReport and after the release SharpnessProbe, a task in
the exact form kfp 2 compiles a `dsl.container_component` with `Output[Markdown]` and
`Output[HTML]` to (tests/test_vertex_production.py compares them): its container, the pipeline
image, runs `components/vertex/report_view.py` on the report's files. The per-run probes of a
comparison get none: the comparison report shows their measures.

Example:

    with open("pipeline.json") as file:
        job = json.load(file)
    add_report_views(job["pipelineSpec"], image)  # ["ComparisonReport.view"]
"""

from __future__ import annotations

import itertools

# (producer task, its output) -> the views: (output of the view task, kfp type, report file).
VIEWS = {
    ("ComparisonReport", "report"): (
        ("markdown", "system.Markdown", "report.md"),
        ("html", "system.HTML", "report.html"),
    ),
    ("SharpnessProbe", "sharpness"): (("markdown", "system.Markdown", "summary.md"),),
}
KFP_SCHEMA_VERSION = "0.0.1"
SOURCE = "source"


def add_report_views(spec: dict, image: str) -> list[str]:
    """Adds a view task for each producer of `VIEWS` in `spec` (a PipelineSpec as a dict);
    returns their names, `<producer>.view`."""
    tasks = spec["root"]["dag"]["tasks"]
    added = []
    for (producer, output), views in VIEWS.items():
        if producer not in tasks:
            continue
        name = f"{producer}.view"
        producer_component = spec["components"][tasks[producer]["componentRef"]["name"]]
        source_type = producer_component["outputDefinitions"]["artifacts"][output]["artifactType"]
        spec["components"][name] = view_component(name, source_type, views)
        spec["deploymentSpec"]["executors"][f"{name}_executor"] = view_executor(image, views)
        task = {
            "componentRef": {"name": name},
            "dependentTasks": [producer],
            "inputs": {
                "artifacts": {
                    SOURCE: {
                        "taskOutputArtifact": {
                            "outputArtifactKey": output,
                            "producerTask": producer,
                        }
                    }
                }
            },
            "taskInfo": {"name": name},
        }
        if "cachingOptions" in tasks[producer]:
            task["cachingOptions"] = dict(tasks[producer]["cachingOptions"])
        tasks[name] = task
        added.append(name)
    return added


def view_component(name: str, source_type: dict, views) -> dict:
    """The component: the report artifact in (typed as its producer made it), the views out."""
    return {
        "executorLabel": f"{name}_executor",
        "inputDefinitions": {"artifacts": {SOURCE: {"artifactType": dict(source_type)}}},
        "outputDefinitions": {
            "artifacts": {
                key: {"artifactType": {"schemaTitle": title, "schemaVersion": KFP_SCHEMA_VERSION}}
                for key, title, _ in views
            }
        },
    }


def view_executor(image: str, views) -> dict:
    """The container: `report_view` with the artifacts' local paths, as kfp fills them."""
    copies = [
        (f"--{key}", file, f"{{{{$.outputs.artifacts['{key}'].path}}}}") for key, _, file in views
    ]
    return {
        "container": {
            "image": image,
            "command": ["python", "-m", "components.vertex.report_view"],
            "args": [
                "--source",
                f"{{{{$.inputs.artifacts['{SOURCE}'].path}}}}",
                *itertools.chain.from_iterable(copies),
            ],
        }
    }
