"""Fuzz: a few hundred malformed bodies (random JSON of every type, broken bytes, odd unicode)
sent to both POST endpoints must each get a 4xx with a message — never a 5xx."""

import json

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers.serving.app import create_app
from helpers.serving.artifact import load_predictor, untrained_artifact

NAMES = ["Nakamura", "O'Neill", "Smith", "Müller"]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=8,
)
# Bodies that look almost right: the expected keys with values of any type, or the wrong keys.
near_misses = st.one_of(
    st.fixed_dictionaries({"text": json_values}),
    st.fixed_dictionaries({"text": st.text(max_size=60), "top_k": json_values}),
    st.fixed_dictionaries({"texts": json_values}),
    st.fixed_dictionaries({"texts": st.lists(st.text(max_size=30), max_size=70)}),
    st.dictionaries(st.sampled_from(["text", "texts", "top_k", "x"]), json_values, max_size=3),
    json_values,
)
raw_bytes = st.binary(max_size=80)


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    path = untrained_artifact(tmp_path_factory.mktemp("fuzz") / "model.pt", NAMES, ("A", "B"))
    with TestClient(create_app(load_predictor(path), "def"), raise_server_exceptions=False) as c:
        yield c


def check(response) -> None:
    assert response.status_code < 500, (response.status_code, response.text)
    if response.status_code >= 400:
        assert response.json()["detail"], response.text


@settings(
    max_examples=240, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=near_misses, path=st.sampled_from(["/predict", "/predict/batch"]))
def test_json_bodies_never_get_a_5xx(client, body, path):
    check(client.post(path, content=json.dumps(body), headers={"content-type": "application/json"}))


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=raw_bytes, content_type=st.sampled_from(["application/json", "text/plain", ""]))
def test_raw_bytes_never_get_a_5xx(client, body, content_type):
    headers = {"content-type": content_type} if content_type else {}
    check(client.post("/predict", content=body, headers=headers))
