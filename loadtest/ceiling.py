"""The ceiling: the served SavedModel called in-process, with no server in between.

Loads the model the service serves (``bentoml.models.get(f"{model}:latest")`` from
``$BENTOML_HOME``) through the service's own :class:`service.predictor.Predictor` (same
bucketed, XLA-compiled calls) and times the signature the friendly HTTP endpoint uses, at
batch sizes 1, 2, 4, ... 128, on the benchmark's realistic payloads. The benchmark runs it in
a subprocess, so that TensorFlow never lives in the load generator's process.

Typical usage::

    python -m loadtest.ceiling imdb --batch-sizes 1,8,64 --seconds 1    # prints JSON
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import sys
import time
from typing import Any

import numpy as np

from loadtest import payloads
from loadtest.stats import percentiles
from tfserving_api.contract import TENSOR_SIGNATURE

BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64, 128)


def served_signature(info: Any) -> str:
    """The signature the friendly endpoint of this model calls (see ``service/endpoints.py``):
    the raw-text one for text models, the tensor one for images and windows."""
    if info.kind in ("text", "sentences"):
        return info.user_signature
    return TENSOR_SIGNATURE


def model_inputs(model: str, rows: int, seed: int = 0) -> np.ndarray:
    """``rows`` payload items as the gateway hands them to the runner (``service/inputs.py``)."""
    rng = random.Random(seed)
    if model in ("imdb", "reuters", "translator"):
        texts = {
            "imdb": payloads.reviews,
            "reuters": payloads.newswires,
            "translator": payloads.sentences,
        }
        return np.array([t.encode() for t in texts[model](rows, rng)], dtype=object)
    if model == "cifar":
        return payloads.cifar_images(rows, rng).astype(np.float32) / np.float32(255.0)
    if model == "mnist":
        return payloads.mnist_images(rows, rng)[..., None].astype(np.float32) / np.float32(255.0)
    if model == "cosine":
        return np.array([payloads.window(rng) for _ in range(rows)], dtype=np.float32)
    raise ValueError(f"unknown model {model!r}")


def measure(
    model: str, batch_sizes: tuple[int, ...], seconds: float, min_calls: int = 5
) -> dict[str, Any]:
    """Loads ``model`` from the store and times one signature per batch size.

    Returns:
        The model's tag, signature and load times, and per batch size: calls, latency
        percentiles in ms per call, items per second and the process's CPU (cores, and ms
        per item: what the model itself costs, the floor under any server's CPU per item).
    """
    import bentoml
    import tensorflow as tf

    from service.catalog import ModelInfo
    from service.predictor import Predictor

    stored = bentoml.models.get(f"{model}:latest")
    info = ModelInfo.from_path(model, str(stored.tag), stored.path)
    signature = served_signature(info)
    # Only the timed signature: warming the others up (XLA compiles) would just cost time.
    info = dataclasses.replace(info, signatures={signature: info.signatures[signature]})
    started = time.perf_counter()
    buckets = tuple(sorted(set(batch_sizes)))  # every timed batch is exactly a bucket: no padding
    predictor = Predictor(stored.path, info, buckets, os.environ.get("SERVICE_XLA", "auto"))
    loaded = time.perf_counter() - started
    warm = predictor.warm_up()
    results = []
    for size in batch_sizes:
        batch = model_inputs(model, size)
        predictor.run(signature, batch)  # caches, allocator: the first call is not typical
        durations: list[float] = []
        begin, cpu_begin = time.perf_counter(), time.process_time()
        while len(durations) < min_calls or time.perf_counter() - begin < seconds:
            start = time.perf_counter()
            predictor.run(signature, batch)
            durations.append(time.perf_counter() - start)
        # Every thread of this process (TensorFlow's own included): the model's CPU cost.
        cpu, wall = time.process_time() - cpu_begin, time.perf_counter() - begin
        stats = percentiles([s * 1000.0 for s in durations])
        results.append(
            {
                "batch_size": size,
                "calls": len(durations),
                **stats,
                "items_per_s": size * len(durations) / sum(durations),
                "cpu": cpu / wall,  # cores busy while timing (1.0 = one core)
                "cpu_ms_per_item": cpu * 1000.0 / (size * len(durations)),
            }
        )
        print(f"  ceiling {model} batch {size:>3}: {stats['p50_ms']:8.2f} ms/call", file=sys.stderr)
    return {
        "model": model,
        "tag": str(stored.tag),
        "version": info.version,
        "signature": signature,
        "xla": signature in predictor.xla_signatures,
        "tensorflow": tf.__version__,
        "load_s": loaded,
        "warm_up_s": sum(warm.values()),
        "results": results,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model")
    parser.add_argument("--batch-sizes", default=",".join(map(str, BATCH_SIZES)))
    parser.add_argument("--seconds", type=float, default=2.0, help="timed calls per batch size")
    args = parser.parse_args(argv)
    sizes = tuple(int(s) for s in args.batch_sizes.split(",") if s.strip())
    print(json.dumps(measure(args.model, sizes, args.seconds)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
