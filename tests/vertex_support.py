"""What the Vertex AI production tests share: compiling with the runner's flags, reading the
compiled tasks, and Vertex AI's layout of a task's folder.

The recording fake of google.cloud.aiplatform is the `cloud` fixture (conftest.py).
"""

import json

from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

from pipelines import vertex_runner
from tests.fake_aiplatform import PROJECT_NUMBER

IMAGE = "us-docker.pkg.dev/my-project/gsam/gsam-tfx:1"
ROOT = "gs://my-bucket/gsam-tfx"
FLAGS = ["--image", IMAGE, "--pipeline-root", ROOT, "--project", "my-project"]
SERVICE_ACCOUNT = "pipelines@my-project.iam.gserviceaccount.com"
JOB_ID = "gsam-tfx-20250101120000"


def compile_job(tmp_path, *flags, name="pipeline.json") -> dict:
    """Compiles with `flags` and parses the file strictly, as a PipelineJob and its spec."""
    output = tmp_path / name
    vertex_runner.main(["--output-file", str(output), *FLAGS, *flags])
    job = json.loads(output.read_text())
    json_format.ParseDict(job, pipeline_spec_pb2.PipelineJob())
    json_format.ParseDict(job["pipelineSpec"], pipeline_spec_pb2.PipelineSpec())
    return job


def task_parameter(job, task, name) -> str:
    parameters = job["pipelineSpec"]["root"]["dag"]["tasks"][task]["inputs"]["parameters"]
    return parameters[name]["runtimeValue"]["constantValue"]["stringValue"]


def executor_class(job, task) -> str:
    tasks, spec = job["pipelineSpec"]["root"]["dag"]["tasks"], job["pipelineSpec"]
    label = spec["components"][tasks[task]["componentRef"]["name"]]["executorLabel"]
    args = spec["deploymentSpec"]["executors"][label]["container"]["args"]
    return args[args.index("--executor_class_path") + 1]


def task_dir(tmp_path, task, attempt=1) -> str:
    """A task's folder as Vertex AI lays it out under the pipeline root."""
    return str(tmp_path / "root" / PROJECT_NUMBER / JOB_ID / f"{task}_{attempt}")


def artifact(artifact_type, uri, artifact_id):
    instance = artifact_type()
    instance.uri, instance.id = uri, artifact_id
    return instance


def calls_named(fake, name):
    return [arguments for call, arguments in fake.calls if call == name]
