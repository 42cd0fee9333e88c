"""A recording stand-in for `google.cloud.aiplatform`, with just enough state to play Vertex AI
back: Model Registry versions and aliases, endpoints with deployed models and a traffic split,
pipeline jobs, schedules, experiments and their runs.

Every SDK call lands in `calls`, in order, as `(name, arguments)`. `deploy_error` makes the next
`Model.deploy` raise before anything is deployed, as a failed deployment operation does.

    fake = FakeAiplatform()
    monkeypatch.setattr(components.vertex.client, "load_aiplatform", lambda: fake)
"""

from __future__ import annotations

import types

from google.api_core import exceptions

PROJECT_NUMBER = "123456789"


class FakeAiplatform:
    def __init__(self):
        self.calls: list[tuple[str, dict]] = []
        self.location = f"projects/{PROJECT_NUMBER}/locations/us-central1"
        self.versions: dict[str, list[ModelVersion]] = {}  # model ID -> versions, in order
        self.endpoints: list[Endpoint] = []
        self.experiments: set[str] = set()
        self.runs: dict[tuple[str, str], ExperimentRun] = {}
        self.deploy_error: Exception | None = None
        self.Model = _Models(self)
        self.Endpoint = _Endpoints(self)
        self.Experiment = _Experiments(self)
        self.ExperimentRun = _ExperimentRuns(self)

    def record(self, name: str, **arguments) -> None:
        self.calls.append((name, arguments))

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]

    def init(self, **arguments):
        self.record("init", **arguments)
        self.location = f"projects/{PROJECT_NUMBER}/locations/{arguments['location']}"

    def PipelineJob(self, **arguments):
        self.record("PipelineJob", **arguments)
        return PipelineJob(self, arguments)

    def add_deployed_version(self, endpoint_name: str, model_id: str) -> str:
        """Puts a version of `model_id` on the endpoint, serving all the traffic, as an
        earlier release would have; returns its deployed model ID."""
        model = self.Model.new_version(model_id, alias="v1", labels={}, artifact_uri="gs://old")
        endpoint = self.Endpoint.new(endpoint_name)
        return endpoint.add(model)


class ModelVersion:
    def __init__(self, fake, model_id, version_id, alias, labels, artifact_uri):
        self.fake, self.model_id, self.version_id = fake, model_id, version_id
        self.aliases, self.labels, self.artifact_uri = [alias], labels, artifact_uri
        self.resource_name = f"{fake.location}/models/{model_id}"

    def deploy(self, endpoint, **arguments):
        self.fake.record("Model.deploy", model=f"{self.model_id}@{self.version_id}", **arguments)
        if self.fake.deploy_error is not None:
            error, self.fake.deploy_error = self.fake.deploy_error, None
            raise error
        endpoint.add(self, traffic_percentage=arguments["traffic_percentage"])
        return endpoint


class _Models:
    def __init__(self, fake):
        self.fake = fake

    def __call__(self, model_name):
        self.fake.record("Model", model_name=model_name)
        model_id, _, alias = model_name.partition("@")
        versions = self.fake.versions.get(model_id, [])
        for version in reversed(versions):
            if (alias or "default") in version.aliases:
                return version
        raise exceptions.NotFound(f"{model_name} not found")

    def upload(self, **arguments):
        self.fake.record("Model.upload", **arguments)
        model_id = arguments["model_id"] or arguments["parent_model"]
        if arguments["model_id"] and model_id in self.fake.versions:
            raise exceptions.AlreadyExists(f"model {model_id} exists")
        if arguments["parent_model"] and model_id not in self.fake.versions:
            raise exceptions.NotFound(f"parent model {model_id} not found")
        [alias] = arguments["version_aliases"]
        return self.new_version(model_id, alias, arguments["labels"], arguments["artifact_uri"])

    def new_version(self, model_id, alias, labels, artifact_uri) -> ModelVersion:
        versions = self.fake.versions.setdefault(model_id, [])
        for version in versions:
            if "default" in version.aliases:
                version.aliases.remove("default")
        version = ModelVersion(
            self.fake, model_id, str(len(versions) + 1), alias, labels, artifact_uri
        )
        version.aliases.append("default")
        versions.append(version)
        return version


class Endpoint:
    def __init__(self, fake, display_name, number):
        self.fake, self.display_name = fake, display_name
        self.resource_name = f"{fake.location}/endpoints/{number}"
        self.deployed: list[types.SimpleNamespace] = []
        self.traffic: dict[str, int] = {}

    def add(self, model: ModelVersion, traffic_percentage: int = 100) -> str:
        deployed_id = str(1000 + sum(len(e.deployed) for e in self.fake.endpoints) + 1)
        self.deployed.append(
            types.SimpleNamespace(
                id=deployed_id,
                model=model.resource_name,
                model_version_id=model.version_id,
                display_name=f"{model.model_id}-{model.aliases[0]}",
            )
        )
        # As the SDK's Endpoint._allocate_traffic: the others share what is left, pro rata.
        rest = 100 - traffic_percentage
        self.traffic = {
            key: value * rest // 100 for key, value in self.traffic.items() if rest
        }
        self.traffic[deployed_id] = traffic_percentage
        return deployed_id

    def list_models(self):
        self.fake.record("Endpoint.list_models", endpoint=self.display_name)
        return list(self.deployed)

    @property
    def traffic_split(self):
        self.fake.record("Endpoint.traffic_split", endpoint=self.display_name)
        return dict(self.traffic)

    def undeploy(self, deployed_model_id, sync=True):
        self.fake.record("Endpoint.undeploy", deployed_model_id=deployed_model_id, sync=sync)
        # As the SDK's Endpoint.undeploy, which refuses to leave the other models no traffic.
        if len(self.traffic) > 1 and self.traffic.get(deployed_model_id) == 100:
            raise ValueError(f"Undeploying {deployed_model_id} would leave 0% traffic.")
        self.deployed = [d for d in self.deployed if d.id != deployed_model_id]
        self.traffic.pop(deployed_model_id, None)


class _Endpoints:
    def __init__(self, fake):
        self.fake = fake

    def list(self, filter):
        self.fake.record("Endpoint.list", filter=filter)
        return [e for e in self.fake.endpoints if filter == f'display_name="{e.display_name}"']

    def create(self, **arguments):
        self.fake.record("Endpoint.create", **arguments)
        return self.new(arguments["display_name"])

    def new(self, display_name) -> Endpoint:
        for endpoint in self.fake.endpoints:
            if endpoint.display_name == display_name:
                return endpoint
        endpoint = Endpoint(self.fake, display_name, len(self.fake.endpoints) + 1)
        self.fake.endpoints.append(endpoint)
        return endpoint


class PipelineJob:
    def __init__(self, fake, arguments):
        self.fake, self.arguments = fake, arguments
        self.resource_name = f"{fake.location}/pipelineJobs/{arguments['display_name']}-1"
        self.states = ["PIPELINE_STATE_RUNNING", "PIPELINE_STATE_SUCCEEDED"]

    def submit(self, **arguments):
        self.fake.record("PipelineJob.submit", **arguments)

    def create_schedule(self, **arguments):
        self.fake.record("PipelineJob.create_schedule", **arguments)
        name = f"{self.fake.location}/schedules/1"
        return types.SimpleNamespace(resource_name=name)

    @property
    def state(self):
        return types.SimpleNamespace(name=self.states.pop(0))


class ExperimentRun:
    def __init__(self, fake, experiment, run_name):
        self.fake, self.experiment, self.run_name = fake, experiment, run_name
        self.resource_name = (
            f"{fake.location}/metadataStores/default/contexts/{experiment}-{run_name}"
        )
        self.params, self.metrics, self.state = {}, {}, "RUNNING"

    def log_params(self, params):
        self.fake.record("ExperimentRun.log_params", run=self.run_name, params=params)
        self.params.update(params)

    def log_metrics(self, metrics):
        self.fake.record("ExperimentRun.log_metrics", run=self.run_name, metrics=metrics)
        self.metrics.update(metrics)

    def end_run(self):
        self.fake.record("ExperimentRun.end_run", run=self.run_name)
        self.state = "COMPLETE"


class _Experiments:
    def __init__(self, fake):
        self.fake = fake

    def get_or_create(self, experiment_name):
        self.fake.record("Experiment.get_or_create", experiment_name=experiment_name)
        self.fake.experiments.add(experiment_name)


class _ExperimentRuns:
    def __init__(self, fake):
        self.fake = fake

    def get(self, run_name, experiment):
        self.fake.record("ExperimentRun.get", run_name=run_name, experiment=experiment)
        return self.fake.runs.get((experiment, run_name))

    def create(self, run_name, experiment):
        self.fake.record("ExperimentRun.create", run_name=run_name, experiment=experiment)
        if experiment not in self.fake.experiments:
            raise exceptions.NotFound(f"experiment {experiment} not found")
        if len(f"{experiment}-{run_name}") > 121:
            raise ValueError("Length of Experiment ID and Run ID cannot be greater than 121.")
        run = ExperimentRun(self.fake, experiment, run_name)
        self.fake.runs[(experiment, run_name)] = run
        return run
