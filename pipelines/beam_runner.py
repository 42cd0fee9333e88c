"""Runs the pipeline with BeamDagRunner: each component is a step of one Beam pipeline.

    python -m pipelines.beam_runner --epochs 10 --optimizer gsam
    tfx pipeline create --engine beam --pipeline_path pipelines/beam_runner.py

Same flags as pipelines.local_runner. The components' own Beam work (statistics,
evaluation) follows --beam-arg, e.g. --beam-arg=--runner=FlinkRunner (see README).
"""

import sys

from pipelines.local import run_log

if __name__ == "__main__":
    with run_log.held_startup_output():  # TensorFlow's C++ start-up lines go to the log file
        from tfx.orchestration.beam.beam_dag_runner import BeamDagRunner

        from pipelines.local import run_here
    sys.exit(run_here.run(BeamDagRunner(), __doc__.split("\n\n")[0]))
