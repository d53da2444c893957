"""The API in-process (FastAPI TestClient): every bad input gets its 4xx and a message, valid
input a schema-valid response equal to the predictor's own answer; artifact, batcher, limits."""

import asyncio

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from helpers.serving.app import (
    MAX_BATCH_ITEMS,
    MAX_TEXT_CHARS,
    BatchPrediction,
    Prediction,
    create_app,
)
from helpers.serving.artifact import load_predictor, untrained_artifact
from helpers.serving.batching import DynamicBatcher
from helpers.serving.load import percentile
from helpers.serving.server import require_loopback

NAMES = ["Nakamura", "O'Neill", "Smith", "Dvořák", "Müller", "García", "Rossi", "Van Dijk"]
CLASSES = ("Czech", "Irish", "Japanese")


@pytest.fixture(scope="module")
def predictor(tmp_path_factory):
    path = untrained_artifact(tmp_path_factory.mktemp("art") / "model.pt", NAMES, CLASSES)
    return load_predictor(path)


@pytest.fixture(scope="module", params=["def", "async", "batched"])
def client(request, predictor):
    with TestClient(create_app(predictor, request.param), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture(scope="module")
def def_client(predictor):
    with TestClient(create_app(predictor, "def"), raise_server_exceptions=False) as c:
        yield c


def test_valid_request_gets_the_predictors_answer(client, predictor):
    response = client.post("/predict", json={"text": "Nakamura", "top_k": 2})
    assert response.status_code == 200
    body = Prediction.model_validate(response.json())
    expected = predictor.predict(["Nakamura"], 2)[0]
    assert [c.label for c in body.top] == [c for c, _ in expected]
    assert [c.probability for c in body.top] == pytest.approx([p for _, p in expected], abs=1e-6)
    assert body.model_version == "test" and body.text == "Nakamura"
    probs = predictor.probabilities(["Nakamura"])[0]  # independent check: softmax sums to 1
    assert float(probs.sum()) == pytest.approx(1.0, abs=1e-5)
    assert body.top[0].probability == pytest.approx(float(probs.max()), abs=1e-6)


def test_batch_endpoint_matches_single_predictions(client, predictor):
    response = client.post("/predict/batch", json={"texts": NAMES[:4], "top_k": 1})
    assert response.status_code == 200
    items = BatchPrediction.model_validate(response.json()).items
    assert [i.top[0].label for i in items] == [p[0][0] for p in predictor.predict(NAMES[:4], 1)]


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        ("/predict", {"text": ""}, "empty or only whitespace"),
        ("/predict", {"text": "   \t"}, "empty or only whitespace"),
        ("/predict", {"text": "a" * (MAX_TEXT_CHARS + 1)}, f"at most {MAX_TEXT_CHARS} characters"),
        ("/predict", {"text": 123}, "valid string"),
        ("/predict", {"text": ["Smith"]}, "valid string"),
        ("/predict", {"text": None}, "valid string"),
        ("/predict", {}, "Field required"),
        ("/predict", {"text": "Smith", "top_k": "2"}, "valid integer"),
        ("/predict", {"text": "Smith", "top_k": 0}, "greater than or equal to 1"),
        ("/predict", {"text": "Smith", "top_k": 5}, "exceeds the 3 classes"),
        ("/predict", {"text": "Smith", "extra": 1}, "Extra inputs are not permitted"),
        ("/predict", {"text": "Sm1th#"}, "outside the model's vocabulary: '1#'"),
        ("/predict", ["Smith"], "valid dictionary"),
        ("/predict/batch", {"texts": []}, "at least 1 item"),
        (
            "/predict/batch",
            {"texts": ["Smith"] * (MAX_BATCH_ITEMS + 1)},
            f"at most {MAX_BATCH_ITEMS} items",
        ),
        ("/predict/batch", {"texts": ["Smith", " "]}, "texts[1] is empty"),
        ("/predict/batch", {"texts": ["Smith", "x" * 30]}, "texts[1] has 30 characters"),
        ("/predict/batch", {"texts": ["Smith", "Røssi"]}, "text 1 has characters outside"),
        ("/predict/batch", {"texts": "Smith"}, "valid list"),
    ],
)
def test_bad_input_gets_a_4xx_with_a_message(def_client, path, body, message):
    response = def_client.post(path, json=body)
    assert 400 <= response.status_code < 500, response.text
    assert message in response.json()["detail"]


def test_every_endpoint_style_checks_its_input(client):
    """The checks made inside the handlers (not by Pydantic) hold for all three styles."""
    for body, message in [
        ({"text": "Sm1th#"}, "vocabulary"),
        ({"text": "Smith", "top_k": 5}, "exceeds"),
    ]:
        response = client.post("/predict", json=body)
        assert response.status_code == 422 and message in response.json()["detail"]


def test_malformed_json_and_wrong_method(client):
    response = client.post(
        "/predict", content=b'{"text": "Smi', headers={"content-type": "application/json"}
    )
    assert response.status_code == 422 and "JSON" in response.json()["detail"]
    lone_surrogate = client.post(
        "/predict", content=b'{"text": "Sm\\ud800th"}', headers={"content-type": "application/json"}
    )
    assert lone_surrogate.status_code == 422 and "unicode" in lone_surrogate.json()["detail"]
    assert client.get("/predict").status_code == 405
    assert client.post("/nowhere", json={}).status_code == 404


def test_health_and_openapi_docs(client):
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["model_version"] == "test"
    schema = client.get("/openapi.json").json()
    assert {"/predict", "/predict/batch", "/health"} <= set(schema["paths"])
    request_schema = schema["components"]["schemas"]["PredictRequest"]
    assert request_schema["properties"]["text"]["maxLength"] == MAX_TEXT_CHARS
    assert client.get("/docs").status_code == 200


def test_artifact_round_trip_and_format_check(tmp_path, predictor):
    path = untrained_artifact(tmp_path / "a.pt", NAMES, CLASSES)
    again = load_predictor(path)
    assert again.vocab == predictor.vocab and again.classes == CLASSES
    assert torch.equal(again.probabilities(NAMES), predictor.probabilities(NAMES))
    torch.save({"model": {}, "config": {"format": "other"}}, tmp_path / "b.pt")
    with pytest.raises(ValueError, match="not a surname-gru"):
        load_predictor(tmp_path / "b.pt")


def test_widen_keeps_predictions(predictor):
    from helpers.serving.artifact import TrainedClassifier, widen

    small = TrainedClassifier(predictor.model, predictor.vocab, CLASSES, {"hidden": 16}, 0.0)
    wide = widen(small, 48)
    assert wide.model.gru.hidden_size == 48
    from helpers.data import encode_padded

    tokens, _ = encode_padded(NAMES, predictor.vocab, 10)
    with torch.no_grad():
        assert torch.allclose(wide.model(tokens), predictor.model(tokens), atol=1e-6)
        wide.model.gru.weight_hh_l0[20, 20] = 1.0  # negative control: wake a spare unit
        wide.model.gru.bias_ih_l0[48 * 2 + 20] = 1.0
        wide.model.head.weight[0, 20] = 1.0
        assert not torch.allclose(wide.model(tokens), predictor.model(tokens), atol=1e-6)


def test_percentile_matches_numpy():
    values = list(np.random.default_rng(0).exponential(size=101))
    for q in (0, 50, 95, 99, 100):
        assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))
    with pytest.raises(ValueError):
        percentile([], 50)


def test_batcher_groups_concurrent_requests_and_keeps_order():
    async def scenario():
        batcher = DynamicBatcher(
            lambda items: [x * 10 for x in items], max_batch_size=4, max_wait_s=0.05
        )
        await batcher.start()
        results = await asyncio.gather(*(batcher.submit(i) for i in range(10)))
        await batcher.stop()
        return results, batcher.batch_sizes

    results, sizes = asyncio.run(scenario())
    assert results == [i * 10 for i in range(10)]
    assert sizes == [4, 4, 2]


def test_batcher_passes_errors_to_every_waiter_and_waits_at_most_max_wait():
    def fail(items):
        raise RuntimeError("model broke")

    async def scenario():
        batcher = DynamicBatcher(fail, max_batch_size=8, max_wait_s=0.01)
        await batcher.start()
        results = await asyncio.gather(
            *(batcher.submit(i) for i in range(3)), return_exceptions=True
        )
        ok = DynamicBatcher(lambda items: items, max_batch_size=8, max_wait_s=0.02)
        await ok.start()
        loop = asyncio.get_running_loop()
        started = loop.time()
        await ok.submit(1)  # alone: served after max_wait, not after a full batch
        waited = loop.time() - started
        await batcher.stop()
        await ok.stop()
        return results, waited

    results, waited = asyncio.run(scenario())
    assert all(isinstance(r, RuntimeError) and "model broke" in str(r) for r in results)
    assert 0.015 < waited < 1.0


def test_only_loopback_hosts():
    assert require_loopback("127.0.0.1") == "127.0.0.1"
    for host in ("0.0.0.0", "192.168.1.4", "example.com", ""):
        with pytest.raises(ValueError, match="loopback"):
            require_loopback(host)
