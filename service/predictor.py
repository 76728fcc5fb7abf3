"""Runs one exported SavedModel: shape buckets, XLA, warm-up. The only module importing TF.

Every call is padded to the next of a few fixed batch sizes (the *buckets*), so the compiled
functions only ever see shapes that were compiled during warm-up: a new request size in the
middle of traffic never triggers a retrace or an XLA compile (~0.5 s each on a laptop CPU).

Typical usage::

    predictor = Predictor(stored.path, info, buckets=(1, 2, 4, 8, 16, 32, 64))
    seconds = predictor.warm_up()
    out = predictor.run("serving_default", token_ids)    # {"probabilities": ..., "label": ...}
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf

from service.catalog import TENSOR_SIGNATURE, ModelInfo, SignatureSpec
from service.config import bucket_for

logger = logging.getLogger(__name__)

# What a dummy row holds during warm-up (any valid value works: only shapes matter).
_WARM_UP_TEXT = "warm up the model with a short sentence"


def configure_devices() -> list[str]:
    """Turns on GPU memory growth so that one process does not take the whole card.

    Returns:
        The names of the GPUs TensorFlow sees (empty on CPU-only machines).
    """
    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError as exc:  # already initialized: keep whatever was configured
            logger.warning("could not enable memory growth on %s: %s", gpu.name, exc)
    return [gpu.name for gpu in gpus]


def is_xla_compiled(function: Any) -> bool:
    """Whether a loaded signature already runs its model under ``jit_compile=True``."""
    library = function.graph.as_graph_def().library.function
    return any(
        "_XlaMustCompile" in fdef.attr and fdef.attr["_XlaMustCompile"].b for fdef in library
    )


def _pad(array: np.ndarray, rows: int) -> np.ndarray:
    if len(array) == rows:
        return array
    if array.dtype == object:
        filler = np.full((rows - len(array), *array.shape[1:]), b"", dtype=object)
    else:
        filler = np.zeros((rows - len(array), *array.shape[1:]), dtype=array.dtype)
    return np.concatenate([array, filler])


def dummy_input(spec: SignatureSpec, rows: int) -> np.ndarray:
    """A valid input of ``rows`` rows for ``spec`` (zeros, or a short sentence)."""
    tensor = spec.input
    if tensor.dtype == "string":
        return np.array([_WARM_UP_TEXT.encode()] * rows, dtype=object)
    shape = (rows, *(d or 1 for d in tensor.row_shape))
    return np.zeros(shape, dtype=tensor.dtype)


class Predictor:
    """One loaded SavedModel with a bucketed, optionally XLA-compiled call per signature.

    Not thread-safe by design: the model runner calls it from one thread at a time.
    """

    def __init__(
        self, path: str, info: ModelInfo, buckets: tuple[int, ...], xla: str = "auto"
    ) -> None:
        self.info = info
        self.path = str(path)
        self.buckets = tuple(sorted(buckets))
        self.xla_signatures: set[str] = set()
        self._loaded = tf.saved_model.load(str(path))
        self._calls: dict[str, Callable[[tf.Tensor], dict[str, tf.Tensor]]] = {}
        for name, spec in info.signatures.items():
            self._calls[name] = self._make_call(name, spec, xla)

    def _make_call(
        self, name: str, spec: SignatureSpec, xla: str
    ) -> Callable[[tf.Tensor], dict[str, tf.Tensor]]:
        signature = self._loaded.signatures[name]
        key = spec.input.name
        plain = lambda x: signature(**{key: x})

        if is_xla_compiled(signature):
            self.xla_signatures.add(name)
            return plain
        # XLA has no string kernels: tokenizing signatures stay in graph mode. With "auto" only
        # the tensor signature is compiled; user-level ones are served as exported.
        if (
            spec.input.dtype == "string"
            or xla == "0"
            or (xla == "auto" and name != TENSOR_SIGNATURE)
        ):
            return plain
        input_spec = tf.TensorSpec([None, *spec.input.row_shape], spec.input.dtype, name=key)
        compiled = tf.function(plain, input_signature=[input_spec], jit_compile=True)
        self.xla_signatures.add(name)
        return compiled

    def run(self, signature: str, inputs: np.ndarray) -> dict[str, np.ndarray]:
        """Calls ``signature`` on ``inputs`` (any number of rows); outputs have as many rows.

        Raises:
            KeyError: unknown signature.
            tf.errors.OpError: the model call failed.
        """
        call = self._calls[signature]
        rows = len(inputs)
        largest = self.buckets[-1]
        chunks = []
        for start in range(0, rows, largest):
            chunk = inputs[start : start + largest]
            padded = _pad(chunk, bucket_for(len(chunk), self.buckets))
            outputs = call(tf.constant(padded))
            chunks.append({k: v.numpy()[: len(chunk)] for k, v in outputs.items()})
        if len(chunks) == 1:
            return chunks[0]
        return {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}

    def warm_up(self) -> dict[str, float]:
        """Calls every signature once per bucket so that nothing compiles during traffic.

        An XLA wrapper that fails to compile is dropped for that signature (with a warning)
        and the plain graph function is used instead.

        Returns:
            Seconds spent per signature.
        """
        spent = {}
        for name, spec in self.info.signatures.items():
            start = time.perf_counter()
            try:
                self._warm(name, spec)
            except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError) as exc:
                if name not in self.xla_signatures:
                    raise
                logger.warning(
                    "%s/%s: XLA failed (%s); using graph mode", self.info.name, name, exc
                )
                self._calls[name] = lambda x, f=self._loaded.signatures[name], k=spec.input.name: f(
                    **{k: x}
                )
                self.xla_signatures.discard(name)
                self._warm(name, spec)
            spent[name] = time.perf_counter() - start
        return spent

    def _warm(self, name: str, spec: SignatureSpec) -> None:
        for size in self.buckets:
            self.run(name, dummy_input(spec, size))
