"""The V2 model repository extension (``service.v2_repository``): the mapping onto version
policies, the admin token on both doors (in-process gRPC), and tritonclient's
``get_model_repository_index`` / ``load_model`` / ``unload_model`` against a real
``bentoml serve`` started with an admin token (cosine only, one worker)."""

from __future__ import annotations

import json

import grpc
import httpx
import pytest
import tritonclient.grpc as triton_grpc
from grpc_fakes import WINDOW
import tritonclient.http as triton_http
from test_auth import ADMIN, TOKENS
from tritonclient.utils import InferenceServerException

from service import auth
from service import v2_repository as repository
from service.errors import InvalidInput, ModelNotFound, Unsupported
from service.versions import ModelConfig, ServingConfig, VersionPolicy
from tfserving_api._proto.inference import grpc_predict_v2_pb2 as pb
from tfserving_api._proto.inference import grpc_predict_v2_pb2_grpc



class Versions:
    """A ModelVersions stand-in: only ``status()``."""

    def __init__(self, *rows: tuple[int, str, str | None]) -> None:
        self.rows = list(rows)

    def status(self) -> list[tuple[int, str, str | None]]:
        return self.rows


MODELS = {
    "imdb": Versions((1, "AVAILABLE", None), (2, "LOADING", None)),
    "cosine": Versions((3, "END", "OSError: <path> is not a SavedModel")),
}


def test_index_uses_tritons_state_names() -> None:
    assert repository.repository_index(MODELS) == [
        {"name": "cosine", "version": "3", "state": "UNAVAILABLE",
         "reason": "OSError: <path> is not a SavedModel"},
        {"name": "imdb", "version": "1", "state": "READY"},
        {"name": "imdb", "version": "2", "state": "LOADING"},
    ]  # fmt: skip
    assert repository.repository_index(MODELS, ready_only=True) == [
        {"name": "imdb", "version": "1", "state": "READY"}
    ]


CURRENT = ServingConfig(models={"cosine": ModelConfig(labels={"stable": 3})})


@pytest.mark.parametrize(
    ("parameter", "policy", "labels"),
    [
        ('{"version_policy": {"all": {}}}', VersionPolicy(kind="all"), {}),
        ('{"version_policy": {"latest": {"num_versions": 2}}}', VersionPolicy(latest=2), {}),
        ('{"version_policy": {"specific": {"versions": [1, 2]}}}',
         VersionPolicy(kind="specific", specific=(1, 2)), {}),
        ({"versions": "all", "labels": {"canary": 2}}, VersionPolicy(kind="all"), {"canary": 2}),
        ('{"name": "imdb"}', VersionPolicy(), {}),
    ],
)  # fmt: skip
def test_load_config_replaces_the_models_policy_and_labels(parameter, policy, labels) -> None:
    config = repository.load_config(CURRENT, "imdb", MODELS, parameter)
    assert config.for_model("imdb") == ModelConfig(policy=policy, labels=labels)
    assert config.for_model("cosine") == CURRENT.for_model("cosine")  # the others stay


def test_load_without_config_keeps_the_config_in_force() -> None:
    assert repository.load_config(CURRENT, "cosine", MODELS) is CURRENT


@pytest.mark.parametrize(
    ("name", "parameter", "error", "fragment"),
    [
        ("nope", None, ModelNotFound, "model 'nope' is not served"),
        ("imdb", "{", InvalidInput, "config: not valid JSON"),
        ("imdb", "[1]", InvalidInput, "config: expected a JSON object"),
        ("imdb", '{"max_batch_size": 8}', InvalidInput, "config.max_batch_size: not supported"),
        ("imdb", '{"name": "cosine"}', InvalidInput, "config.name: 'cosine' is not 'imdb'"),
        ("imdb", '{"versions": "all", "version_policy": {"all": {}}}', InvalidInput, "not both"),
        ("imdb", '{"version_policy": {"newest": {}}}', InvalidInput, "'newest' is not latest"),
        ("imdb", '{"version_policy": {"latest": {"num_versions": 0}}}', InvalidInput,
         "expected a positive integer"),
        ("imdb", '{"labels": {"": 1}}', InvalidInput, "must be a non-empty string"),
    ],
)  # fmt: skip
def test_bad_loads_name_the_field(name, parameter, error, fragment) -> None:
    with pytest.raises(error) as caught:
        repository.load_config(CURRENT, name, MODELS, parameter)
    assert fragment in caught.value.message


def test_file_overrides_and_unload_are_refused() -> None:
    with pytest.raises(InvalidInput, match="model files cannot be uploaded"):
        repository.config_parameter({"config": "{}", "file:1/model.savedmodel": b"x"})
    assert repository.config_parameter({"config": "{}"}) == "{}"
    with pytest.raises(Unsupported, match="every served model keeps a version"):
        repository.refuse_unload("imdb", MODELS)
    with pytest.raises(ModelNotFound):
        repository.refuse_unload("nope", MODELS)


# ---------------------------------------------------------------- gRPC in-process, with auth


def test_grpc_repository_calls_are_admin_calls(fake_grpc) -> None:
    served = fake_grpc(auth=auth.AuthSettings(admin_token=ADMIN, tokens=TOKENS), ready=True)
    target, reloads = served.target, served.reloads
    admin = {"authorization": f"Bearer {ADMIN}"}
    inference = {"authorization": f"Bearer {TOKENS[0]}"}
    client = triton_grpc.InferenceServerClient(target)
    try:
        assert client.is_server_live() and client.is_server_ready()  # probes stay open
        with pytest.raises(InferenceServerException) as caught:
            client.is_model_ready("cosine")
        assert caught.value.status() == "StatusCode.UNAUTHENTICATED"
        assert client.is_model_ready("cosine", headers=inference)
        tensor = triton_grpc.InferInput("window", [1, 10], "FP32")
        tensor.set_data_from_numpy(WINDOW)
        result = client.infer("cosine", [tensor], headers=inference)
        assert result.as_numpy("forecast").tolist() == [45.0]
        for call in (
            lambda h: client.get_model_repository_index(headers=h),
            lambda h: client.load_model("cosine", headers=h),
            lambda h: client.unload_model("cosine", headers=h),
        ):
            with pytest.raises(InferenceServerException) as caught:
                call(inference)  # an inference token is not the admin token
            assert caught.value.status() == "StatusCode.PERMISSION_DENIED"
        assert reloads == []
        index = client.get_model_repository_index(headers=admin, as_json=True)
        assert index["models"] == [{"name": "cosine", "version": "1", "state": "READY"}]
        client.load_model("cosine", headers=admin, config='{"version_policy": {"all": {}}}')
        assert len(reloads) == 1 and reloads[0].for_model("cosine").policy.kind == "all"
        with pytest.raises(InferenceServerException) as caught:
            client.load_model("nope", headers=admin)
        assert caught.value.status() == "StatusCode.NOT_FOUND"
        with pytest.raises(InferenceServerException) as caught:
            client.load_model("cosine", headers=admin, config='{"version_policy": []}')
        assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"
        with pytest.raises(InferenceServerException) as caught:
            client.unload_model("cosine", headers=admin)
        assert caught.value.status() == "StatusCode.UNIMPLEMENTED"
        assert "every served model keeps a version" in caught.value.message()
        assert len(reloads) == 1
    finally:
        client.close()


def test_grpc_repository_is_refused_without_an_admin_token_configured(fake_grpc) -> None:
    served = fake_grpc(auth=auth.AuthSettings(), ready=True)
    target, reloads = served.target, served.reloads
    with grpc.insecure_channel(target) as channel:
        stub = grpc_predict_v2_pb2_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.RepositoryModelLoad(
                pb.RepositoryModelLoadRequest(model_name="cosine"),
                timeout=5,
                metadata=(("authorization", "Bearer anything"),),
            )
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "SERVICE_ADMIN_TOKEN" in caught.value.details()
    assert reloads == []


# ---------------------------------------------------------------- a real server


@pytest.fixture(scope="module")
def admin_server(trained_store, server_factory, tmp_path_factory):
    log = tmp_path_factory.mktemp("v2-repository") / "serve.log"
    with server_factory(
        trained_store,
        log,
        SERVICE_MODELS="cosine",
        SERVICE_WORKERS="1",
        SERVICE_BATCH_BUCKETS="1",  # one window at a time: one bucket to compile
        SERVICE_ADMIN_TOKEN=ADMIN,
    ) as (running, _):
        yield running


@pytest.mark.integration
def test_load_with_labels_then_infer_by_label_over_both_doors(admin_server) -> None:
    admin = {"authorization": f"Bearer {ADMIN}"}
    http = triton_http.InferenceServerClient(admin_server.url.removeprefix("http://"))
    rpc = triton_grpc.InferenceServerClient(f"127.0.0.1:{admin_server.grpc_port}")
    try:
        assert "model_repository" in http.get_server_metadata()["extensions"]
        with pytest.raises(InferenceServerException) as caught:
            http.get_model_repository_index()
        assert caught.value.status() == "403"
        index = http.get_model_repository_index(headers=admin)
        versions = [row["version"] for row in index if row["state"] == "READY"]
        assert versions and {row["name"] for row in index} == {"cosine"}
        version = versions[-1]
        with pytest.raises(InferenceServerException) as caught:
            http.load_model("cosine", headers=admin, config='{"labels": {"stable": 9999}}')
        assert caught.value.status() == "400" and "has no version 9999" in caught.value.message()

        labels = json.dumps({"labels": {"stable": int(version)}})
        http.load_model("cosine", headers=admin, config=labels)
        tensor = triton_http.InferInput("window", [1, 10], "FP32")
        tensor.set_data_from_numpy(WINDOW)
        by_label = http.infer("cosine", [tensor], model_version="stable")
        assert by_label.get_response()["model_version"] == version
        tensor = triton_grpc.InferInput("window", [1, 10], "FP32")
        tensor.set_data_from_numpy(WINDOW)
        answer = rpc.infer("cosine", [tensor], model_version="stable").get_response()
        assert answer.model_version == version
        response = httpx.post(
            f"{admin_server.url}/v2/models/cosine/labels/stable/infer",
            json={"inputs": [{"name": "window", "datatype": "FP32", "shape": [1, 10],
                              "data": WINDOW.ravel().tolist()}]},
            timeout=30,
        )  # fmt: skip
        assert response.status_code == 200 and response.json()["model_version"] == version

        rpc.load_model("cosine", headers=admin, config="{}")  # labels gone again
        with pytest.raises(InferenceServerException) as caught:
            rpc.infer("cosine", [tensor], model_version="stable")
        assert caught.value.status() == "StatusCode.NOT_FOUND"
        with pytest.raises(InferenceServerException) as caught:
            http.unload_model("cosine", headers=admin)
        assert caught.value.status() == "501"
        assert http.is_model_ready("cosine") and http.is_server_ready()
    finally:
        http.close()
        rpc.close()
