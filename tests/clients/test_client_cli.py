"""`python -m clients`: argument parsing, readable output, one-line errors and exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from clients import __main__ as cli
from clients.errors import Unavailable
from clients.http import Client as HttpClient

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["sentiment", "a", "b"], {"command": "sentiment", "texts": ["a", "b"], "grpc": False}),
        (["sentiment", "--grpc", "a"], {"texts": ["a"], "grpc": True}),
        (
            ["sentiment", "a", "--grpc", "--url", "h:1"],
            {"texts": ["a"], "grpc": True, "url": "h:1"},
        ),
        (["topic", "oil", "--top-k", "5"], {"texts": ["oil"], "top_k": 5}),
        (["translate", "the cat"], {"sentences": ["the cat"]}),
        (
            ["forecast", "0.5", "-1", "2e-3", "--horizon", "4"],
            {"window": [0.5, -1.0, 0.002], "horizon": 4},
        ),
        (
            ["classify", "a.png", "b.npy", "--model", "mnist"],
            {"files": [Path("a.png"), Path("b.npy")], "model": "mnist", "top_k": 1},
        ),
        (
            ["sentiment", "x", "--timeout", "2.5", "--retries", "1", "--json"],
            {"timeout": 2.5, "retries": 1, "json": True},
        ),
        (["sentiment", "x"], {"version": None, "label": None}),
        (["topic", "oil", "--version", "2"], {"version": 2, "label": None}),
        (["classify", "a.npy", "--label", "canary"], {"version": None, "label": "canary"}),
        (["sentiment", "x", "--token", "t0k"], {"token": "t0k"}),
    ],
)
def test_parse(argv: list[str], expected: dict) -> None:
    args = vars(cli.build_parser().parse_args(argv))
    assert {k: args[k] for k in expected} == expected


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["sentiment"],
        ["forecast", "a"],
        ["classify", "x.png", "--model", "imagenet"],
        ["nope", "x"],
        ["sentiment", "x", "--version", "2", "--label", "stable"],
        ["forecast", "1", "--version", "latest"],
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.build_parser().parse_args(argv)
    assert exit_info.value.code == 2


@pytest.fixture
def fake_service(monkeypatch, fake_http):
    """Route the CLI's HTTP client to the fake service."""
    monkeypatch.setattr(cli, "make_client", lambda args: HttpClient(transport=fake_http, retry=1))


def test_sentiment_output(fake_service, capsys) -> None:
    assert cli.main(["sentiment", "A wonderful film", "Dull"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[0].endswith("A wonderful film")
    assert lines[0].split()[0] in ("positive", "negative")


def test_topic_output(fake_service, capsys) -> None:
    assert cli.main(["topic", "oil prices", "--top-k", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "oil prices" and len(lines) == 3 and lines[1].startswith("  ")


def test_forecast_json_output(fake_service, capsys) -> None:
    assert cli.main(["forecast", *["0.1"] * 10, "--horizon", "2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert len(result["values"]) == 2 and result["model"]["name"] == "cosine"


def test_classify_npy_and_png(fake_service, tmp_path, capsys) -> None:
    Image = pytest.importorskip("PIL.Image")
    np.save(tmp_path / "batch.npy", np.zeros((2, 28, 28, 1), np.uint8))
    Image.fromarray(np.full((40, 30, 3), 255, np.uint8)).save(tmp_path / "digit.png")
    argv = [
        "classify",
        str(tmp_path / "batch.npy"),
        str(tmp_path / "digit.png"),
        "--model",
        "mnist",
        "--top-k",
        "2",
    ]
    assert cli.main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == ["batch.npy[0]", "batch.npy[1]", "digit.png"]
    assert "(" in lines[0]  # the runner-up of top-2


def test_load_images_converts_pictures_to_the_model_format(tmp_path) -> None:
    Image = pytest.importorskip("PIL.Image")
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(tmp_path / "gray.jpg")
    names, batch = cli.load_images([tmp_path / "gray.jpg"], "cifar")
    assert names == ["gray.jpg"] and batch.shape == (1, 32, 32, 3) and batch.dtype == np.uint8


@pytest.mark.parametrize(
    ("argv", "answered"),
    [
        (["sentiment", "fine"], 1),
        (["topic", "oil", "--version", "3"], 3),
        (["translate", "the cat", "--label", "canary"], 2),
        (["forecast", *["0.1"] * 10, "--label", "stable"], 1),
    ],
)
def test_version_and_label_reach_the_server(fake_service, capsys, argv, answered) -> None:
    assert cli.main([*argv, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    model = (result[0] if isinstance(result, list) else result)["model"]
    assert model["version"] == answered


def test_unknown_label_exits_1(fake_service, capsys) -> None:
    assert cli.main(["sentiment", "x", "--label", "nightly"]) == 1
    assert capsys.readouterr().err == "error: ModelNotFound: unknown label 'nightly'\n"


def test_client_error_prints_one_line_and_exits_1(monkeypatch, capsys) -> None:
    def unavailable(args):
        raise Unavailable("cannot reach the server: connection refused")

    monkeypatch.setattr(cli, "make_client", unavailable)
    assert cli.main(["sentiment", "x"]) == 1
    err = capsys.readouterr().err
    assert err == "error: Unavailable: cannot reach the server: connection refused\n"


def test_invalid_input_exits_1(fake_service, capsys) -> None:
    assert cli.main(["forecast", "nan", "1"]) == 1
    assert capsys.readouterr().err.startswith("error: InvalidInput: window contains NaN")


def test_missing_file_exits_1(fake_service, tmp_path, capsys) -> None:
    assert cli.main(["classify", str(tmp_path / "missing.npy")]) == 1
    assert capsys.readouterr().err.startswith("error:")


@pytest.mark.parametrize("transport", [[], ["--grpc"]], ids=["http", "grpc"])
def test_unreachable_server_end_to_end(transport: list[str]) -> None:
    url = "127.0.0.1:1" if transport else "http://127.0.0.1:1"
    argv = ["sentiment", "x", "--url", url, "--retries", "1", *transport]
    result = subprocess.run(
        [sys.executable, "-m", "clients", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,  # the exit status is what the test checks
        cwd=REPO,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("error: Unavailable: cannot reach the server")
    assert len(result.stderr.strip().splitlines()) == 1


def test_grpc_cli_against_in_process_server(fake_tfs, capsys) -> None:
    _, target = fake_tfs
    assert cli.main(["translate", "the cat sleeps", "--grpc", "--url", target]) == 0
    assert capsys.readouterr().out.strip() == "the cat sleeps  ->  SLEEPS CAT THE"


def test_the_token_reaches_both_clients(monkeypatch) -> None:
    monkeypatch.setenv("KERAS_SERVING_TOKEN", "from-env")
    for argv in (["sentiment", "x"], ["sentiment", "x", "--grpc"]):
        client = cli.make_client(cli.build_parser().parse_args(argv))
        try:
            sent = (
                client._metadata["call"]
                if hasattr(client, "_metadata")
                else client._http.headers.get("authorization")
            )
            assert "Bearer from-env" in str(sent)
        finally:
            client.close()
