"""deploy/k8s/, validated offline against the bundled Kubernetes schemas and checked for consistency."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.support import REPO_ROOT

K8S = REPO_ROOT / "deploy/k8s"
# The newest schemas kubernetes-validate bundles, and the oldest release the manifests target
# (the native preStop `sleep` action is on by default from 1.30).
KUBERNETES_VERSIONS = ("1.30.0", kubernetes_validate.utils.latest_version())
MANIFESTS = sorted(p for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml")


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def resources() -> dict[str, dict[str, Any]]:
    """The default set (kustomization.yaml) by kind."""
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text(encoding="utf-8"))
    found: dict[str, dict[str, Any]] = {}
    for name in kustomization["resources"]:
        for doc in documents(K8S / name):
            assert doc["kind"] not in found, f"two {doc['kind']} in the default set"
            found[doc["kind"]] = doc
    return found


@pytest.fixture(scope="module")
def default_set() -> dict[str, dict[str, Any]]:
    return resources()


@pytest.fixture(scope="module")
def pod(default_set: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return default_set["Deployment"]["spec"]["template"]


@pytest.fixture(scope="module")
def api(pod: dict[str, Any]) -> dict[str, Any]:
    (container,) = [c for c in pod["spec"]["containers"] if c["name"] == "api"]
    return container


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: str(p.relative_to(K8S)))
def test_manifest_validates_strictly(path: Path, version: str) -> None:
    docs = documents(path)
    assert docs
    for doc in docs:
        # Raises ValidationError (unknown or misspelt fields included, strict=True) with the offending path.
        kubernetes_validate.validate(doc, version, strict=True)


def test_validation_rejects_a_misspelt_field(pod: dict[str, Any], default_set: dict[str, Any]) -> None:
    broken = yaml.safe_load(yaml.safe_dump(default_set["Deployment"]))
    container = broken["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[-1], strict=True)


def test_kustomization_lists_every_default_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text(encoding="utf-8"))
    assert sorted(kustomization["resources"]) == sorted(
        p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml"
    )
    assert set(resources()) == {
        "ConfigMap",
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
    }


def test_probes_use_the_health_endpoints(api: dict[str, Any]) -> None:
    assert api["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert api["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert api["startupProbe"]["httpGet"]["path"] == "/health/ready"
    port_names = {port["name"] for port in api["ports"]}
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert api[probe]["httpGet"]["port"] in port_names


def test_pod_runs_non_root_with_a_read_only_root_and_a_tmp_volume(pod: dict[str, Any]) -> None:
    spec = pod["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == 10001, "the uid the images create"
    assert spec["automountServiceAccountToken"] is False
    volumes = {volume["name"]: volume for volume in spec["volumes"]}
    for container in spec["containers"] + spec["initContainers"]:
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True, container["name"]
        assert context["allowPrivilegeEscalation"] is False, container["name"]
        assert context["capabilities"]["drop"] == ["ALL"], container["name"]
        assert container["resources"]["requests"], container["name"]
        assert container["resources"]["limits"], container["name"]
        assert re.search(r":\d+\.\d+|:[\w-]+-\d+\.\d+", container["image"]), container["name"]
    api = next(c for c in spec["containers"] if c["name"] == "api")
    tmp = next(m for m in api["volumeMounts"] if m["mountPath"] == "/tmp")
    assert "emptyDir" in volumes[tmp["name"]]


def test_bundle_volume_filled_by_the_init_container_is_where_the_service_looks(
    pod: dict[str, Any], api: dict[str, Any], default_set: dict[str, Any]
) -> None:
    settings = default_set["ConfigMap"]["data"]
    model_mount = next(m for m in api["volumeMounts"] if m["mountPath"] == settings["TEXTCLF_MODEL_DIR"])
    assert model_mount["readOnly"] is True
    (init,) = pod["spec"]["initContainers"]
    assert any(m["name"] == model_mount["name"] for m in init["volumeMounts"])
    assert "emptyDir" in next(v for v in pod["spec"]["volumes"] if v["name"] == model_mount["name"])


def test_configmap_settings_are_accepted_by_the_service(
    default_set: dict[str, Any], api: dict[str, Any]
) -> None:
    from service import settings as settings_module

    data = default_set["ConfigMap"]["data"]
    assert all(key.startswith("TEXTCLF_") for key in data)
    settings = settings_module.Settings.from_env(data)
    assert settings.host == "0.0.0.0"
    assert {c["configMapRef"]["name"] for c in api["envFrom"]} == {
        default_set["ConfigMap"]["metadata"]["name"]
    }
    # Every key names a real setting (a typo would be ignored silently at run time).
    fields = {f"TEXTCLF_{name.upper()}" for name in settings_module.Settings.__dataclass_fields__}
    assert set(data) <= fields, sorted(set(data) - fields)


def _cpu(quantity: str) -> float:
    return float(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def test_ort_threads_match_the_cpu_limit(default_set: dict[str, Any], api: dict[str, Any]) -> None:
    threads = int(default_set["ConfigMap"]["data"]["TEXTCLF_ORT_THREADS"])
    assert threads == int(_cpu(api["resources"]["limits"]["cpu"]))


def test_termination_grace_covers_the_pre_stop_pause_and_the_drain(
    pod: dict[str, Any], api: dict[str, Any], default_set: dict[str, Any]
) -> None:
    drain = float(default_set["ConfigMap"]["data"]["TEXTCLF_SHUTDOWN_TIMEOUT_SECONDS"])
    pause = api["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod["spec"]["terminationGracePeriodSeconds"] > pause + drain


def test_scrape_annotations_point_at_the_metrics_port(pod: dict[str, Any], api: dict[str, Any]) -> None:
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"
    assert int(annotations["prometheus.io/port"]) in {p["containerPort"] for p in api["ports"]}


def test_service_hpa_and_pdb_select_the_deployment(default_set: dict[str, Any], pod: dict[str, Any]) -> None:
    labels = pod["metadata"]["labels"]
    deployment = default_set["Deployment"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    service = default_set["Service"]
    assert service["spec"]["selector"].items() <= labels.items()
    container_ports = {p["name"] for c in pod["spec"]["containers"] for p in c["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= container_ports
    pdb = default_set["PodDisruptionBudget"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    hpa = default_set["HorizontalPodAutoscaler"]
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    # A drain must be able to evict a pod at the HPA's minimum.
    assert hpa["spec"]["minReplicas"] > pdb["spec"]["minAvailable"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert "requests" in next(c for c in pod["spec"]["containers"] if c["name"] == "api")["resources"]


def test_api_image_tag_is_the_project_version(api: dict[str, Any]) -> None:
    version = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]
    assert api["image"].endswith(f"/textclf-api:{version}")


def test_queue_time_autoscaling_option_is_wired_to_a_real_metric() -> None:
    (rules_doc,) = documents(K8S / "optional/prometheus-adapter-rules.yaml")
    rules = yaml.safe_load(rules_doc["data"]["config.yaml"])["rules"]
    (rule,) = rules
    (hpa,) = documents(K8S / "optional/hpa-queue-time.yaml")
    pods_metric = next(m for m in hpa["spec"]["metrics"] if m["type"] == "Pods")
    assert pods_metric["pods"]["metric"]["name"] == rule["name"]["as"]
    series = set(re.findall(r"(textclf_[a-z_]+?)_(?:sum|count)\{", rule["metricsQuery"]))
    contract = (REPO_ROOT / "docs/contracts.md").read_text(encoding="utf-8")
    assert series == {"textclf_queue_duration_seconds"}
    assert "`textclf_queue_duration_seconds`" in contract
