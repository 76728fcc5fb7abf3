"""The ``hostile`` chaos family's verdicts, on recorded outcomes (no server), and its
requests as built."""

from __future__ import annotations

from loadtest.chaos import parse_args
from loadtest.chaos_verdicts import Outcome, exit_status
from loadtest.hostile import string_tensor_request
from loadtest.hostile_verdicts import (
    LIVEZ_MS,
    METRICS_GROWTH_BYTES,
    answers_summary,
    judge_burst,
    judge_metrics,
    judge_probe,
    judge_reload,
    judge_trickle,
    render_probes,
)


def answer(status: str, sent: float = 0.0, ms: float = 10.0, detail: str = "") -> Outcome:
    return Outcome("grpc", sent, sent + ms / 1000, status, detail)


def livez(*ms: float, status: str = "200") -> list[Outcome]:
    return [Outcome("livez", i, i + m / 1000, status) for i, m in enumerate(ms)]


def test_a_refused_probe_with_a_quick_livez_meets_its_targets() -> None:
    row = judge_probe("varint", [answer("INVALID_ARGUMENT", ms=40)], {"INVALID_ARGUMENT"},
                      livez(5, 12, 30), tracebacks=0, max_s=0.5)  # fmt: skip
    assert row.met, row.missed
    assert row.answer == "INVALID_ARGUMENT" and round(row.livez_ms) == 30
    assert abs(row.seconds - 0.04) < 1e-9


def test_every_shared_target_can_be_missed() -> None:
    row = judge_probe(
        "varint",
        [answer("UNKNOWN", ms=1500, detail="Exception calling application")],
        {"INVALID_ARGUMENT"},
        livez(5, 1330) + livez(3, status="connection"),
        tracebacks=2,
        max_s=0.5,
    )
    text = "\n".join(row.missed)
    assert "1 x UNKNOWN (server fault" in text
    assert "2 traceback(s)" in text
    assert f"/livez took 1330 ms (target {LIVEZ_MS:.0f} ms)" in text
    assert "1 /livez probes failed (connection)" in text
    assert "answered after 1.50 s (target 0.5 s)" in text
    assert not row.met and row.as_row().failures == 5


def test_no_livez_probe_is_a_miss_not_a_pass() -> None:
    assert not judge_probe("x", [answer("400")], {"400"}, [], tracebacks=0).met


def test_answers_are_summarised_by_count() -> None:
    many = [answer("404")] * 998 + [answer("400")] * 2
    assert answers_summary(many) == "998 x 404, 2 x 400"
    assert answers_summary([answer("OK")]) == "OK"


def test_metrics_growth() -> None:
    base = judge_probe("paths", [answer("404")], {"404"}, livez(3), 0)
    assert judge_metrics(base, 50_000, 50_000 + METRICS_GROWTH_BYTES).met
    grown = judge_probe("paths", [answer("404")], {"404"}, livez(3), 0)
    judge_metrics(grown, 50_000, 361_000_000)
    assert "/metrics grew by 360,950,000 bytes" in grown.missed[0]


def test_trickling_connections_must_all_be_closed_soon_after_the_timeout() -> None:
    closed = [answer("closed")] * 3
    ok = judge_trickle(judge_probe("t", closed, {"closed"}, livez(2), 0), 3, [10.2, 10.5, 11.0], 10)
    assert ok.met
    kept = judge_trickle(
        judge_probe("t", closed, {"closed"}, livez(2), 0), 3, [10.2, None, 31.0], 10
    )
    assert "1 connections never closed" in kept.missed
    assert "1 closed only after 31.0 s" in kept.missed
    assert not judge_trickle(judge_probe("t", closed, {"closed"}, livez(2), 0), 0, [], 10).met


def test_reload_without_then_with_the_token() -> None:
    assert judge_reload(answer("PERMISSION_DENIED"), answer("OK"), livez(4), 0).met
    open_door = judge_reload(answer("OK"), answer("OK"), livez(4), 0)
    assert "without the token: OK, not PERMISSION_DENIED" in open_door.missed
    broken = judge_reload(answer("PERMISSION_DENIED"), answer("INVALID_ARGUMENT"), livez(4), 0)
    assert any(m.startswith("with the token: INVALID_ARGUMENT") for m in broken.missed)


def test_the_burst_allows_no_refusal() -> None:
    answers = [answer("200")] * 31 + [answer("503", detail="1024 rows are already queued")]
    row = judge_burst(judge_probe("burst", answers, {"200"}, livez(4), 0), answers)
    assert any("1 of 32 refused (1024 rows are already queued)" in m for m in row.missed)
    fine = [answer("200")] * 32
    assert judge_burst(judge_probe("burst", fine, {"200"}, livez(4), 0), fine).met


def test_the_table_has_one_row_per_probe_and_the_chaos_rows_carry_the_verdict() -> None:
    rows = [
        judge_probe("varint", [answer("INVALID_ARGUMENT")], {"INVALID_ARGUMENT"}, livez(4), 0),
        judge_probe("version", [answer("500")], {"400"}, livez(4), 0),
    ]
    table = render_probes(rows)
    assert "| varint | INVALID_ARGUMENT | 0.01 | 4 | met |" in table
    assert "| version | 500 | 0.01 | 4 | **missed** (1) |" in table
    assert exit_status([row.as_row() for row in rows]) == 1
    assert exit_status([rows[0].as_row()]) == 0


def test_the_string_tensor_request_is_a_varint_that_never_ends() -> None:
    from tfserving_api._proto.tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest.FromString(string_tensor_request(256_001))
    content = request.inputs["text"].tensor_content
    assert request.model_spec.name == "imdb" and len(content) == 256_001
    assert content[:-1] == b"\xff" * 256_000 and content[-1:] == b"\x01"


def test_chaos_knows_the_hostile_family() -> None:
    assert parse_args(["--scenarios", "hostile"]).scenarios == ("hostile",)


def test_the_v2_probes_are_refused_by_the_servers_codec_before_any_work() -> None:
    import pytest

    from loadtest.hostile import v2_bytes_flood, v2_huge_shape_request
    from service import v2_codec
    from service.catalog import ModelInfo, SignatureSpec, TensorSpec
    from service.errors import InvalidInput, PayloadTooLarge
    from service.grpc_codec import Limits
    from service.v2_grpc import infer_request
    from service.v2_rest import parse_infer_request
    from tfserving_api._proto.inference import grpc_predict_v2_pb2

    text = TensorSpec("text", "string", (None,))
    signature = SignatureSpec("predict_text", {"text": text}, {})
    info = ModelInfo("imdb", 1, "v", "imdb:x", (), {"predict_text": signature})
    limits = Limits(64, 8 << 20)
    body, header = v2_bytes_flood(size=1_000_000)
    request, _, _ = parse_infer_request(body, str(header))
    with pytest.raises(InvalidInput, match="bytes left after 64 BYTES elements"):
        v2_codec.decode_inputs(request.inputs, signature, limits)
    message = grpc_predict_v2_pb2.ModelInferRequest.FromString(v2_huge_shape_request())
    with pytest.raises(PayloadTooLarge, match="rows exceed the cap of 64"):
        v2_codec.decode_inputs(infer_request(message).inputs, signature, limits)
    assert info.user_signature == "predict_text"
