"""Runs the pipeline on this machine: LocalDagRunner, SQLite ML Metadata, Beam DirectRunner.

python -m pipelines.local_runner --epochs 10 --optimizer gsam
tfx pipeline create --engine local --pipeline_path pipelines/local_runner.py
"""

import sys

from pipelines.local import run_log

if __name__ == "__main__":
    with run_log.held_startup_output():  # TensorFlow's C++ start-up lines go to the log file
        from tfx import v1 as tfx

        from pipelines.local import run_here
    sys.exit(run_here.run(tfx.orchestration.LocalDagRunner(), __doc__.split("\n\n")[0]))
