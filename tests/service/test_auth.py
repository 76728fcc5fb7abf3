"""``service.auth``: the admin token on ``HandleReloadConfigRequest``, optional inference
tokens on every door (HTTP middleware, gRPC interceptor), the open probes, and the clients'
``token=`` / ``admin_token=``; a reload loading more than ``SERVICE_MAX_VERSIONS`` is refused."""

from __future__ import annotations

import grpc
import pytest
from grpc_fakes import WINDOW, predict_request
from grpc_health.v1 import health_pb2, health_pb2_grpc
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from clients import errors as client_errors
from clients.grpc import Client as GrpcClient
from clients.http import Client as HttpClient
from service import auth
from service import grpc_server as gs
from service.model_versions import ModelVersions
from service.versions import (
    ConfigError,
    ModelConfig,
    load_model_config,
    parse_config,
)
from tfserving_api._proto.tensorflow_serving.apis import (
    get_model_metadata_pb2,
    inference_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    prediction_service_pb2_grpc,
)
from tfserving_api._proto.tensorflow_serving.apis.get_model_status_pb2 import GetModelStatusRequest

ADMIN = "adm1n-secret"
TOKENS = ("t0ken-a", "t0ken-b")


# ---------------------------------------------------------------- the pure checks


@pytest.mark.parametrize(
    ("value", "token"),
    [
        ("Bearer abc", "abc"),
        ("bearer  abc ", "abc"),
        (b"Bearer abc", "abc"),
        ("Basic abc", None),
        ("Bearer", None),
        ("abc", None),
        (None, None),
    ],
)
def test_bearer_token(value, token) -> None:
    assert auth.bearer_token(value) == token


def test_admin_calls_are_refused_until_a_token_is_configured() -> None:
    with pytest.raises(auth.PermissionDenied, match="SERVICE_ADMIN_TOKEN=<secret>") as caught:
        auth.check_admin(f"Bearer {ADMIN}", "Reload", auth.AuthSettings())
    assert caught.value.grpc_code == "PERMISSION_DENIED" and int(caught.value.error_code) == 403
    settings = auth.AuthSettings(admin_token=ADMIN)
    for wrong in (None, "Bearer nope", f"Basic {ADMIN}", f"Bearer {ADMIN}x", "Bearer "):
        with pytest.raises(auth.PermissionDenied, match="needs the admin token") as caught:
            auth.check_admin(wrong, "Reload", settings)
        assert ADMIN not in caught.value.message
    auth.check_admin(f"Bearer {ADMIN}", "Reload", settings)


def test_inference_is_open_without_tokens_and_needs_one_with_them() -> None:
    auth.check_inference(None, auth.AuthSettings())
    settings = auth.AuthSettings(admin_token=ADMIN, tokens=TOKENS)
    for good in ("Bearer t0ken-a", "Bearer t0ken-b", f"Bearer {ADMIN}"):
        auth.check_inference(good, settings)
    for bad in (None, "Bearer t0ken", "Bearer t0ken-a,t0ken-b", "t0ken-a"):
        with pytest.raises(auth.Unauthenticated):
            auth.check_inference(bad, settings)


def test_grpc_metadata_pairs_and_require_admin() -> None:
    settings = auth.AuthSettings(admin_token=ADMIN)
    auth.require_admin((("x-other", "1"), ("authorization", f"Bearer {ADMIN}")), "R", settings)
    with pytest.raises(auth.PermissionDenied):
        auth.require_admin((("x-other", "1"),), "R", settings)
    auth.require_admin_header(f"Bearer {ADMIN}", "R", settings)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, auth.AuthSettings()),
        (
            {"SERVICE_ADMIN_TOKEN": " s3 ", "SERVICE_AUTH_TOKENS": "a, b,,", "SERVICE_METRICS_AUTH": "1"},
            auth.AuthSettings(admin_token="s3", tokens=("a", "b"), metrics_auth=True),
        ),
        ({"SERVICE_METRICS_AUTH": "yes"}, "SERVICE_METRICS_AUTH"),
        ({"SERVICE_AUTH_TOKENS": "a\x01b"}, "SERVICE_AUTH_TOKENS: a token must be printable"),
    ],
)
def test_settings_from_the_environment(monkeypatch, env, expected) -> None:
    for name in (auth.ADMIN_TOKEN_ENV, auth.AUTH_TOKENS_ENV, auth.METRICS_AUTH_ENV):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    if isinstance(expected, str):
        with pytest.raises(ValueError, match=expected):
            auth.AuthSettings.from_env()
    else:
        assert auth.AuthSettings.from_env() == expected


# ---------------------------------------------------------------- HTTP: one middleware


def _app(settings: auth.AuthSettings) -> TestClient:
    async def ok(request):
        return PlainTextResponse("ok")

    paths = ["/livez", "/readyz", "/metrics", "/imdb/sentiment", "/v1/models/imdb", "/docs",
             "/v2/health/live", "/v2/health/ready", "/v2/models/imdb/infer"]  # fmt: skip
    app = Starlette(routes=[Route(p, ok, methods=["GET", "POST"]) for p in paths])
    return TestClient(auth.RequireToken(app, settings))


@pytest.mark.parametrize(
    ("metrics_auth", "path", "header", "status"),
    [
        (False, "/livez", None, 200),
        (False, "/readyz", None, 200),
        (False, "/metrics", None, 200),
        (True, "/metrics", None, 401),
        (True, "/metrics", "Bearer t0ken-a", 200),
        (False, "/imdb/sentiment", None, 401),
        (False, "/imdb/sentiment", "Bearer wrong", 401),
        (False, "/imdb/sentiment", "Bearer t0ken-b", 200),
        (False, "/v1/models/imdb", None, 401),
        (False, "/v1/models/imdb", f"Bearer {ADMIN}", 200),
        (False, "/docs", None, 401),
        (False, "/v2/health/live", None, 200),  # the Open Inference Protocol's probes
        (False, "/v2/health/ready", None, 200),
        (False, "/v2/models/imdb/infer", None, 401),
        (False, "/v2/models/imdb/infer", "Bearer t0ken-a", 200),
        (False, "/a/door/added/later", None, 401),  # closed by default, before any 404
    ],
)
def test_http_doors_need_a_token_and_the_probes_do_not(metrics_auth, path, header, status):
    settings = auth.AuthSettings(admin_token=ADMIN, tokens=TOKENS, metrics_auth=metrics_auth)
    headers = {"authorization": header} if header else {}
    response = _app(settings).get(path, headers=headers)
    assert response.status_code == status
    if status == 401:
        assert "Bearer" in response.json()["error"]
        assert response.headers["www-authenticate"].startswith("Bearer")


def test_http_is_open_without_tokens() -> None:
    assert _app(auth.AuthSettings()).get("/imdb/sentiment").status_code == 200


# ---------------------------------------------------------------- gRPC: interceptor + admin


def _reload_request() -> model_management_pb2.ReloadConfigRequest:
    from clients.model_config import model_server_config

    return model_management_pb2.ReloadConfigRequest(
        config=model_server_config({"cosine": {"versions": "all"}})
    )


def test_reload_is_permission_denied_without_an_admin_token_configured(fake_grpc) -> None:
    served = fake_grpc(auth=auth.AuthSettings(), ready=True)
    target, reloads = served.target, served.reloads
    with grpc.insecure_channel(target) as channel, pytest.raises(grpc.RpcError) as caught:
        model_service_pb2_grpc.ModelServiceStub(channel).HandleReloadConfigRequest(
            _reload_request(), timeout=5, metadata=(("authorization", "Bearer anything"),)
        )
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "SERVICE_ADMIN_TOKEN" in caught.value.details()
    assert reloads == []


def test_reload_needs_the_admin_token_from_a_stock_stub_and_from_the_client(fake_grpc) -> None:
    served = fake_grpc(auth=auth.AuthSettings(admin_token=ADMIN), ready=True)
    target, reloads = served.target, served.reloads
    with grpc.insecure_channel(target) as channel:
        stub = model_service_pb2_grpc.ModelServiceStub(channel)
        for metadata in (None, (("authorization", "Bearer wrong"),)):
            with pytest.raises(grpc.RpcError) as caught:
                stub.HandleReloadConfigRequest(_reload_request(), timeout=5, metadata=metadata)
            assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert reloads == []
        stub.HandleReloadConfigRequest(
            _reload_request(), timeout=5, metadata=(("authorization", f"Bearer {ADMIN}"),)
        )
    assert len(reloads) == 1 and reloads[0].for_model("cosine").policy.kind == "all"
    with GrpcClient(target, retry=1) as client, pytest.raises(client_errors.PermissionDenied):
        client.reload_config({"cosine": {}})
    with GrpcClient(target, retry=1, admin_token=ADMIN) as client:
        client.reload_config({"cosine": {}})
        assert client.forecast(WINDOW[0].tolist()).values  # inference stays open
    assert len(reloads) == 2


def test_every_grpc_door_needs_a_token_but_health(fake_grpc) -> None:
    target = fake_grpc(auth=auth.AuthSettings(admin_token=ADMIN, tokens=TOKENS), ready=True).target
    bearer = (("authorization", "Bearer t0ken-a"),)
    with grpc.insecure_channel(target) as channel:
        prediction = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        models = model_service_pb2_grpc.ModelServiceStub(channel)
        metadata_request = get_model_metadata_pb2.GetModelMetadataRequest(
            model_spec={"name": "cosine"}, metadata_field=["signature_def"]
        )
        calls = {
            "Predict": lambda m: prediction.Predict(predict_request(), timeout=5, metadata=m),
            "GetModelMetadata": lambda m: prediction.GetModelMetadata(
                metadata_request, timeout=5, metadata=m
            ),
            "GetModelStatus": lambda m: models.GetModelStatus(
                GetModelStatusRequest(model_spec={"name": "cosine"}), timeout=5, metadata=m
            ),
            "MultiInference": lambda m: prediction.MultiInference(
                inference_pb2.MultiInferenceRequest(),
                timeout=5,
                metadata=m,
            ),
        }
        for name, call in calls.items():
            with pytest.raises(grpc.RpcError) as caught:
                call(None)
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED, name
            assert "SERVICE_AUTH_TOKENS" in caught.value.details()
        calls.pop("MultiInference")  # UNIMPLEMENTED once past the token
        for name, call in calls.items():
            assert call(bearer) is not None, name
        health = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=5
        )
        assert health.status in (health.SERVING, health.NOT_SERVING)
        # The admin call still needs the admin token, not an inference one.
        with pytest.raises(grpc.RpcError) as caught:
            models.HandleReloadConfigRequest(_reload_request(), timeout=5, metadata=bearer)
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
        models.HandleReloadConfigRequest(
            _reload_request(), timeout=5, metadata=(("authorization", f"Bearer {ADMIN}"),)
        )
    with GrpcClient(target, retry=1) as client, pytest.raises(client_errors.Unauthenticated):
        client.forecast(WINDOW[0].tolist())
    with GrpcClient(target, retry=1, token="t0ken-b", admin_token=ADMIN) as client:
        assert client.forecast(WINDOW[0].tolist()).values
        assert client.status("cosine").versions
        client.reload_config({"cosine": {}})


def test_http_client_sends_its_token() -> None:
    import httpx

    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("authorization"))
        return httpx.Response(200, json={"status": "ok"}, text=None)

    with HttpClient(transport=httpx.MockTransport(handler), token="t0ken-a", retry=1) as client:
        client.health()
    with HttpClient(transport=httpx.MockTransport(handler), retry=1) as client:
        client.health()
    assert seen == ["Bearer t0ken-a", None]


# ---------------------------------------------------------------- mutual TLS


def test_mutual_tls_needs_a_client_certificate_the_ca_signed(fake_grpc, pki) -> None:
    settings = gs.GrpcSettings(
        host="127.0.0.1",
        port=0,
        grace_s=1,
        tls_cert=pki.server,
        tls_key=pki.server_key,
        tls_ca=pki.ca,
    )
    target = fake_grpc(settings, auth=auth.AuthSettings(), ready=True).target
    common = {"root_certificates": pki.ca, "tls_server_name": "localhost", "retry": 1}
    with GrpcClient(
        f"grpcs://{target}",
        client_certificate=pki.client,
        client_key=pki.client_key,
        timeout=10,
        **common,
    ) as client:
        assert client.forecast(WINDOW[0].tolist()).values
    rogue = {"client_certificate": pki.rogue, "client_key": pki.rogue_key}
    for extra in ({}, rogue):  # no certificate, or one the CA did not sign
        with GrpcClient(f"grpcs://{target}", timeout=5, **common, **extra) as client:
            with pytest.raises(client_errors.ClientError):
                client.forecast(WINDOW[0].tolist())
    with pytest.raises(ValueError, match="go together"):
        GrpcClient(f"grpcs://{target}", client_certificate=pki.client)


# ---------------------------------------------------------------- SERVICE_MAX_VERSIONS


def _versions(max_versions: int = 4) -> ModelVersions:
    return ModelVersions("imdb", make=lambda stored: None, max_versions=max_versions)


def test_a_config_loading_more_than_the_cap_is_refused_naming_the_model() -> None:
    versions = _versions()
    stored = range(1, 11)
    config = parse_config({"models": {"imdb": {"versions": "all"}}}).for_model("imdb")
    with pytest.raises(Exception, match=r"models\.imdb\.versions: would load 10 versions of "
                       r"model 'imdb' .*SERVICE_MAX_VERSIONS=4"):  # fmt: skip
        versions.check(config, stored)
    versions.check(ModelConfig(), stored)  # latest: one version
    four = parse_config({"models": {"imdb": {"versions": {"latest": 4}}}}).for_model("imdb")
    versions.check(four, stored)
    labels = parse_config(
        {"models": {"imdb": {"versions": {"latest": 3}, "labels": {"old": 1, "older": 2}}}}
    ).for_model("imdb")
    with pytest.raises(Exception, match="would load 5 versions"):
        versions.check(labels, stored)


def test_a_store_growing_under_versions_all_loads_the_newest_up_to_the_cap() -> None:
    versions = _versions(max_versions=3)
    versions.config = parse_config(
        {"models": {"imdb": {"versions": "all", "labels": {"stable": 2}}}}
    ).for_model("imdb")
    assert versions.desired(range(1, 11)) == [2, 9, 10]  # the labelled one, then the newest
    versions.check(versions.config, range(1, 11), count=False)  # a poll: trimmed, not refused


def test_parsing_a_long_config_is_linear() -> None:
    # 200,000 versions and as many labels: quadratic membership tests would take minutes.
    many = list(range(200_000))
    raw = {"models": {"imdb": {"versions": many, "labels": {f"l{v}": v for v in many}}}}
    config = parse_config(raw).for_model("imdb")
    assert config.policy.select(range(0, 400_000, 2))[:3] == [0, 2, 4]


def test_yaml_aliases_are_refused(tmp_path) -> None:
    # Nine lines of aliases describe 10**9 labels: the config must cost what the file costs.
    lines = ["a0: &a0 {x: 1}"] + [f"a{i}: &a{i} [{', '.join([f'*a{i-1}'] * 10)}]" for i in range(1, 9)]
    path = tmp_path / "models.yaml"
    path.write_text("\n".join(lines) + "\nmodels: {imdb: {labels: *a8}}\n")
    with pytest.raises(ConfigError, match="aliases"):
        load_model_config(path)
