"""Replicas on loopback (issue 16): real ``bentoml serve`` processes sharing one model store,
clients balancing over them. The same scenarios as ``make replicas`` (loadtest/replicas.py)."""

from __future__ import annotations

import json

import pytest

from loadtest.replicas import (
    kill_under_load,
    private_store,
    replica,
    rolling_update,
    running,
    spread,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def replicas(trained_store, tmp_path_factory):
    """Two replicas of imdb (one worker each) on a private store both share."""
    work = tmp_path_factory.mktemp("replicas")
    store = private_store(trained_store.home, work)
    first, second = replica("r1", work), replica("r2", work)
    with running(first, store), running(second, store):
        yield store, first, second, replica("r3", work)


def test_a_grpc_client_over_both_addresses_spreads_its_calls(replicas):
    _, first, second, _ = replicas
    result = spread(first, second, calls=200)
    print("\nspread:", json.dumps(result))
    assert result["calls"] == 200
    assert result["min_share"] >= 0.3, result  # each replica answers >= 30 %


def test_kill_9_of_a_replica_under_load_fails_no_call(replicas):
    _, first, second, _ = replicas
    result = kill_under_load(first, second)
    print("\nkill:", json.dumps(result))
    assert result["answered_after_kill"] >= 100  # the survivor took over the traffic
    assert result["failures"] == 0, result["errors"]


def test_rolling_update_on_a_shared_store_fails_no_call(replicas):
    store, _, second, third = replicas
    result = rolling_update(store, second, third)
    print("\nrolling update:", json.dumps(result))
    assert result["new_version"] == result["old_version"] + 1
    assert set(result["replica_on_new_version_s"]) == {"r2", "r3"}
    assert result["versions_after_sigterm"] == [result["new_version"]]
    assert result["answered_after_sigterm"] >= 100  # B serves everyone once A is gone
    assert result["failures"] == 0, result["errors"]
