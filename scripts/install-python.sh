#!/usr/bin/env bash
# Creates a virtual environment with the project's locked Python dependencies.
# Shared by the Dockerfile and scripts/provision.py (venv and Debian 13 root alike).
#
#   install-python.sh VENV SOURCE_DIR deps|project [CONSTRAINTS]
#
# deps     installs the dependencies and the dev extra declared in SOURCE_DIR/pyproject.toml;
#          the project itself is used from its checkout (PYTHONPATH).
# project  installs the dependencies without the dev extra, and puts SOURCE_DIR on the
#          environment's import path, so the project runs from there whatever the working
#          directory (the Docker image). Only pyproject.toml needs to be in SOURCE_DIR yet:
#          the image copies the sources after this step, which stays cached across edits.
# CONSTRAINTS defaults to SOURCE_DIR/constraints.txt; /dev/null resolves afresh (scripts/provision.py lock).
# GSAM_TF_PACKAGE replaces the TensorFlow requirement, e.g. 'tensorflow[and-cuda]' for GPU images.
set -euo pipefail
if [ $# -lt 3 ]; then
  echo "usage: $0 VENV SOURCE_DIR deps|project [CONSTRAINTS]" >&2
  exit 2
fi
venv=$1 src=$2 mode=$3 constraints=${4:-$2/constraints.txt}
case $mode in deps|project) ;; *) echo "$0: mode must be 'deps' or 'project', got '$mode'" >&2; exit 2 ;; esac
[ -f "$constraints" ] || [ "$constraints" = /dev/null ] || { echo "$0: constraints file not found: $constraints" >&2; exit 2; }

python3 -m venv "$venv"
pip=("$venv/bin/pip" install --no-cache-dir --disable-pip-version-check)
"${pip[@]}" --upgrade pip
# pyproject.toml is read with tomllib, which Python 3.10 lacks.
"$venv/bin/python" -c "import tomllib" 2>/dev/null || "${pip[@]}" tomli

requirements=$(mktemp)
trap 'rm -f "$requirements"' EXIT
"$venv/bin/python" - "$src/pyproject.toml" "$mode" >"$requirements" <<'PY'
import os, sys
try:
    import tomllib
except ImportError:
    import tomli as tomllib
pyproject, mode = sys.argv[1:]
tf_package = os.environ.get("GSAM_TF_PACKAGE")
project = tomllib.load(open(pyproject, "rb"))["project"]
requirements = project["dependencies"]
if mode == "deps":
    requirements += project["optional-dependencies"]["dev"]
if tf_package:
    requirements = [tf_package if r.startswith("tensorflow>") else r for r in requirements]
print("\n".join(requirements))
PY
"${pip[@]}" -c "$constraints" -r "$requirements"
if [ "$mode" = project ]; then
  site_packages=$("$venv/bin/python" -c "import sysconfig; print(sysconfig.get_path('purelib'))")
  realpath "$src" >"$site_packages/gsam-tfx.pth"
fi
