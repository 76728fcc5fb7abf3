"""The naive baseline: the same SavedModel behind a minimal per-request HTTP endpoint.

What one would write without a serving framework: a Starlette app (FastAPI's core) that
loads the SavedModel from the BentoML store and, for every request, calls the signature
the service's friendly endpoint uses, in Starlette's thread pool, as FastAPI does for a
plain ``def`` endpoint. No batching across requests, no shape buckets, no XLA of its own.
It speaks the same JSON as the service (``docs/contracts.md``, "HTTP API") for the one
model it serves, so the benchmark's clients and checks work unchanged.

Typical usage::

    python -m loadtest.naive_server imdb --port 3100
    curl -X POST 127.0.0.1:3100/imdb/sentiment -d '{"texts": ["a fine film"]}'
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from loadtest.payloads import PATHS, http_body
from tfserving_api.contract import PREDICT_TEXT_SIGNATURE, TENSOR_SIGNATURE, TRANSLATE_SIGNATURE

SIGNATURES = {  # the signature each friendly endpoint calls (service/endpoints.py)
    "imdb": PREDICT_TEXT_SIGNATURE,
    "reuters": PREDICT_TEXT_SIGNATURE,
    "translator": TRANSLATE_SIGNATURE,
    "cifar": TENSOR_SIGNATURE,
    "mnist": TENSOR_SIGNATURE,
    "cosine": TENSOR_SIGNATURE,
}


def _ranked(probabilities: np.ndarray, labels: list[str], k: int) -> list[dict[str, Any]]:
    order = np.argsort(-probabilities, kind="stable")[:k]
    return [
        {"label": labels[i], "index": int(i), "probability": float(probabilities[i])} for i in order
    ]


def build_app(model: str) -> Starlette:
    """The app serving ``model:latest`` of the BentoML store on its friendly path."""
    import bentoml
    import tensorflow as tf

    stored = bentoml.models.get(f"{model}:latest")
    metadata = json.loads((Path(stored.path) / "metadata.json").read_text())
    labels = [str(label) for label in metadata.get("labels") or []]
    described = {
        "name": model,
        "version": int(metadata["version"]),
        "variant": metadata.get("variant", ""),
    }
    signature = tf.saved_model.load(stored.path).signatures[SIGNATURES[model]]
    (input_name,) = signature.structured_input_signature[1]

    def call(array: Any) -> dict[str, np.ndarray]:
        return {k: v.numpy() for k, v in signature(**{input_name: tf.constant(array)}).items()}

    def answer(body: dict[str, Any]) -> dict[str, Any]:
        if model == "imdb":
            results = []
            for negative, positive in call(body["texts"])["probabilities"][:, :2].tolist():
                label = "positive" if positive >= negative else "negative"
                results.append(
                    {
                        "label": label,
                        "probability": max(positive, negative),
                        "positive_probability": positive,
                    }
                )
            return {"results": results}
        if model == "reuters":
            rows = call(body["texts"])["probabilities"]
            k = int(body.get("top_k", 3))
            return {
                "results": [
                    {"topics": [{"topic": r["label"], **r} for r in _ranked(p, labels, k)]}
                    for p in rows
                ]
            }
        if model in ("cifar", "mnist"):
            images = np.asarray(body["images"], dtype=np.float32)
            pixels = images / 255.0 if images.max() > 1.0 else images
            if pixels.ndim == 3:
                pixels = pixels[..., None]
            k = int(body.get("top_k", 1))
            results = []
            for p in call(pixels)["probabilities"]:
                top = _ranked(p, labels, k)
                results.append({**top[0], "top": top})
            return {"results": results}
        if model == "translator":
            return {"translations": [t.decode() for t in call(body["sentences"])["translation"]]}
        if model == "cosine":
            window, values = np.asarray([body["window"]], dtype=np.float32), []
            for _ in range(int(body.get("horizon", 1))):
                value = float(call(window)["forecast"][0])
                values.append(value)
                window = np.concatenate([window[:, 1:], [[value]]], axis=1).astype(np.float32)
            return {"forecast": values}
        raise ValueError(model)

    # One call before listening, as any deployment would: the first call of a signature
    # traces and compiles, and that second or two is not what steady traffic sees.
    answer(http_body(model, 1))

    async def predict(request: Request) -> JSONResponse:
        body = await request.json()
        try:
            result = await run_in_threadpool(answer, body)
        except (KeyError, TypeError, ValueError) as exc:
            return JSONResponse({"error": f"{type(exc).__name__}: {exc}"}, status_code=400)
        return JSONResponse({**result, "model": described})

    async def ready(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    return Starlette(
        routes=[Route(PATHS[model], predict, methods=["POST"]), Route("/readyz", ready)]
    )


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", choices=sorted(SIGNATURES))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3100)
    args = parser.parse_args(argv)
    app = build_app(args.model)  # loaded before the port opens: listening means ready
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
