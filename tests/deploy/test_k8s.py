"""deploy/k8s checked without a cluster: every built-in kind against the pinned Kubernetes release's
schemas (kubernetes-validate, strict: an unknown field is an error), the KEDA ScaledObject against a
small schema of the fields we use plus the HorizontalPodAutoscaler KEDA makes from it, and what a typo
across files would break (labels, ports, Secret keys, probe paths, metric names, settings)."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml

from tests.deploy.helpers import ROOT, exported_names, served_routes

K8S = ROOT / "deploy/k8s"
KUBERNETES_VERSION = "1.33.0"  # the oldest release the manifests must work on (probes, PDB policy/v1, HPA v2)
PROMTOOL = shutil.which("promtool")
kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="pip install -e '.[dev]' brings it")

# The ScaledObject fields these manifests use (keda.sh/v1alpha1, KEDA 2.x), closed against typos.
_STRICT = {"type": "object", "additionalProperties": False}
SCALED_OBJECT_SCHEMA = {
    **_STRICT,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "keda.sh/v1alpha1"},
        "kind": {"const": "ScaledObject"},
        "metadata": {"type": "object", "required": ["name"]},
        "spec": {
            **_STRICT,
            "required": ["scaleTargetRef", "triggers"],
            "properties": {
                "scaleTargetRef": {
                    **_STRICT,
                    "required": ["name"],
                    "properties": {"name": {"type": "string"}, "kind": {"type": "string"}, "apiVersion": {}},
                },
                "minReplicaCount": {"type": "integer", "minimum": 0},
                "maxReplicaCount": {"type": "integer", "minimum": 1},
                "pollingInterval": {"type": "integer", "minimum": 1},
                "cooldownPeriod": {"type": "integer", "minimum": 0},
                "advanced": {
                    **_STRICT,
                    "properties": {
                        "horizontalPodAutoscalerConfig": {
                            **_STRICT,
                            "properties": {"behavior": {"type": "object"}, "name": {"type": "string"}},
                        }
                    },
                },
                "triggers": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        **_STRICT,
                        "required": ["type", "metadata"],
                        "properties": {
                            "type": {"const": "prometheus"},
                            "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
                            "metadata": {
                                **_STRICT,
                                "required": ["serverAddress", "query", "threshold"],
                                "properties": {
                                    "serverAddress": {"type": "string", "pattern": "^https?://"},
                                    "query": {"type": "string"},
                                    # KEDA reads trigger metadata as strings: a bare 0.1 is rejected
                                    "threshold": {"type": "string", "pattern": r"^[0-9.]+$"},
                                    "activationThreshold": {"type": "string", "pattern": r"^[0-9.]+$"},
                                    "ignoreNullValues": {"enum": ["true", "false"]},
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}


def documents() -> list[tuple[str, dict]]:
    """(file name, resource) for every manifest the kustomization lists."""
    listed = yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"]
    return [(name, doc) for name in listed for doc in yaml.safe_load_all((K8S / name).read_text()) if doc]


def _one(kind: str) -> dict:
    (found,) = [doc for _, doc in documents() if doc["kind"] == kind]
    return found


def _container() -> dict:
    (container,) = _one("Deployment")["spec"]["template"]["spec"]["containers"]
    return container


def test_kustomization_lists_every_manifest():
    listed = yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"]
    on_disk = sorted(p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(listed) == on_disk
    kinds = {doc["kind"] for _, doc in documents()}
    assert {"Deployment", "Service", "Secret", "PodDisruptionBudget", "ScaledObject"} <= kinds


def test_builtin_kinds_validate_against_the_pinned_release():
    checked = []
    for name, doc in documents():
        if doc["apiVersion"].startswith("keda.sh/"):
            continue  # a CRD: no schema in kubernetes-validate; checked below
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{name}: {doc['kind']} {doc['metadata']['name']}: {exc.message} at {list(exc.path)}")
        checked.append(doc["kind"])
    assert len(checked) == len(documents()) - 1


def test_validation_can_fail():
    deployment = _one("Deployment")
    typo = {**deployment, "spec": {**deployment["spec"], "replica": 2}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(typo, KUBERNETES_VERSION, strict=True)
    jsonschema = pytest.importorskip("jsonschema")
    scaled = _one("ScaledObject")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**scaled, "spec": {**scaled["spec"], "maxReplicas": 3}}, SCALED_OBJECT_SCHEMA)


def test_scaled_object_and_the_autoscaler_keda_makes_from_it():
    jsonschema = pytest.importorskip("jsonschema")
    scaled = _one("ScaledObject")
    jsonschema.validate(scaled, SCALED_OBJECT_SCHEMA)
    spec = scaled["spec"]
    deployment = _one("Deployment")
    assert spec["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert spec["scaleTargetRef"].get("kind", "Deployment") == "Deployment"
    assert 1 <= spec["minReplicaCount"] <= deployment["spec"]["replicas"] <= spec["maxReplicaCount"]
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": f"keda-hpa-{scaled['metadata']['name']}"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": spec["scaleTargetRef"]["name"]},
            "minReplicas": spec["minReplicaCount"],
            "maxReplicas": spec["maxReplicaCount"],
            "behavior": spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"],
        },
    }
    kubernetes_validate.validate(hpa, KUBERNETES_VERSION, strict=True)


def _trigger_query() -> str:
    (trigger,) = _one("ScaledObject")["spec"]["triggers"]
    return trigger["metadata"]["query"]


def test_the_autoscaling_query_uses_the_queue_wait_metric():
    from prometheus_client import generate_latest

    from app.metrics import Metrics

    used = set(re.findall(r"\bvpt_[a-z_]+", _trigger_query()))
    assert used == {"vpt_queue_wait_seconds_bucket"}
    assert used <= exported_names(generate_latest(Metrics().registry).decode())


def test_the_autoscaling_query_is_valid_promql(tmp_path):
    if PROMTOOL is None:
        pytest.skip("promtool absent (CI installs the Debian package prometheus)")
    rules = {"groups": [{"name": "keda", "rules": [{"record": "vpt:queue_wait_p90", "expr": _trigger_query()}]}]}
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(rules))
    result = subprocess.run(
        [PROMTOOL, "check", "rules", str(tmp_path / "rules.yml")], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_service_and_pdb_select_the_deployment_pods():
    deployment = _one("Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    service = _one("Service")
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert _one("PodDisruptionBudget")["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    container_ports = {p["name"]: p["containerPort"] for p in _container()["ports"]}
    for port in service["spec"]["ports"]:
        target = port["targetPort"]
        assert target in container_ports or target in container_ports.values()


def test_container_port_and_probes_match_the_server():
    from app.config import Settings

    container = _container()
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    dockerfile_port = int(re.search(r"\bVPT_PORT=(\d+)", (ROOT / "Dockerfile").read_text()).group(1))
    assert ports == {"http": dockerfile_port}
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert "VPT_PORT" not in env and "VPT_HOST" not in env  # the image's 0.0.0.0:8000
    probes = {kind: container[kind] for kind in ("startupProbe", "livenessProbe", "readinessProbe")}
    for kind, probe in probes.items():
        assert probe["httpGet"]["port"] in ports, kind
        assert ("GET", probe["httpGet"]["path"]) in served_routes(), f"{kind}: no such route"
    assert probes["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert probes["readinessProbe"]["httpGet"]["path"] == "/readyz"
    startup = probes["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300, "model loading takes minutes"
    grace = _one("Deployment")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > Settings.model_fields["request_timeout_s"].default
    annotations = _one("Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(ports["http"])
    assert ("GET", annotations["prometheus.io/path"]) in served_routes()


def test_gpu_secret_and_volumes():
    from app.config import Settings

    container = _container()
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    secret = _one("Secret")
    keys = set(secret.get("stringData", {})) | set(secret.get("data", {}))
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e}
    assert {"VPT_TOKEN", "VPT_REGISTRY"} <= refs.keys()
    for name, ref in refs.items():
        assert ref["name"] == secret["metadata"]["name"] and ref["key"] in keys, name
    from app.registry import is_database_url

    assert is_database_url(Settings(registry=secret["stringData"][refs["VPT_REGISTRY"]["key"]]).registry_path)
    assert all("REPLACE-ME" in value for value in secret["stringData"].values()), "example values must look fake"
    fields = {f"VPT_{name.upper()}" for name in Settings.model_fields}
    names = {e["name"] for e in container["env"]}
    assert names <= fields, f"not settings of vpt-serve: {sorted(names - fields)}"
    pod = _one("Deployment")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounted = {m["mountPath"]: m for m in container["volumeMounts"]}
    env = {e["name"]: e.get("value") for e in container["env"]}
    weights = mounted[env["VPT_CACHE_DIR"]]
    claim = volumes[weights["name"]]["persistentVolumeClaim"]["claimName"]
    assert claim == _one("PersistentVolumeClaim")["metadata"]["name"]
    assert env["VPT_DATA_DIR"] in mounted
