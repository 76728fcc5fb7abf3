"""deploy/k8s checked offline: every overlay rendered (tools/kustomize.py, no kubectl), every
object validated against the Kubernetes 1.33 schemas (kubernetes-validate, strict: unknown
fields fail), and the invariants that tie the manifests to the real service."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import kubernetes_validate
import pytest
import yaml

from tools.kustomize import render

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
KUBERNETES = "1.33.0"  # one minor version, pinned with kubernetes-validate in pyproject.toml
OVERLAYS = [
    "base",
    "overlays/keda",
    "overlays/servicemonitor",
    "overlays/gpu",
    "overlays/inflight",
    "overlays/shared-store",
]
# Custom resources: kubernetes-validate ships only Kubernetes' own schemas.
CUSTOM = {"ScaledObject": "keda.sh/v1alpha1", "ServiceMonitor": "monitoring.coreos.com/v1"}


def objects(overlay: str) -> dict[str, dict]:
    return {obj["kind"]: obj for obj in render(K8S / overlay) if obj["kind"] != "Service"}


def services(overlay: str = "base") -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in render(K8S / overlay) if o["kind"] == "Service"}


def container(overlay: str = "base") -> dict:
    [main] = objects(overlay)["Deployment"]["spec"]["template"]["spec"]["containers"]
    return main


def env(overlay: str = "base") -> dict[str, str]:
    """The container's variables (those from a Secret as ``secret:<name>/<key>``)."""
    found = {}
    for e in container(overlay)["env"]:
        if "value" in e:
            found[e["name"]] = e["value"]
        else:
            ref = e["valueFrom"]["secretKeyRef"]
            found[e["name"]] = f"secret:{ref['name']}/{ref['key']}"
    return found


def adapter_rules() -> dict[str, dict]:
    values = yaml.safe_load((K8S / "base" / "prometheus-adapter-values.yaml").read_text())
    return {rule["name"]["as"]: rule for rule in values["rules"]["custom"]}


def series_in(query: str) -> set[str]:
    """The metric names a PromQL query reads (ours all start with keras_serving_)."""
    return set(re.findall(r"\b(keras_serving_[a-z_]+)\{", query))


def rule_series(rule: dict) -> set[str]:
    """What an adapter rule reads: its seriesQuery's series (``<<.Series>>`` in the
    metricsQuery) and any series its metricsQuery names itself."""
    return series_in(rule["seriesQuery"]) | series_in(rule["metricsQuery"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_is_valid_for_kubernetes(overlay):
    rendered = render(K8S / overlay)
    assert rendered
    for obj in rendered:
        if obj["kind"] in CUSTOM:
            assert obj["apiVersion"] == CUSTOM[obj["kind"]]
            continue
        kubernetes_validate.validate(obj, KUBERNETES, strict=True)


def test_the_validator_rejects_what_kubernetes_would():
    deployment = objects("base")["Deployment"]
    deployment["spec"]["template"]["spec"]["containers"][0]["startupProb"] = {}  # a typo
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES, strict=True)


def test_the_renderer_refuses_what_it_does_not_implement(tmp_path):
    (tmp_path / "kustomization.yaml").write_text("resources: []\nnamePrefix: x-\n")
    with pytest.raises(ValueError, match="namePrefix"):
        render(tmp_path)
    (tmp_path / "kustomization.yaml").write_text(
        "patches:\n  - patch: '{kind: Deployment, metadata: {name: nobody}}'\n"
    )
    with pytest.raises(ValueError, match="matches no object"):
        render(tmp_path)


def test_grace_covers_the_prestop_sleep_and_the_drain():
    spec = objects("base")["Deployment"]["spec"]["template"]["spec"]
    command = container()["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pre_stop, drain = float(command[1]), float(env()["SERVICE_GRACE_S"])
    assert spec["terminationGracePeriodSeconds"] >= pre_stop + drain + 5  # + a margin


def test_workers_follow_the_cpu_limit():
    main = container()
    assert env()["SERVICE_WORKERS"] == "auto"
    limit = main["resources"]["limits"]["cpu"]
    assert re.fullmatch(r"\d+", str(limit)), "a whole CPU count: cpu.max gives that many workers"
    assert main["resources"]["requests"] == main["resources"]["limits"]  # Guaranteed QoS


def test_ports_and_selectors_line_up():
    main = container()
    ports = {p["name"]: p["containerPort"] for p in main["ports"]}
    # BentoML's HTTP port and the gRPC door's GRPC_PORT, as the image exposes them.
    bentofile = yaml.safe_load((ROOT / "bentofile.yaml").read_text())
    grpc_port = {e["name"]: e["value"] for e in bentofile["envs"]}["GRPC_PORT"]
    assert ports == {"http": 3000, "grpc": int(grpc_port)} and env()["GRPC_PORT"] == grpc_port
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert main[probe]["httpGet"]["port"] in ports, probe
    pod_labels = objects("base")["Deployment"]["spec"]["template"]["metadata"]["labels"]
    http, grpc = services()["keras-serving"], services()["keras-serving-grpc"]
    assert http["spec"]["ports"][0]["targetPort"] == "http"
    assert grpc["spec"]["clusterIP"] == "None"  # headless: DNS gives every pod, per-call balancing
    assert grpc["spec"]["ports"][0]["targetPort"] == "grpc"
    for selector in (
        http["spec"]["selector"],
        grpc["spec"]["selector"],
        objects("base")["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"],
    ):
        assert selector.items() <= pod_labels.items()
    monitor = objects("overlays/servicemonitor")["ServiceMonitor"]["spec"]
    assert monitor["selector"]["matchLabels"].items() <= http["metadata"]["labels"].items()
    assert not monitor["selector"]["matchLabels"].items() <= grpc["metadata"]["labels"].items()
    assert [e["port"] for e in monitor["endpoints"]] == ["http"]


def test_model_config_is_mounted_where_the_service_reads_it(tmp_path):
    from service.versions import load_model_config

    path = Path(env()["SERVICE_MODEL_CONFIG"])
    [mount] = [m for m in container()["volumeMounts"] if m["name"] == "model-config"]
    assert path.parent == Path(mount["mountPath"]) and "subPath" not in mount  # updates live
    [volume] = objects("base")["Deployment"]["spec"]["template"]["spec"]["volumes"]
    config_map = objects("base")["ConfigMap"]
    assert volume["configMap"]["name"] == config_map["metadata"]["name"]
    copy = tmp_path / path.name
    copy.write_text(config_map["data"][path.name])
    assert load_model_config(str(copy)).models == {}  # it parses: every model's latest


def test_gpu_overlay_gives_one_card_and_one_worker_per_pod():
    main = container("overlays/gpu")
    assert main["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert main["resources"]["requests"]["nvidia.com/gpu"] == 1
    gpu_env = env("overlays/gpu")
    assert gpu_env["SERVICE_GPUS"] == "1" and gpu_env["SERVICE_WORKERS"] == "auto"
    assert "gpu" in main["image"]


def test_keda_replaces_the_hpa():
    keda = objects("overlays/keda")
    assert "HorizontalPodAutoscaler" not in keda  # KEDA makes its own; two would fight
    [trigger] = keda["ScaledObject"]["spec"]["triggers"]
    assert trigger["type"] == "prometheus"
    assert keda["ScaledObject"]["spec"]["scaleTargetRef"]["name"] == "keras-serving"


def hpa_metric(overlay: str) -> str:
    [metric] = objects(overlay)["HorizontalPodAutoscaler"]["spec"]["metrics"]
    assert metric["type"] == "Pods"  # per pod, averaged by the HPA
    return metric["pods"]["metric"]["name"]


def test_every_autoscaling_metric_has_an_adapter_rule():
    rules = adapter_rules()
    for overlay in ("base", "overlays/inflight"):
        assert hpa_metric(overlay) in rules, overlay
    for rule in rules.values():
        for label in ("namespace", "pod"):
            assert rule["resources"]["overrides"][label] == {"resource": label}


@pytest.mark.integration
def test_the_autoscalers_read_series_a_live_server_exports(server):
    """The HPA's metric, through its adapter rule, and KEDA's query name series that
    ``/metrics`` of a real ``bentoml serve`` exports (after one request)."""
    with httpx.Client(base_url=server.url, timeout=30) as http:
        assert http.post("/imdb/sentiment", json={"texts": ["fine"]}).status_code == 200
        for probe in ("/readyz", "/livez"):  # the Deployment's probe paths
            assert http.get(probe).status_code == 200, probe
        text = http.get("/metrics").text
    exported = set(re.findall(r"^(keras_serving_[a-z_]+)[{ ]", text, re.M))
    rules = adapter_rules()
    for overlay in ("base", "overlays/inflight"):
        wanted = rule_series(rules[hpa_metric(overlay)])
        assert wanted and wanted <= exported, (overlay, wanted - exported)
    [trigger] = objects("overlays/keda")["ScaledObject"]["spec"]["triggers"]
    wanted = series_in(trigger["metadata"]["query"])
    assert wanted and wanted <= exported, wanted - exported


def test_shared_store_overlay_serves_the_volume_and_watches_it():
    main = container("overlays/shared-store")
    store_env = env("overlays/shared-store")
    assert store_env["SERVICE_MODEL_SOURCE"] == "store" and float(store_env["SERVICE_POLL_S"]) > 0
    assert main["args"][:3] == ["bentoml", "serve", "service.service:ModelServer"]
    [mount] = [m for m in main["volumeMounts"] if m["name"] == "models"]
    assert mount["readOnly"] is True and mount["subPath"] == "models"
    spec = objects("overlays/shared-store")["Deployment"]["spec"]["template"]["spec"]
    [volume] = [v for v in spec["volumes"] if v["name"] == "models"]
    claim = objects("overlays/shared-store")["PersistentVolumeClaim"]
    assert volume["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    assert "ReadOnlyMany" in claim["spec"]["accessModes"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_variable_the_manifests_set_is_a_documented_knob(overlay):
    """A typo in a variable name would be ignored by the service: each one the Deployment
    sets must be in the README's Configuration table (which lists what the code reads)."""
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("## Configuration") :]
    table = table[: table.index("\n## ", 1)]
    documented = set(re.findall(r"`((?:SERVICE|GRPC|BENTOML)_[A-Z_]+)`", table))
    ours = {name for name in env(overlay) if name.startswith(("SERVICE_", "GRPC_"))}
    assert ours and ours <= documented, ours - documented


def test_tokens_come_from_an_optional_secret():
    """The base applies without the Secret (no auth) and picks the tokens up once it exists."""
    refs = [e["valueFrom"]["secretKeyRef"] for e in container()["env"] if "valueFrom" in e]
    assert {env()[name] for name in ("SERVICE_AUTH_TOKENS", "SERVICE_ADMIN_TOKEN")} == {
        f"secret:{ref['name']}/{ref['key']}" for ref in refs
    }
    assert all(ref["optional"] is True for ref in refs)
