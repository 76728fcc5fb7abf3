"""``python -m training report``: one synthetic export and one marked real, table and chart.

The "real" export is a copy of a synthetic one whose metadata says real data: the report
only reads metadata.json, and no real dataset can be downloaded here.
"""

from __future__ import annotations

import json
import shutil

import pytest

from training.__main__ import main
from training.pipeline import TrainOptions, train_model
from training.report import collect_exports, row_from_metadata


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    out = tmp_path_factory.mktemp("exports")
    synthetic = train_model(
        "imdb",
        TrainOptions(
            variant="conv1d", synthetic=True, quick=True, epochs=1, out=out, register=False
        ),
    )
    real = synthetic.export_path.parent / "2"
    shutil.copytree(synthetic.export_path, real)
    metadata = json.loads((real / "metadata.json").read_text())
    metadata.update(version=2, export_path=str(real.resolve()))
    metadata["dataset"].update(synthetic=False, source="/data/imdb.npz")
    metadata["metrics"]["accuracy"] = 0.81
    (real / "metadata.json").write_text(json.dumps(metadata))
    return out


def test_report_writes_the_table_and_the_chart(exports, capsys):
    assert main(["report", "--out", str(exports), "--no-register"]) == 0

    table = (exports / "report.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| imdb ")]
    assert len(rows) == 2
    synthetic_row, real_row = sorted(rows, key=lambda line: "synthetic" not in line)
    # Real data is compared with the seed's published 0.853 for conv1d: 0.81 - 0.853.
    assert "real (/data/imdb.npz)" in real_row
    assert "0.853" in real_row and "-0.043" in real_row
    # Synthetic data is labelled and never compared.
    assert "**synthetic**" in synthetic_row and "not compared (synthetic)" in synthetic_row
    assert "0.853" not in synthetic_row
    assert " / 1 |" in synthetic_row  # epochs: best / run / budget of 1
    assert (exports / "report.png").stat().st_size > 5000
    assert "2 exports" in capsys.readouterr().out


def test_synthetic_rows_carry_no_published_figure(exports):
    rows = collect_exports(exports, include_store=False)
    by_kind = {row.synthetic: row for row in rows}
    assert by_kind[True].published is None and by_kind[True].difference is None
    assert by_kind[False].published == 0.853
    assert by_kind[False].difference == pytest.approx(0.81 - 0.853)


def test_a_model_without_a_published_figure_has_no_difference():
    metadata = {
        "model": "cosine",
        "variant": "lstm",
        "version": 1,
        "dataset": {"synthetic": False, "source": "series.csv"},
        "metrics": {"mse": 3.5, "mae": 1.4},
        "training": {"epochs": 100, "best_epoch": 40, "stopped_epoch": 50, "seconds": 12.0},
    }
    row = row_from_metadata(metadata, "exports/cosine/1")
    assert (row.metric, row.value, row.published, row.difference) == ("mse", 3.5, None, None)
