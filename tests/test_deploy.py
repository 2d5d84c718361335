"""The deployment examples in deploy/ hold together with the server they deploy, checked without a
cluster: the Kubernetes manifests against the API's schema (kubernetes-validate), and every value that
must agree with sasr (its flags, routes, metric, drain timing, Ray Serve config) against sasr itself."""

from __future__ import annotations

import types
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from sasr.cli import config_from_args, parse_args
from sasr.config import ServerConfig
from sasr.metrics import Metrics
from sasr.server import http

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
# The oldest Kubernetes the test extra's floor (kubernetes-validate>=1.30) has a schema for, and the newest
# the installed one has.
KUBERNETES_VERSIONS = sorted({"1.30", kubernetes_validate.latest_version()})
EXIT_MARGIN_S = 5  # after the drain, for the process to close its sockets and exit before SIGKILL


def sasr_manifest() -> dict[str, dict]:
    """deploy/k8s/sasr.yaml's objects by kind (one of each)."""
    docs = [doc for doc in yaml.safe_load_all((DEPLOY / "k8s" / "sasr.yaml").read_text()) if doc]
    by_kind = {doc["kind"]: doc for doc in docs}
    assert len(by_kind) == len(docs), "one object per kind"
    return by_kind


def container(deployment: dict) -> dict:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return only


def served_config(deployment: dict) -> ServerConfig:
    """The settings the pod's `sasr serve` runs with, parsed by sasr's own parser (a bad flag exits)."""
    sasr = container(deployment)
    assert sasr["command"] == ["sasr", "serve"]
    return config_from_args(parse_args(["serve", *sasr["args"]]))


def port_number(sasr: dict, port: int | str) -> int:
    """A probe's or Service's port (a number or a container port's name) as the container's port number."""
    numbers = {p["name"]: p["containerPort"] for p in sasr["ports"]}
    assert port in numbers or port in numbers.values(), f"port {port} is not one of {numbers}"
    return numbers.get(port, port)


def get_paths() -> set[str]:
    return {path for route in http.ROUTES if "GET" in route.http_methods for path in route.paths}


def cpus(quantity: str | float) -> float:
    """A Kubernetes CPU quantity ("4", 4, "500m") in CPUs."""
    text = str(quantity)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_manifest_is_valid_kubernetes(version):
    """Strict: a misspelt or misplaced field (which kubectl would drop or reject) fails too."""
    manifest = sasr_manifest()
    assert set(manifest) == {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"}
    for doc in manifest.values():
        kubernetes_validate.validate(doc, version, strict=True)


def test_objects_find_the_pods():
    """The Service, HPA and PDB all refer to the Deployment's pods, and the Service reaches sasr's port."""
    manifest = sasr_manifest()
    deployment = manifest["Deployment"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert manifest["Service"]["spec"]["selector"].items() <= labels.items()
    assert manifest["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    target = manifest["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    (port,) = manifest["Service"]["spec"]["ports"]
    assert port_number(container(deployment), port["targetPort"]) == served_config(deployment).port


def test_container_runs_sasr_serve_with_its_flags():
    deployment = sasr_manifest()["Deployment"]
    config = served_config(deployment)
    assert config.host == "0.0.0.0"  # reachable from outside the pod
    assert config.port in [p["containerPort"] for p in container(deployment)["ports"]]


def test_probes_and_scrape_ask_routes_the_server_serves():
    deployment = sasr_manifest()["Deployment"]
    sasr = container(deployment)
    port = served_config(deployment).port
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        get = sasr[probe]["httpGet"]
        assert get["path"] == "/health", probe  # the route that turns 503 on a drain or a failed engine
        assert port_number(sasr, get["port"]) == port, probe
    assert "/health" in get_paths()
    scrape = deployment["spec"]["template"]["metadata"]["annotations"]
    assert scrape["prometheus.io/path"] in get_paths()
    assert int(scrape["prometheus.io/port"]) == port


def test_termination_grace_covers_the_drain():
    """SIGTERM comes after the preStop sleep, and the drain then takes up to --shutdown-timeout (sasr's
    default when the args leave it out): a shorter grace period SIGKILLs live sessions before they get
    their final text. A draining pod's 503 must take it out of the Service at the first probe."""
    deployment = sasr_manifest()["Deployment"]
    sasr = container(deployment)
    sleep = sasr["lifecycle"]["preStop"]["exec"]["command"]
    assert sleep[0] == "sleep"
    shutdown_timeout = served_config(deployment).shutdown_timeout  # without the flag: ServerConfig's default
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace >= float(sleep[1]) + shutdown_timeout + EXIT_MARGIN_S
    assert sasr["readinessProbe"]["failureThreshold"] == 1


async def test_hpa_scales_on_the_gauge_the_server_exports():
    """The HPA's metric is a gauge that /metrics renders, counting live sessions, and the adapter rule
    exposes it under that name. A grep of the server's source would pass for a name in a comment or a
    counter; this renders the real handler's output instead, over a stand-in state (two sessions), since a
    real app needs a model. tests/test_stream.py watches the same gauge follow a real session."""
    manifest = sasr_manifest()
    (metric,) = manifest["HorizontalPodAutoscaler"]["spec"]["metrics"]
    assert metric["type"] == "Pods"
    name = metric["pods"]["metric"]["name"]
    state = types.SimpleNamespace(metrics=Metrics(), sessions={"a": None, "b": None},
                                  engine=types.SimpleNamespace(render_metrics=lambda: ""))
    families = {family.name: family for family in text_string_to_metric_families(await http.metrics.fn(state))}
    assert families[name].type == "gauge"
    assert [sample.value for sample in families[name].samples] == [2]

    # a target at or above --max-sessions never scales: a full pod refuses the sessions that would count
    assert float(metric["pods"]["target"]["averageValue"]) < served_config(manifest["Deployment"]).max_sessions

    values = yaml.safe_load((DEPLOY / "k8s" / "prometheus-adapter-values.yaml").read_text())
    (rule,) = values["rules"]["custom"]
    assert rule["name"]["as"] == name
    assert rule["seriesQuery"].startswith(name + "{")
    assert set(rule["resources"]["overrides"]) == {"namespace", "pod"}


def ray_service() -> dict:
    (service,) = yaml.safe_load_all((DEPLOY / "k8s" / "rayservice.yaml").read_text())
    return service


def ray_pod_specs(service: dict) -> list[dict]:
    cluster = service["spec"]["rayClusterConfig"]
    return [group["template"] for group in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]]


def test_rayservice_deploys_the_ray_serve_config():
    """The RayService runs deploy/ray/serve.yaml's config: the two never drift apart."""
    serve_config = yaml.safe_load((DEPLOY / "ray" / "serve.yaml").read_text())
    assert yaml.safe_load(ray_service()["spec"]["serveConfigV2"]) == serve_config


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_rayservice_is_well_formed(version):
    """RayService is KubeRay's CRD, which kubernetes-validate has no schema for: its own fields are
    checked here by hand, and its pod templates (core PodTemplateSpecs) against Kubernetes' schema."""
    service = ray_service()
    assert (service["apiVersion"], service["kind"]) == ("ray.io/v1", "RayService")
    assert service["metadata"]["name"]
    spec = service["spec"]
    assert isinstance(spec["serveConfigV2"], str)  # KubeRay takes the Serve config as a YAML string
    cluster = spec["rayClusterConfig"]
    assert cluster["rayVersion"]
    assert "rayStartParams" in cluster["headGroupSpec"]
    for group in cluster["workerGroupSpecs"]:
        assert group["groupName"] and "rayStartParams" in group
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    for template in ray_pod_specs(service):
        kubernetes_validate.validate({"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "ray"},
                                      "template": template}, version, strict=True)


def test_ray_pods_share_image_and_serve_settings():
    """Ray needs the same Ray and Python on every node, and Ray Serve reads its RAY_SERVE_* variables
    on each node as Ray starts (one list, so enabling HAProxy stays a one-line change)."""
    containers = [template["spec"]["containers"][0] for template in ray_pod_specs(ray_service())]
    assert len({c["image"] for c in containers}) == 1
    assert all(c.get("env") == containers[0].get("env") for c in containers)


def test_ray_workers_hold_the_most_replicas():
    """The Ray autoscaler adds worker pods only up to maxReplicas: Serve's max_replicas must fit in them,
    or its autoscaling stalls with replicas pending."""
    service = ray_service()
    (app,) = yaml.safe_load(service["spec"]["serveConfigV2"])["applications"]
    (deployment,) = app["deployments"]
    needed = deployment["autoscaling_config"]["max_replicas"] * deployment["ray_actor_options"]["num_cpus"]
    workers = service["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    held = sum(group["maxReplicas"] * cpus(group["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"])
               for group in workers)
    assert held >= needed


def test_ray_serve_args_are_sasr_settings():
    """The application's args are ServerConfig fields of the right types (sasr.ray_serve refuses others)."""
    pytest.importorskip("ray")
    from ray.serve.schema import ServeDeploySchema

    from sasr.ray_serve import settings

    serve_config = yaml.safe_load(ray_service()["spec"]["serveConfigV2"])
    ServeDeploySchema.parse_obj(serve_config)  # Ray's own check of the options' types
    (app,) = serve_config["applications"]
    assert app["import_path"] == "sasr.ray_serve:app"
    config = settings(app["args"])
    (deployment,) = app["deployments"]
    assert deployment["max_ongoing_requests"] == config.max_sessions + config.max_queued_requests
