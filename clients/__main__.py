"""Command line for the model service, over HTTP (default) or gRPC.

Typical usage::

    python -m clients sentiment "A wonderful film." "Two hours I will never get back."
    python -m clients topic "Oil prices rose sharply" --top-k 3 --grpc
    python -m clients translate "the cat sleeps" --url http://models:3000
    python -m clients forecast 0.0 0.31 0.59 0.81 0.95 1.0 0.95 0.81 0.59 0.31 --horizon 5
    python -m clients classify digit.png --model mnist --top-k 3
    python -m clients classify batch.npy --model cifar --json
    python -m clients sentiment "A wonderful film." --label canary --grpc

Prints one readable line per result (``--json`` for machine-readable output, with the
model version that answered). Every command takes ``--version N`` or ``--label NAME`` to
ask a given version of its model (default: the latest). On a failed request it prints
``error: <ErrorType>: <server message>`` to stderr and exits 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from clients.errors import ClientError, InvalidInput

IMAGE_FORMATS = {"cifar": ("RGB", (32, 32)), "mnist": ("L", (28, 28))}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; options are accepted before or after the arguments."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--grpc", action="store_true", help="use gRPC instead of HTTP")
    common.add_argument(
        "--url",
        help="server address (default http://localhost:3000, or localhost:8500 with --grpc)",
    )
    common.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    common.add_argument("--retries", type=int, default=3, help="max attempts per request")
    common.add_argument("--json", action="store_true", help="print results as JSON")
    common.add_argument(
        "--token",
        default=os.environ.get("KERAS_SERVING_TOKEN"),
        help="bearer token for a server with SERVICE_AUTH_TOKENS (default $KERAS_SERVING_TOKEN)",
    )
    # Every command addresses a model, so every command takes these.
    which = common.add_mutually_exclusive_group()
    which.add_argument(
        "--version", type=int, metavar="N", help="ask this model version (default: latest)"
    )
    which.add_argument(
        "--label", metavar="NAME", help="ask the version this label names (e.g. stable)"
    )

    parser = argparse.ArgumentParser(
        prog="python -m clients",
        description="Query the model service over HTTP or gRPC.",
        epilog="examples:\n" + __doc__.split("Typical usage::\n\n")[1].split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("sentiment", parents=[common], help="IMDB sentiment of texts")
    p.add_argument("texts", nargs="+", metavar="TEXT")

    p = sub.add_parser("topic", parents=[common], help="Reuters topics of texts")
    p.add_argument("texts", nargs="+", metavar="TEXT")
    p.add_argument("--top-k", type=int, default=3)

    p = sub.add_parser("translate", parents=[common], help="translate sentences")
    p.add_argument("sentences", nargs="+", metavar="SENTENCE")

    p = sub.add_parser("forecast", parents=[common], help="continue a series")
    p.add_argument("window", nargs="+", type=float, metavar="VALUE", help="the last values")
    p.add_argument("--horizon", type=int, default=1)

    p = sub.add_parser("classify", parents=[common], help="classify image files")
    p.add_argument("files", nargs="+", type=Path, metavar="FILE", help="PNG/JPEG or .npy")
    p.add_argument("--model", choices=sorted(IMAGE_FORMATS), default="cifar")
    p.add_argument("--top-k", type=int, default=1)
    return parser


def load_images(paths: Sequence[Path], model: str) -> tuple[list[str], np.ndarray]:
    """Names and a uint8/float batch from image files.

    A `.npy` holds one image (`[H, W]` / `[H, W, C]`) or a batch (`[N, H, W, C]`).
    PNG/JPEG files (Pillow needed) are converted to the model's channels and size.
    """
    names: list[str] = []
    images: list[np.ndarray] = []
    for path in paths:
        if path.suffix.lower() == ".npy":
            array = np.load(path, allow_pickle=False)
            batch = array if array.ndim == 4 else array[np.newaxis]
            names += (
                [f"{path.name}[{i}]" for i in range(len(batch))] if array.ndim == 4 else [path.name]
            )
            images += list(batch)
        else:
            images.append(_read_picture(path, model))
            names.append(path.name)
    # [H, W] grayscale gets its channel axis, so it stacks with [H, W, 1] images.
    images = [image[..., np.newaxis] if image.ndim == 2 else image for image in images]
    try:
        return names, np.stack(images)
    except ValueError as e:
        raise InvalidInput(f"images differ in shape: {e}") from None


def _read_picture(path: Path, model: str) -> np.ndarray:
    try:
        from PIL import Image  # optional: only this command path needs Pillow
    except ImportError:
        raise InvalidInput(
            "reading PNG/JPEG needs Pillow (pip install pillow); or pass .npy"
        ) from None
    mode, size = IMAGE_FORMATS[model]
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert(mode).resize(size))
    except OSError as e:
        raise InvalidInput(f"cannot read {path}: {e}") from None


def make_client(args: argparse.Namespace) -> Any:
    """The sync client the options ask for."""
    if args.grpc:
        from clients.grpc import DEFAULT_TARGET, Client

        return Client(
            args.url or DEFAULT_TARGET, timeout=args.timeout, retry=args.retries, token=args.token
        )
    from clients.http import DEFAULT_URL, Client

    return Client(
        args.url or DEFAULT_URL, timeout=args.timeout, retry=args.retries, token=args.token
    )


def _label(label: str | None, index: int) -> str:
    return label if label is not None else f"#{index}"


def run_command(client: Any, args: argparse.Namespace) -> tuple[Any, list[str]]:
    """Call the client; return the raw result and its readable lines."""
    which = {"version": args.version, "label": args.label}
    if args.command == "sentiment":
        results = client.sentiment(args.texts, **which)
        lines = [
            f"{r.label:<8} {r.probability:6.3f}  {text}"
            for r, text in zip(results, args.texts, strict=True)
        ]
    elif args.command == "topic":
        results = client.classify_topic(args.texts, top_k=args.top_k, **which)
        lines = []
        for r, text in zip(results, args.texts, strict=True):
            lines.append(text)
            lines += [f"  {_label(s.label, s.index):<16} {s.probability:6.3f}" for s in r.topics]
    elif args.command == "translate":
        results = client.translate(args.sentences, **which)
        lines = [f"{r.source}  ->  {r.text}" for r in results]
    elif args.command == "forecast":
        results = client.forecast(args.window, horizon=args.horizon, **which)
        lines = [f"t+{i:<3} {v: .5f}" for i, v in enumerate(results.values, start=1)]
    else:
        names, images = load_images(args.files, args.model)
        results = client.classify_image(images, model=args.model, top_k=args.top_k, **which)
        lines = []
        for r, name in zip(results, names, strict=True):
            others = ", ".join(f"{_label(s.label, s.index)} {s.probability:.3f}" for s in r.top[1:])
            lines.append(
                f"{name:<24} {_label(r.label, r.index):<12} {r.probability:6.3f}"
                + (f"   ({others})" if others else "")
            )
    return results, lines


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        with make_client(args) as client:
            results, lines = run_command(client, args)
    except ClientError as e:
        print(f"error: {type(e).__name__}: {e.message}", file=sys.stderr)
        return 1
    except (ValueError, OSError) as e:  # a bad --url scheme, a missing or unreadable file
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(json.dumps(_jsonable(results), indent=2) if args.json else "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
