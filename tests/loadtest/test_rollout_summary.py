"""The rollout's figures from what its clients saw (no server): who switched once, when the
new version first and fully answered, and the p99 of each window."""

from __future__ import annotations

import pytest

from loadtest.rollout import Answer, Rollout


def _rollout() -> Rollout:
    result = Rollout(old=1, new=2, register_started=10.0, registered_at=12.0)
    for t in range(20):  # client 0: v1 until 14 s, then v2; each answer takes 10 ms
        result.answers.append(Answer(0, "http", float(t), 0.01, 1 if t < 14 else 2))
    for t in range(20):  # client 1: v1, v2, v1 again: not a single switch
        version = 2 if t in (13, 14) else 1
        result.answers.append(Answer(1, "grpc", t + 0.5, 0.02 if t < 10 else 0.2, version))
    result.answers.append(Answer(1, "grpc", 19.9, 0.01, None, "UNAVAILABLE"))
    return result


def test_switches_times_and_percentiles_come_from_the_answers() -> None:
    result = _rollout()
    assert result.switched_once() == {1: [1, 2, 1]}
    assert [a.error for a in result.failures] == ["UNAVAILABLE"]
    assert result.first_new() == pytest.approx(13.5 + 0.2 - 12.0)
    assert result.all_new() == pytest.approx(14.01 - 12.0)
    assert result.p99_ms(0.0, 10.0) == pytest.approx(20.0)  # ten 10 ms and ten 20 ms answers
    assert result.p99_ms(30.0, 40.0) is None
    assert result.worst_window_p99_ms(10.0, 12.0) == pytest.approx(10 + 0.99 * 190)
    summary = result.summary()
    assert summary["failures"] == 1 and summary["clients_not_switching_once"] == {1: [1, 2, 1]}
