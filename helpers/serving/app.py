"""The REST API: Pydantic request/response models and the FastAPI app that serves a ``Predictor``.

Endpoints: ``POST /predict`` (one text), ``POST /predict/batch`` (several), ``GET /health``;
FastAPI adds the OpenAPI schema at ``/openapi.json`` and its Swagger UI at ``/docs``. Every bad
input is answered with a 4xx whose ``detail`` says what was wrong; nothing is guessed silently.
"""

from __future__ import annotations

import threading
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from helpers.serving.artifact import Predictor
from helpers.serving.batching import DynamicBatcher

MAX_TEXT_CHARS = 24
MAX_BATCH_ITEMS = 64
ENDPOINT_STYLES = ("def", "async", "batched")


class PredictRequest(BaseModel):
    """One text to classify. ``strict``: a number is not silently turned into a string."""

    model_config = ConfigDict(extra="forbid", strict=True)
    text: str = Field(max_length=MAX_TEXT_CHARS, examples=["Nakamura"])
    top_k: int = Field(default=3, ge=1, le=15)

    @field_validator("text")
    @classmethod
    def not_blank(cls, text: str) -> str:
        if not text.strip():
            raise ValueError("text is empty or only whitespace")
        return text


class BatchRequest(BaseModel):
    """Several texts, classified together; at most ``MAX_BATCH_ITEMS``."""

    model_config = ConfigDict(extra="forbid", strict=True)
    texts: list[str] = Field(min_length=1, max_length=MAX_BATCH_ITEMS)
    top_k: int = Field(default=3, ge=1, le=15)

    @field_validator("texts")
    @classmethod
    def each_text_valid(cls, texts: list[str]) -> list[str]:
        for i, text in enumerate(texts):
            if not text.strip():
                raise ValueError(f"texts[{i}] is empty or only whitespace")
            if len(text) > MAX_TEXT_CHARS:
                raise ValueError(
                    f"texts[{i}] has {len(text)} characters; the limit is {MAX_TEXT_CHARS}"
                )
        return texts


class ClassProbability(BaseModel):
    label: str
    probability: float = Field(ge=0.0, le=1.0)


class Prediction(BaseModel):
    text: str
    top: list[ClassProbability]
    model_version: str


class BatchPrediction(BaseModel):
    items: list[Prediction]
    model_version: str


class Health(BaseModel):
    status: str
    model_version: str
    endpoint_style: str


@dataclass(frozen=True)
class BatchingConfig:
    max_batch_size: int = 32
    max_wait_s: float = 0.005


def reject_unknown_characters(predictor: Predictor, texts: list[str]) -> None:
    """Characters the model never saw get a 422 naming them (the model would only guess)."""
    for i, text in enumerate(texts):
        unknown = predictor.unknown_characters(text)
        if unknown:
            raise HTTPException(
                422,
                f"text {i} has characters outside the model's vocabulary: "
                f"{''.join(unknown)!r}; remove or transliterate them",
            )


def check_top_k(predictor: Predictor, top_k: int) -> None:
    if top_k > len(predictor.classes):
        raise HTTPException(422, f"top_k={top_k} exceeds the {len(predictor.classes)} classes")


def as_predictions(predictor: Predictor, texts: list[str], tops: list) -> list[Prediction]:
    return [
        Prediction(
            text=t,
            model_version=predictor.version,
            top=[ClassProbability(label=c, probability=p) for c, p in top],
        )
        for t, top in zip(texts, tops, strict=True)
    ]


def create_app(
    predictor: Predictor,
    endpoint_style: str = "def",
    batching: BatchingConfig | None = None,
    lab_routes: bool = False,
) -> FastAPI:
    """The app. ``endpoint_style`` picks how ``POST /predict`` runs the model: ``"def"`` (in
    FastAPI's threadpool), ``"async"`` (inside ``async def``: it blocks the event loop) or
    ``"batched"`` (``async def`` awaiting a :class:`DynamicBatcher`, which runs the model off the
    event loop). ``lab_routes=True`` also serves all three at ``/lab/{style}/predict``, so one
    server can compare them, and ``/lab/echo/predict``: the same request and response with no
    model (a uniform answer), to measure what HTTP, validation and JSON cost per request."""
    if endpoint_style not in ENDPOINT_STYLES:
        raise ValueError(
            f"endpoint_style must be one of {ENDPOINT_STYLES}, got {endpoint_style!r}."
        )
    batching = batching or BatchingConfig()
    holder: dict[str, DynamicBatcher] = {}
    # FastAPI's threadpool runs up to 40 `def` calls at once; CPU-bound model calls beyond the
    # cores only thrash (and starve the event loop), so the model runs one call at a time.
    model_lock = threading.Lock()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if endpoint_style == "batched" or lab_routes:
            holder["batcher"] = DynamicBatcher(
                lambda items: predictor.predict([t for t, _ in items], max(k for _, k in items)),
                batching.max_batch_size,
                batching.max_wait_s,
            )
            await holder["batcher"].start()
        yield
        if "batcher" in holder:
            await holder.pop("batcher").stop()

    app = FastAPI(title="Surname origin classifier", version=predictor.version, lifespan=lifespan)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
        message = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors)
        return JSONResponse(status_code=422, content={"detail": message, "errors": errors})

    @app.get("/health", response_model=Health)
    async def health() -> Health:
        return Health(status="ok", model_version=predictor.version, endpoint_style=endpoint_style)

    def predict_in_threadpool(request: PredictRequest) -> Prediction:  # FastAPI: a worker thread
        check_top_k(predictor, request.top_k)
        reject_unknown_characters(predictor, [request.text])
        with model_lock:
            top = predictor.predict([request.text], request.top_k)
        return as_predictions(predictor, [request.text], top)[0]

    async def predict_on_event_loop(request: PredictRequest) -> Prediction:  # blocks the loop
        check_top_k(predictor, request.top_k)
        reject_unknown_characters(predictor, [request.text])
        top = predictor.predict([request.text], request.top_k)
        return as_predictions(predictor, [request.text], top)[0]

    async def predict_batched(request: PredictRequest) -> Prediction:  # awaits its batch
        check_top_k(predictor, request.top_k)
        reject_unknown_characters(predictor, [request.text])
        top = await holder["batcher"].submit((request.text, request.top_k))
        return as_predictions(predictor, [request.text], [top[: request.top_k]])[0]

    async def echo(request: PredictRequest) -> Prediction:  # no model: the HTTP cost alone
        check_top_k(predictor, request.top_k)
        reject_unknown_characters(predictor, [request.text])
        top = [(c, 1 / len(predictor.classes)) for c in predictor.classes[: request.top_k]]
        return as_predictions(predictor, [request.text], [top])[0]

    handlers = {
        "def": predict_in_threadpool,
        "async": predict_on_event_loop,
        "batched": predict_batched,
    }
    app.post("/predict", response_model=Prediction)(handlers[endpoint_style])
    if lab_routes:
        for style, handler in {**handlers, "echo": echo}.items():
            app.post(f"/lab/{style}/predict", response_model=Prediction)(handler)

        @app.get("/lab/cpu")
        async def cpu_seconds() -> dict[str, float]:
            return {"process_cpu_s": time.process_time()}

    @app.post("/predict/batch", response_model=BatchPrediction)
    def predict_batch(request: BatchRequest) -> BatchPrediction:
        check_top_k(predictor, request.top_k)
        reject_unknown_characters(predictor, request.texts)
        with model_lock:
            tops = predictor.predict(request.texts, request.top_k)
        return BatchPrediction(
            items=as_predictions(predictor, request.texts, tops), model_version=predictor.version
        )

    return app
