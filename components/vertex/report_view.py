"""Copies a report's files into the Markdown and HTML artifacts the Vertex AI console renders.

Vertex AI Pipelines shows an output artifact of type `system.Markdown` or `system.HTML` in the
run's page; TFX 1.21 emits none (tensorflow/tfx#5640). `pipelines/cloud/report_views.py` adds
a small task after the ComparisonReport and the release SharpnessProbe whose container runs
this module, the kfp way: the artifacts' local paths (`{{$.outputs.artifacts['markdown'].path}}`,
under Vertex AI's /gcs mount) are its arguments, and it writes the files there.

Markdown image links to the report's own PNGs cannot resolve in the console, so they become
a pointer to the HTML view, which embeds the figures.

    python -m components.vertex.report_view --source REPORT_DIR \\
        --markdown report.md MARKDOWN_PATH --html report.html HTML_PATH
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys

RELATIVE_IMAGE = re.compile(r"!\[([^\]]*)\]\((?![a-z][a-z0-9+.-]*:)[^)]+\)")


def console_markdown(text: str) -> str:
    """`text` with its relative image links replaced by a note naming the HTML view."""
    return RELATIVE_IMAGE.sub(lambda match: f"*Figure: {match[1]} (in the HTML view).*", text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", required=True, help="the report artifact's folder")
    for kind in ("markdown", "html"):
        parser.add_argument(
            f"--{kind}",
            nargs=2,
            action="append",
            default=[],
            metavar=("FILE", "DESTINATION"),
            help=f"copy FILE of the report to the {kind} artifact's path",
        )
    args = parser.parse_args(argv)
    if not args.markdown and not args.html:
        parser.error("name at least one --markdown or --html file")
    for kind, copies in (("markdown", args.markdown), ("html", args.html)):
        for name, destination in copies:
            source = os.path.join(args.source, name)
            if not os.path.isfile(source):
                parser.error(f"{source} does not exist: the report has no {name}")
            os.makedirs(os.path.dirname(destination) or ".", exist_ok=True)
            if kind == "markdown":
                with open(source, encoding="utf-8") as file:
                    text = console_markdown(file.read())
                with open(destination, "w", encoding="utf-8") as file:
                    file.write(text)
            else:
                shutil.copyfile(source, destination)
            print(f"{source} -> {destination}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
