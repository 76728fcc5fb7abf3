"""Command line: ``python -m training {MODEL,all,list} [options]``.

Typical usage::

    python -m training imdb --variant conv1d --epochs 5
    python -m training all --synthetic --quick --out exports
    python -m training translator --data-path ~/Downloads/deu.txt
    python -m training list --json
    python -m training report --out exports
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

from training.models import MODEL_NAMES

EXIT_USAGE = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training",
        description="Train, evaluate, export (SavedModel) and register the seed Keras models.",
    )
    parser.add_argument(
        "target",
        help=f"one of {', '.join(MODEL_NAMES)}, 'all' (default variant of each), 'list', "
        "'compare' (every variant of --model, to pick a default by measurement), or 'report' "
        "(every export in --out and the BentoML store against the seeds' published results)",
    )
    parser.add_argument("model", nargs="?", help="with 'compare': the model whose variants to train")
    parser.add_argument("--variant", help="model variant (default: the model's best one)")
    parser.add_argument(
        "--epochs", type=int, help="epoch budget; early stopping may end sooner (default: recipe)"
    )
    parser.add_argument("--batch-size", type=int, help="batch size (default: recipe)")
    parser.add_argument(
        "--optimizer", choices=("adam", "rmsprop"), help="optimizer (default: recipe)"
    )
    parser.add_argument("--learning-rate", type=float, help="learning rate (default: recipe)")
    parser.add_argument(
        "--patience", type=int, help="early-stopping patience in epochs (default: recipe)"
    )
    parser.add_argument(
        "--validation-split", type=float, help="share held out for early stopping (default: recipe)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="small data and few epochs (minutes on a laptop)"
    )
    parser.add_argument(
        "--synthetic", action="store_true", help="learnable synthetic data (offline, tests)"
    )
    parser.add_argument(
        "--data-path", type=Path, help="local dataset file in the upstream format (air-gapped)"
    )
    parser.add_argument(
        "--word-index",
        type=Path,
        help="with --data-path (imdb, reuters): Keras' <name>_word_index.json; "
        "default: the one next to the data file",
    )
    parser.add_argument("--out", type=Path, default=Path("exports"), help="export repository")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--no-register",
        action="store_true",
        help="do not register in the BentoML store (with 'report': do not read it)",
    )
    parser.add_argument(
        "--if-missing",
        action="store_true",
        help="skip models the BentoML store already holds (used by make serve)",
    )
    parser.add_argument(
        "--fallback-synthetic",
        action="store_true",
        help="if the real dataset cannot be reached, warn loudly and use synthetic data",
    )
    parser.add_argument("--json", action="store_true", help="with 'list': print JSON")
    return parser


def _list_variants(as_json: bool) -> int:
    from training.models import get_model_module

    rows = []
    for name in MODEL_NAMES:
        module = get_model_module(name)
        for variant in module.VARIANTS:
            model = module.build_model(variant, module.Config())
            rows.append(
                {
                    "model": name,
                    "variant": variant,
                    "params": int(model.count_params()),
                    "default": variant == module.DEFAULT_VARIANT,
                }
            )
    if as_json:
        print(json.dumps(rows, indent=2))
    else:
        for row in rows:
            mark = "*" if row["default"] else " "
            print(f"{row['model']:<11} {row['variant']:<18}{mark} {row['params']:>10,d}")
    return 0


def _print_summary(results) -> None:
    header = ("model", "variant", "data", "metric", "value", "time", "export")
    rows = [
        (
            r.model,
            r.variant,
            r.data,
            r.metric,
            f"{r.value:.4f}",
            f"{r.seconds:.0f}s",
            str(r.export_path),
        )
        for r in results
    ]
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    print()
    print(line.format(*header))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print(line.format(*row))


def _report(out: Path, include_store: bool) -> int:
    from training.report import collect_exports, markdown_table, write_report

    rows = collect_exports(out, include_store=include_store)
    markdown, png = write_report(rows, out)
    print(markdown_table(rows), end="")
    print(f"\n{len(rows)} exports; written {markdown} and {png}")
    return 0


def _options(args: argparse.Namespace):
    """The :class:`training.pipeline.TrainOptions` the command line asks for."""
    from training.pipeline import TrainOptions

    return TrainOptions(
        epochs=args.epochs,
        batch_size=args.batch_size,
        optimizer=args.optimizer,
        learning_rate=args.learning_rate,
        patience=args.patience,
        validation_split=args.validation_split,
        word_index=args.word_index,
        quick=args.quick,
        synthetic=args.synthetic,
        data_path=args.data_path,
        out=args.out,
        seed=args.seed,
        # A comparison only measures: it does not replace what the service serves.
        register=not args.no_register and args.target != "compare",
        synthetic_fallback=args.fallback_synthetic,
    )


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    if args.target == "list":
        return _list_variants(args.json)
    if args.target == "report":
        return _report(args.out, include_store=not args.no_register)
    if args.target == "compare":
        if args.model not in MODEL_NAMES:
            print(f"error: compare needs a model: one of {', '.join(MODEL_NAMES)}", file=sys.stderr)
            return EXIT_USAGE
        from training.models import get_model_module

        variants = list(get_model_module(args.model).VARIANTS)
        names = [(args.model, v) for v in variants]
    elif args.model is not None:
        print(f"error: unexpected argument {args.model!r}", file=sys.stderr)
        return EXIT_USAGE
    if args.target not in ("all", "compare") and args.target not in MODEL_NAMES:
        print(
            f"error: unknown model {args.target!r} (choose from {', '.join(MODEL_NAMES)}, all, list)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    if args.target == "all" and args.variant:
        print("error: --variant needs a single model, not 'all'", file=sys.stderr)
        return EXIT_USAGE
    if args.target == "all" and args.data_path:
        print("error: --data-path needs a single model, not 'all'", file=sys.stderr)
        return EXIT_USAGE
    if args.word_index is not None and args.data_path is None:
        print("error: --word-index needs --data-path (a local imdb or reuters npz)", file=sys.stderr)
        return EXIT_USAGE
    if args.word_index is not None and not args.word_index.is_file():
        print(f"error: {args.word_index}: no such file", file=sys.stderr)
        return EXIT_USAGE
    # A folder is fine too: the extracted CIFAR tarball, for instance.
    if args.data_path is not None and not args.data_path.exists():
        print(f"error: {args.data_path}: no such file or directory", file=sys.stderr)
        return EXIT_USAGE

    from training import data as data_lib
    from training.pipeline import (
        UsageError,
        resolve_recipe,
        resolve_variant,
        train_model,
    )

    if args.target != "compare":
        target_names = list(MODEL_NAMES) if args.target == "all" else [args.target]
        names = [(name, args.variant) for name in target_names]
    try:
        for name, variant in names:
            _, resolved = resolve_variant(name, variant)
            # Reject bad --learning-rate, --validation-split, ... before any training.
            resolve_recipe(name, resolved, _options(args))
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE

    if args.if_missing and not args.no_register:
        from training.registry import registered_names

        present = registered_names()
        skipped = [n for n, _ in names if n in present]
        names = [(n, v) for n, v in names if n not in present]
        if skipped:
            print(f"already registered, not retrained: {', '.join(skipped)}")
        if not names:
            return 0

    options = _options(args)
    results = []
    for name, variant in names:
        print(f"=== training {name} {variant or ''} ===", flush=True)
        try:
            results.append(train_model(name, dataclasses.replace(options, variant=variant)))
        except data_lib.DataError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_USAGE
    _print_summary(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
