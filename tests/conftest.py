"""Shared test settings."""

import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def sample(tmp_path_factory):
    """96 train and 64 eval examples of the embedded sample, in its split layout."""
    from tests.pipeline_support import write_split_sample

    return write_split_sample(tmp_path_factory.mktemp("sample"), train=96, eval=64)


@pytest.fixture
def cloud(monkeypatch):
    """The recording fake of google.cloud.aiplatform (tests/fake_aiplatform.py), installed
    where every Vertex AI call goes (components/vertex/client.py)."""
    from components.vertex import client
    from tests.fake_aiplatform import FakeAiplatform

    fake = FakeAiplatform()
    monkeypatch.setattr(client, "load_aiplatform", lambda: fake)
    return fake
