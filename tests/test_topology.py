"""The production topology without Docker: nginx (the project's template) in front of two
gunicorn instances (the project's config) against the test database, sharing the local Redis
for the rate limit as compose's replicas share its redis service.

The two instances stand where compose's replicas stand: the name ``wsgiserver`` resolves to both
(127.0.0.2 and 127.0.0.3; .ci/run adds them to /etc/hosts, as Docker's DNS would), and the
template's upstream is ``wsgiserver:<port>``, exactly as in docker-compose.yml.
"""
import http.client
import json
import os
import shutil
import socket
import time
from pathlib import Path

import pytest
import redis
import requests
from django.conf import settings

from conftest import issue_token, manage, run_ab_test, start_gunicorn
from tests.live import free_port, start_nginx, stop, wait_until

pytestmark = [pytest.mark.live, pytest.mark.production]

REPLICAS = ("127.0.0.2", "127.0.0.3")
REDIS_URL = "redis://127.0.0.1:6379/15"  # a database of its own, emptied for each stack


def _missing():
    if not shutil.which("nginx") and not Path("/usr/sbin/nginx").exists():
        return "nginx is not installed (apt-get install nginx-light; .ci/run does)"
    try:
        found = {a[4][0] for a in socket.getaddrinfo("wsgiserver", 80, type=socket.SOCK_STREAM)}
    except socket.gaierror:
        found = set()
    if found != set(REPLICAS):
        return "'wsgiserver' does not resolve to 127.0.0.2 and 127.0.0.3 (.ci/run adds them)"
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=10).ping()
    except redis.RedisError:
        return f"no Redis answers at {REDIS_URL} (.ci/run starts one)"
    return None


if _missing():
    if os.environ.get("CI"):
        raise RuntimeError(f"CI must run the topology test: {_missing()}")
    pytest.skip(_missing(), allow_module_level=True)


@pytest.fixture
def stack(transactional_db, tmp_path, request):
    """The stack; ``@pytest.mark.parametrize("stack", [{VAR: value}], indirect=True)`` adds
    environment for the app instances."""
    static = tmp_path / "static"
    manage("collectstatic", "--noinput", "--verbosity", "0", STATIC_ROOT=str(static))
    manage("register_models")
    redis.Redis.from_url(REDIS_URL).flushdb()
    app_env = {"NUM_PROXIES": "1", "REDIS_URL": REDIS_URL,
               "ARTIFACT_STORE_DIR": str(tmp_path / "artifact-store"),
               "ARTIFACT_CACHE_DIR": str(tmp_path / "artifact-cache"),
               **getattr(request, "param", {})}
    app_port, nginx_port = free_port(), free_port()
    logs = {host: tmp_path / f"access-{host}.log" for host in REPLICAS}
    started = []
    try:
        for host in REPLICAS:
            started.append(start_gunicorn(app_port, host=host, accesslog=str(logs[host]),
                                          **app_env))
        started.append(start_nginx(tmp_path, nginx_port, upstream=f"wsgiserver:{app_port}",
                                   static_root=static,
                                   max_body_bytes=settings.DATA_UPLOAD_MAX_MEMORY_SIZE))
        url = f"http://127.0.0.1:{nginx_port}"
        yield {"url": url, "port": nginx_port, "static": static, "logs": logs,
               "replicas": [f"http://{host}:{app_port}" for host in REPLICAS],
               "token": issue_token()}
    finally:
        for process in reversed(started):
            stop(process)


def served_by_replica(stack, total: int) -> dict:
    """Predictions each replica logged, once their access logs hold ``total`` of them: gunicorn
    writes a request's line after sending its answer, so the last may still be on its way."""
    def count():
        return {host: log.read_text().count("/predict") for host, log in stack["logs"].items()}

    wait_until(lambda: sum(count().values()) >= total, f"{total} predictions in the access logs")
    return count()


def auth(stack) -> dict:
    return {"Authorization": f"Token {stack['token']}"}


def test_static_files_come_from_nginx(stack):
    path = "admin/css/base.css"
    response = requests.get(f"{stack['url']}/static/{path}", timeout=60)
    assert response.status_code == 200
    assert response.content == (stack["static"] / path).read_bytes()
    assert response.headers["Server"].startswith("nginx")
    # gunicorn itself serves no static files with DEBUG off: nginx answered.
    assert requests.get(f"{stack['replicas'][0]}/static/{path}", timeout=60).status_code == 404


def test_predict_feedback_and_health_through_nginx(stack, sample_row):
    url = stack["url"]
    assert requests.get(f"{url}/health/ready", timeout=60).json()["status"] == "ok"
    answer = requests.post(f"{url}/api/v1/classifier/predict", json=sample_row, timeout=60)
    assert answer.status_code == 200 and answer.json()["label"] == "<=50K"
    feedback = requests.put(f"{url}/api/v1/mlrequests/{answer.json()['request_id']}",
                            json={"feedback": "<=50K"}, headers=auth(stack), timeout=60)
    assert feedback.status_code == 200 and feedback.json()["feedback"] == "<=50K"


def test_a_body_over_the_limit_is_a_json_413_from_nginx_too(stack, sample_row):
    big = dict(sample_row, workclass="x" * 2_000_000)
    url = f"{stack['url']}/api/v1/classifier/predict"
    response = requests.post(url, json=big, timeout=30)
    assert response.status_code == 413
    assert response.headers["Content-Type"] == "application/json"
    assert response.json() == {"detail": "the request body is over the limit of 1048576 bytes",
                               "code": "too_large"}
    assert requests.post(url, json=sample_row, timeout=30).status_code == 200
    # Only the second reached a replica: nginx refused the first itself.
    assert sum(served_by_replica(stack, 1).values()) == 1


def test_a_model_upload_over_the_body_limit_passes_nginx_on_its_own_route(stack, sample_row):
    """Model files are larger than any other body: nginx lets them through on the upload
    route only (MAX_ARTIFACT_BYTES), and the model is served through nginx by either replica."""
    import onnx

    from apps.endpoints.tests.test_upload import train_pipeline
    from research import adult

    rows = adult.load("adult.data", None)[:1000]
    model = onnx.load_model_from_string(train_pipeline(rows, [r["income"] for r in rows]))
    notes = model.metadata_props.add()
    notes.key, notes.value = "notes", "x" * 1_500_000  # over MAX_BODY_BYTES (1 MiB)
    data = model.SerializeToString()
    response = requests.post(f"{stack['url']}/api/v1/mlmodels/upload", headers=auth(stack),
                             data={"endpoint": "classifier", "name": "big", "version": "1"},
                             files={"artifact": ("big.onnx", data)}, timeout=120)
    assert response.status_code == 201, response.text
    for _ in range(6):  # both replicas, through nginx
        answer = requests.post(f"{stack['url']}/api/v1/classifier/predict?status=testing"
                               f"&name=big", json=sample_row, timeout=60)
        assert answer.status_code == 200 and answer.json()["model"]["name"] == "big"
    # Without a token, nginx refuses the upload before taking its body.
    anonymous = requests.post(f"{stack['url']}/api/v1/mlmodels/upload",
                              data={"endpoint": "classifier", "name": "anon", "version": "1"},
                              files={"artifact": ("big.onnx", data)}, timeout=120)
    assert anonymous.status_code == 401 and anonymous.json()["code"] == "not_authenticated"
    assert requests.post(f"{stack['url']}/admin/endpoints/mlmodel/add/", data=data,
                         timeout=60).status_code == 403
    assert requests.get(f"{stack['url']}/admin/endpoints/mlmodel/add/", timeout=60,
                        allow_redirects=False).status_code == 302  # to the login page
    # Any other route keeps the body limit.
    other = requests.post(f"{stack['url']}/api/v1/mlmodels", headers=auth(stack),
                          data=data, timeout=60)
    assert other.status_code == 413 and other.json()["code"] == "too_large"


def test_metrics_are_scraped_from_the_instances_not_through_nginx(stack, sample_row):
    requests.post(f"{stack['replicas'][0]}/api/v1/classifier/predict", json=sample_row,
                  timeout=60)
    assert requests.get(f"{stack['url']}/metrics", timeout=60).status_code == 404
    direct = requests.get(f"{stack['replicas'][0]}/metrics", timeout=60)
    assert direct.status_code == 200 and "mlregistry_predictions_total" in direct.text


def test_nginx_spreads_requests_over_both_instances(stack, sample_row):
    for _ in range(20):
        requests.post(f"{stack['url']}/api/v1/classifier/predict", json=sample_row, timeout=60)
    served = served_by_replica(stack, 20)
    assert all(count > 0 for count in served.values()), served
    assert sum(served.values()) == 20


def test_a_promotion_through_one_instance_is_seen_by_the_other_at_once(stack, sample_row):
    first, second = stack["replicas"]
    # Both instances have served, and so cached, the current production model.
    for base in (first, second):
        assert requests.post(f"{base}/api/v1/classifier/predict", json=sample_row,
                             timeout=60).json()["model"]["name"] == "random forest"
    models = {m["name"]: m["id"] for m in
              requests.get(f"{first}/api/v1/mlmodels", timeout=60).json()["results"]}
    promoted = requests.post(f"{first}/api/v1/mlmodelstatuses", timeout=60, headers=auth(stack),
                             json={
        "mlmodel": models["extra trees"], "status": "production", "created_by": "ops"})
    assert promoted.status_code == 201
    answer = requests.post(f"{second}/api/v1/classifier/predict", json=sample_row, timeout=60)
    assert answer.json()["model"]["name"] == "extra trees"
    through_nginx = {requests.post(f"{stack['url']}/api/v1/classifier/predict", json=sample_row,
                                   timeout=60).json()["model"]["name"] for _ in range(10)}
    assert through_nginx == {"extra trees"}


def test_ab_test_script_promotes_through_nginx(stack):
    run = run_ab_test(stack["url"], "--start", "--stop", "-n", "80", "--seed", "3",
                      token=stack["token"])
    assert run.returncode == 0, run.stdout + run.stderr
    assert "-> production" in run.stdout
    test = requests.get(f"{stack['url']}/api/v1/abtests", timeout=60).json()["results"][0]
    assert test["state"] == "stopped"
    production = requests.get(f"{stack['replicas'][1]}/api/v1/mlmodels?status=production",
                              timeout=60).json()["results"]
    assert [m["id"] for m in production] == [test["results"]["promoted"]]


def predict_from(stack, source: str, row: dict, forwarded_for: str) -> int:
    """POST through nginx from a given loopback address, claiming to forward for another."""
    connection = http.client.HTTPConnection("127.0.0.1", stack["port"], timeout=60,
                                            source_address=(source, 0))
    try:
        connection.request("POST", "/api/v1/classifier/predict", body=json.dumps(row),
                           headers={"Content-Type": "application/json",
                                    "X-Forwarded-For": forwarded_for})
        return connection.getresponse().status
    finally:
        connection.close()


@pytest.mark.parametrize("stack", [{"PREDICT_RATE": "5/hour"}], indirect=True)
def test_the_rate_limit_is_per_client_across_every_replica(stack, sample_row):
    """Both instances (two workers each) count into one Redis key per client, keyed on the
    address nginx saw; a client's own X-Forwarded-For does not make it someone else."""
    for client, other in (("127.0.0.4", "127.0.0.5"), ("127.0.0.6", "127.0.0.7")):
        hour = time.time() // 3600
        limited = [predict_from(stack, client, sample_row, f"10.9.9.{i}") for i in range(8)]
        neighbour = predict_from(stack, other, sample_row, "10.9.9.1")
        if time.time() // 3600 == hour:
            break  # every request fell in one window; else try again with fresh clients
    assert limited == [200] * 5 + [429] * 3
    assert neighbour == 200
    served = served_by_replica(stack, len(limited) + 1)
    assert all(count >= 4 for count in served.values()), served  # both instances counted
