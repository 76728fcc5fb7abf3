"""`reload_config`: the ModelServerConfig built from a mapping, the
HandleReloadConfigRequest sent over gRPC, its refusals as typed errors, and HTTP's
clear "gRPC only"."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import httpx
import pytest

from clients import grpc as grpc_client
from clients import http as http_client
from clients.errors import InvalidInput, Unsupported
from clients.model_config import model_server_config, reload_config_request
from tfserving_api._proto.tensorflow_serving.apis import model_management_pb2
from tfserving_api._proto.tensorflow_serving.config import model_server_config_pb2


def summary(config: Any) -> dict:
    """One model's ModelConfig as plain values: policy kind and argument, labels, path."""
    policy = config.model_version_policy
    kind = policy.WhichOneof("policy_choice")
    argument = {
        "latest": lambda: policy.latest.num_versions,
        "all": lambda: None,
        "specific": lambda: list(policy.specific.versions),
    }[kind]()
    return {
        "policy": (kind, argument),
        "labels": dict(config.version_labels),
        "base_path": config.base_path,
        "platform": config.model_platform,
    }


@pytest.mark.parametrize(
    ("options", "policy", "labels"),
    [
        ({}, ("latest", 1), {}),
        (None, ("latest", 1), {}),
        ({"versions": None}, ("latest", 1), {}),
        ({"versions": "latest"}, ("latest", 1), {}),
        ({"versions": {"latest": 2}}, ("latest", 2), {}),
        ({"versions": "all"}, ("all", None), {}),
        ({"versions": [1, 2]}, ("specific", [1, 2]), {}),
        ({"versions": (3,)}, ("specific", [3]), {}),
        ({"versions": {"specific": [4, 5]}}, ("specific", [4, 5]), {}),
        (
            {"versions": [1, 2], "labels": {"stable": 1, "canary": 2}},
            ("specific", [1, 2]),
            {"stable": 1, "canary": 2},
        ),
        ({"labels": {"stable": 3}}, ("latest", 1), {"stable": 3}),
    ],
)
def test_model_config_from_mapping(options, policy, labels) -> None:
    config = model_server_config({"imdb": options})
    [entry] = config.model_config_list.config
    assert entry.name == "imdb"
    assert summary(entry) == {
        "policy": policy,
        "labels": labels,
        "base_path": "",
        "platform": "tensorflow",
    }


def test_models_keep_their_order_and_base_path() -> None:
    config = model_server_config(
        {"imdb": {"versions": "all"}, "cosine": {"base_path": "/models/cosine"}}
    )
    names = [c.name for c in config.model_config_list.config]
    assert names == ["imdb", "cosine"]
    assert config.model_config_list.config[1].base_path == "/models/cosine"


@pytest.mark.parametrize(
    ("models", "message"),
    [
        ({}, "non-empty mapping"),
        ([("imdb", {})], "non-empty mapping"),
        ({"": {}}, "model names"),
        ({"imdb": [1, 2]}, "imdb: expected a mapping"),
        ({"imdb": {"version": [1]}}, r"unknown field\(s\) \['version'\]"),
        ({"imdb": {"versions": 2}}, r"imdb.versions must be \"all\""),
        ({"imdb": {"versions": "newest"}}, "imdb.versions must be"),
        ({"imdb": {"versions": []}}, "imdb.versions must be"),
        ({"imdb": {"versions": [1, 0]}}, r"imdb.versions\[1\] must be a positive integer"),
        ({"imdb": {"versions": {"latest": "2"}}}, "imdb.versions.latest must be a positive"),
        ({"imdb": {"versions": {"specific": 3}}}, "imdb.versions.specific must be a non-empty"),
        ({"imdb": {"labels": {"stable": "1"}}}, "imdb.labels.stable must be a positive"),
        ({"imdb": {"labels": {"stable": True}}}, "imdb.labels.stable must be a positive"),
        ({"imdb": {"labels": ["stable"]}}, "imdb.labels must map"),
        ({"imdb": {"base_path": 3}}, "imdb.base_path must be a string"),
    ],
)
def test_malformed_mappings_are_invalid_input(models, message) -> None:
    with pytest.raises(InvalidInput, match=message):
        model_server_config(models)


def test_a_model_server_config_is_sent_as_it_is() -> None:
    config = model_server_config_pb2.ModelServerConfig()
    config.model_config_list.config.add(name="imdb", base_path="/m/imdb")
    request = reload_config_request(config)
    assert isinstance(request, model_management_pb2.ReloadConfigRequest)
    assert request.config == config


MOVE_STABLE = {"imdb": {"versions": [1, 2], "labels": {"stable": 1, "canary": 2}}}


def _reload(client: Any, models: Any) -> Any:
    if isinstance(client, (grpc_client.AsyncClient, http_client.AsyncClient)):

        async def once() -> Any:
            async with client:
                return await client.reload_config(models)

        return asyncio.run(once())
    with client:
        return client.reload_config(models)


@pytest.mark.parametrize("cls", [grpc_client.Client, grpc_client.AsyncClient])
def test_grpc_sends_handle_reload_config_request(fake_tfs, cls) -> None:
    servicer, target = fake_tfs
    assert _reload(cls(target, retry=1), MOVE_STABLE) is None
    [(method, request)] = servicer.calls
    assert method == "HandleReloadConfigRequest"
    assert request == reload_config_request(MOVE_STABLE)


@pytest.mark.parametrize(
    ("fail", "error", "message"),
    [
        # TF Serving answers a refused config with OK and the reason in `status`.
        ({"reload_error": (3, "label 'stable' -> version 9, not served")}, InvalidInput, "label"),
        ({"fail_with": [grpc.StatusCode.UNIMPLEMENTED]}, Unsupported, "UNIMPLEMENTED"),
    ],
    ids=["refused", "not-implemented"],
)
def test_grpc_reload_failures_are_typed(fake_tfs, fail, error, message) -> None:
    servicer, target = fake_tfs
    for attribute, value in fail.items():
        setattr(servicer, attribute, value)
    with pytest.raises(error, match=message):
        _reload(grpc_client.Client(target, retry=1), MOVE_STABLE)


def _refuse(request: httpx.Request) -> httpx.Response:
    raise AssertionError(f"sent {request.url}")


@pytest.mark.parametrize("cls", [http_client.Client, http_client.AsyncClient])
def test_http_reload_is_grpc_only(cls) -> None:
    client = cls(transport=httpx.MockTransport(_refuse), retry=1)
    with pytest.raises(Unsupported, match="gRPC-only"):
        _reload(client, MOVE_STABLE)
    assert isinstance(Unsupported("x"), NotImplementedError)


def test_malformed_mapping_is_refused_before_sending(fake_tfs) -> None:
    servicer, target = fake_tfs
    with pytest.raises(ValueError, match="unknown field"):
        _reload(grpc_client.Client(target, retry=1), {"imdb": {"label": {"stable": 1}}})
    assert servicer.calls == []
