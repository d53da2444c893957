"""Notebook 13: serving a trained model behind a REST API, and measuring it.

- ``artifact``: train the course GRU on surnames, save/load it (atomic, ``weights_only=True``),
  ``Predictor`` (text → top-k classes), ``widen`` (a costlier stand-in with identical outputs).
- ``app``: the FastAPI app — Pydantic request/response models, ``/predict``, ``/predict/batch``,
  ``/health``, clear 4xx for every bad input; ``def`` / ``async def`` / batched endpoints.
- ``batching``: ``DynamicBatcher``, a queue that runs concurrent requests as one batch.
- ``server``: ``ServerProcess``, uvicorn in a child process on a free loopback port, always stopped.
- ``load``: a bounded asyncio + httpx load generator, latency percentiles, and ``interleaved_sweep``
  (paths × concurrency levels in interleaved rounds, with the server's CPU time per request).
- ``export``: the TorchScript CPU path and its equality check against the eager model.
"""
