"""Where every trained export stands against the seeds' published results.

``python -m training report`` collects the exports in the exports folder and in the BentoML
store, and writes one table (``report.md``) and one bar chart (``report.png``) next to the
exports. Results on synthetic data are labelled as such and never compared with the seeds'
figures, which were measured on the real datasets.

Typical usage::

    rows = collect_exports(Path("exports"), include_store=True)
    markdown_path, png_path = write_report(rows, Path("exports"))
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training import plots

# The metric each model is judged by (the first of metadata["metrics"] otherwise).
HEADLINE_METRIC = {"cosine": "mse", "translator": "bleu"}


@dataclass(frozen=True)
class ReportRow:
    model: str
    variant: str
    version: int
    synthetic: bool
    source: str  # the dataset source: "synthetic", "keras.datasets.imdb", a file, ...
    metric: str
    value: float
    published: float | None  # the seed's figure; None when none is on record or synthetic
    best_epoch: int | None
    stopped_epoch: int | None
    epochs: int | None  # the budget
    seconds: float | None
    location: str  # the export folder or the store tag

    @property
    def difference(self) -> float | None:
        """Ours minus the seed's (real data only)."""
        return None if self.published is None else self.value - self.published


def _published(model: str, variant: str) -> float | None:
    from training.models import get_model_module

    try:
        return getattr(get_model_module(model), "PUBLISHED_RESULTS", {}).get(variant)
    except KeyError:  # an export of a model this checkout does not know
        return None


def row_from_metadata(metadata: dict[str, Any], location: str) -> ReportRow:
    """One report row from an export's ``metadata.json`` content.

    Raises:
        KeyError: the metadata lacks the contract's fields.
    """
    model, variant = metadata["model"], metadata["variant"]
    metrics = metadata["metrics"]
    metric = HEADLINE_METRIC.get(model, next(iter(metrics)))
    dataset = metadata["dataset"]
    synthetic = bool(dataset["synthetic"])
    training = metadata.get("training") or {}
    return ReportRow(
        model=model,
        variant=variant,
        version=int(metadata["version"]),
        synthetic=synthetic,
        source=str(dataset.get("source", "")),
        metric=metric,
        value=float(metrics[metric]),
        # Synthetic results say the pipeline works, not how good the model is: not compared.
        published=None if synthetic else _published(model, variant),
        best_epoch=training.get("best_epoch"),
        stopped_epoch=training.get("stopped_epoch"),
        epochs=training.get("epochs"),
        seconds=training.get("seconds"),
        location=location,
    )


def _read(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def collect_exports(exports: Path, include_store: bool = True) -> list[ReportRow]:
    """Every export in ``exports`` (``<model>/<version>/metadata.json``) and in the store.

    An export registered in the store and still in the folder is listed once.

    Args:
        exports: the exports folder (``--out``).
        include_store: also read the BentoML store (``$BENTOML_HOME``).

    Returns:
        The rows, by model, variant and version.
    """
    found: dict[tuple[str, str], ReportRow] = {}
    for path in sorted(Path(exports).glob("*/*/metadata.json")):
        metadata = _read(path)
        if metadata is None:
            continue
        try:
            row = row_from_metadata(metadata, str(path.parent))
        except (KeyError, TypeError, ValueError):
            continue
        found[
            metadata.get("export_path", str(path.parent.resolve())), metadata.get("created_at", "")
        ] = row
    if include_store:
        for tag, metadata in _store_metadata():
            key = (metadata.get("export_path", tag), metadata.get("created_at", ""))
            if key not in found:
                try:
                    found[key] = row_from_metadata(metadata, tag)
                except (KeyError, TypeError, ValueError):
                    continue
    return sorted(found.values(), key=lambda r: (r.model, r.variant, r.synthetic, r.version))


def _store_metadata() -> list[tuple[str, dict[str, Any]]]:
    try:
        from tfserving_api.store import readable_models

        models = readable_models()  # a broken entry is skipped, not the whole store
    except Exception:  # noqa: BLE001 - no store, or an unreadable one: report the folder only
        return []
    out = []
    for model in models:
        metadata = _read(Path(model.path) / "metadata.json")
        if metadata is not None:
            out.append((str(model.tag), metadata))
    return out


def _fmt(value: float | None, digits: int = 3, signed: bool = False) -> str:
    if value is None:
        return "—"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def markdown_table(rows: list[ReportRow]) -> str:
    """The report as a markdown table (one row per export)."""
    lines = [
        (
            "| model | variant | version | dataset | metric | ours | seed's published "
            "| difference | epochs (best / run / budget) | time |"
        ),
        "|---|---|---:|---|---|---:|---:|---:|---|---:|",
    ]
    for r in rows:
        dataset = "**synthetic**" if r.synthetic else f"real ({r.source})"
        if r.synthetic:
            published = "not compared (synthetic)"
        else:
            published = _fmt(r.published) if r.published is not None else "none on record"
        epochs = " / ".join(
            "?" if e is None else str(e) for e in (r.best_epoch, r.stopped_epoch, r.epochs)
        )
        seconds = "—" if r.seconds is None else f"{r.seconds:.0f} s"
        lines.append(
            f"| {r.model} | {r.variant} | {r.version} | {dataset} | {r.metric} | {_fmt(r.value, 4)} "
            f"| {published} | {_fmt(r.difference, signed=True)} | {epochs} | {seconds} |"
        )
    return "\n".join(lines) + "\n"


def write_report(rows: list[ReportRow], out: Path) -> tuple[Path, Path]:
    """Writes ``report.md`` and ``report.png`` into ``out``.

    Returns:
        The two paths.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    markdown = out / "report.md"
    markdown.write_text(
        "# Trained exports against the seeds' published results\n\n"
        "Synthetic results show that the pipeline learns; they are never compared with the "
        "seeds' figures, which were measured on the real datasets.\n\n" + markdown_table(rows)
    )
    png = out / "report.png"
    plots.plot_report(
        [
            (f"{r.model}/{r.variant} v{r.version}", r.value, r.published, r.synthetic)
            for r in rows
            if r.metric == "accuracy"
        ],
        png,
    )
    return markdown, png
