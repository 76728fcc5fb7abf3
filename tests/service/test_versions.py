"""Version policies and the model config file (YAML, TOML, TF Serving's ModelServerConfig)."""

from __future__ import annotations

import pytest
from tfserving_api._proto.tensorflow_serving.config import model_server_config_pb2

from service.versions import (
    ConfigError,
    ModelConfig,
    VersionPolicy,
    config_from_proto,
    load_model_config,
    parse_config,
    parse_policy,
)

STORED = [3, 1, 2, 5]


@pytest.mark.parametrize(
    ("raw", "selected"),
    [
        (None, [5]),
        ("latest", [5]),
        ({"latest": 2}, [3, 5]),
        ({"latest": 9}, [1, 2, 3, 5]),
        ("all", [1, 2, 3, 5]),
        ([1, 3, 4], [1, 3]),  # 4 is not stored
        ({"specific": [2]}, [2]),
        (["2"], [2]),
    ],
)
def test_policy_selects_versions(raw, selected):
    assert parse_policy(raw, "versions").select(STORED) == selected


def test_no_stored_version_selects_nothing():
    assert VersionPolicy().select([]) == []


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("newest", "models.imdb.versions: expected latest, all"),
        ({"latest": 0}, "models.imdb.versions.latest: expected a positive integer"),
        ({"latest": "2"}, "models.imdb.versions.latest"),
        ([], "models.imdb.versions: expected"),
        (["x"], "models.imdb.versions: version 'x' is not an integer"),
        ([-1], "version -1 is negative"),
        ([True], "is not an integer"),
    ],
)
def test_bad_policies_name_the_field(raw, message):
    with pytest.raises(ConfigError, match=message):
        parse_config({"models": {"imdb": {"versions": raw}}})


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ([], "expected a mapping with one key, 'models'"),
        ({"model": {}}, "expected a mapping with one key, 'models'"),
        ({"models": []}, "models: expected a mapping"),
        ({"models": {"imdb": {"version": "all"}}}, "models.imdb: expected a mapping with"),
        ({"models": {"imdb": {"labels": ["stable"]}}}, "models.imdb.labels: expected a mapping"),
        ({"models": {"imdb": {"labels": {"stable": "x"}}}}, "models.imdb.labels.stable"),
        (
            {"models": {"imdb": {"versions": [1], "labels": {"canary": 2}}}},
            r"models.imdb.labels.canary: version 2 is not served \(versions: \[1\]\)",
        ),
    ],
)
def test_bad_configs_name_the_field(raw, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(raw)


def test_models_the_config_does_not_name_serve_their_latest():
    config = parse_config({"models": {"imdb": {"versions": "all", "labels": {"stable": 1}}}})
    assert config.for_model("imdb") == ModelConfig(VersionPolicy(kind="all"), {"stable": 1})
    assert config.for_model("cifar") == ModelConfig()


@pytest.mark.parametrize(
    ("name", "text"),
    [
        (
            "models.yaml",
            "models:\n  imdb:\n    versions: {latest: 2}\n    labels: {stable: 1, canary: 2}\n",
        ),
        (
            "models.toml",
            "[models.imdb]\nversions = {latest = 2}\nlabels = {stable = 1, canary = 2}\n",
        ),
    ],
)
def test_yaml_and_toml_files(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    imdb = load_model_config(path).for_model("imdb")
    assert imdb.policy == VersionPolicy(latest=2)
    assert dict(imdb.labels) == {"stable": 1, "canary": 2}


def test_unreadable_files_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="SERVICE_MODEL_CONFIG=.*missing.yaml"):
        load_model_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[models.imdb\n")
    with pytest.raises(ConfigError, match="bad.toml"):
        load_model_config(bad)


def test_tf_serving_model_server_config():
    proto = model_server_config_pb2.ModelServerConfig()
    imdb = proto.model_config_list.config.add(name="imdb", base_path="/models/imdb")
    imdb.model_version_policy.specific.versions.extend([1, 2])
    imdb.version_labels["stable"] = 1
    cifar = proto.model_config_list.config.add(name="cifar")
    cifar.model_version_policy.all.SetInParent()
    mnist = proto.model_config_list.config.add(name="mnist")
    mnist.model_version_policy.latest.num_versions = 3
    proto.model_config_list.config.add(name="cosine")
    config = config_from_proto(proto)
    assert config.for_model("imdb") == ModelConfig(
        VersionPolicy(kind="specific", specific=(1, 2)), {"stable": 1}
    )
    assert config.for_model("cifar").policy.kind == "all"
    assert config.for_model("mnist").policy == VersionPolicy(latest=3)
    assert config.for_model("cosine") == ModelConfig()
    with pytest.raises(ConfigError, match="only model_config_list"):
        config_from_proto(model_server_config_pb2.ModelServerConfig(custom_model_config={}))
