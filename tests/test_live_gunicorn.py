"""End to end over real HTTP: a gunicorn with two workers, registration by the command."""
import re
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from apps.endpoints.models import MLModel

from conftest import issue_token, manage, start_gunicorn
from tests.live import free_port, stop, wait_until

pytestmark = pytest.mark.live


@pytest.fixture
def live(live_server_url):
    manage("register_models")
    return live_server_url


@pytest.fixture
def auth():
    return {"Authorization": f"Token {issue_token()}"}


def test_predict_then_feedback_over_http(live, auth, sample_row):
    response = requests.post(f"{live}/api/v1/classifier/predict", json=sample_row, timeout=60)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["label"] == "<=50K" and body["status"] == "OK"
    assert body["model"]["name"] == "random forest"

    url = f"{live}/api/v1/mlrequests/{body['request_id']}"
    anonymous = requests.put(url, json={"feedback": ">50K"}, timeout=60)
    assert anonymous.status_code == 401 and "needs an API token" in anonymous.json()["detail"]
    feedback = requests.put(url, json={"feedback": "<=50K"}, headers=auth, timeout=60)
    assert feedback.status_code == 200
    stored = requests.get(f"{live}/api/v1/mlrequests/{body['request_id']}", timeout=60).json()
    assert stored["feedback"] == "<=50K" and stored["response"] == "<=50K"


def test_every_worker_serves_and_errors_are_json(live, sample_row):
    # Enough requests that both workers answer: each loads the model lazily on its own.
    for _ in range(20):
        response = requests.post(f"{live}/api/v1/classifier/predict", json=sample_row, timeout=60)
        assert response.status_code == 200
    bad = requests.post(f"{live}/api/v1/classifier/predict", json={"age": 37}, timeout=60)
    assert bad.status_code == 400
    assert "missing feature(s): workclass" in bad.json()["detail"]
    unknown = requests.post(f"{live}/api/v1/nothing/predict", json=sample_row, timeout=60)
    assert unknown.status_code == 404 and unknown.headers["Content-Type"] == "application/json"
    count = requests.get(f"{live}/api/v1/mlrequests", timeout=60).json()["count"]
    assert count == 20


def test_a_promotion_is_seen_by_every_worker_at_once(live, auth, sample_row):
    models = {m["name"]: m["id"]
              for m in requests.get(f"{live}/api/v1/mlmodels", timeout=60).json()["results"]}
    promoted = requests.post(f"{live}/api/v1/mlmodelstatuses", timeout=60, headers=auth, json={
        "mlmodel": models["extra trees"], "status": "production", "created_by": "e2e"})
    assert promoted.status_code == 201
    served_by = {
        requests.post(f"{live}/api/v1/classifier/predict", json=sample_row,
                      timeout=60).json()["model"]["name"]
        for _ in range(10)
    }
    assert served_by == {"extra trees"}


def test_the_rate_limit_over_http(transactional_db, sample_row):
    """One worker: the default cache counts per process (REDIS_URL shares it; see topology)."""
    manage("register_models")
    port = free_port()
    server = start_gunicorn(port, workers=1, PREDICT_RATE="3/day")
    try:
        answers = [requests.post(f"http://127.0.0.1:{port}/api/v1/classifier/predict",
                                 json=sample_row, timeout=60) for _ in range(4)]
    finally:
        stop(server)
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert int(answers[-1].headers["Retry-After"]) > 0
    assert "Request was throttled" in answers[-1].json()["detail"]


def test_ready_is_503_and_names_the_database_when_it_is_down(db):
    port = free_port()
    server = start_gunicorn(port, workers=1,
                            DATABASE_URL=f"postgres://nobody@127.0.0.1:{free_port()}/none")
    try:
        ready = requests.get(f"http://127.0.0.1:{port}/health/ready", timeout=60)
        live = requests.get(f"http://127.0.0.1:{port}/health/live", timeout=60)
    finally:
        stop(server)
    assert ready.status_code == 503
    assert ready.json() == {"status": "unavailable", "database": "unavailable"}
    assert live.status_code == 200


def test_workers_load_their_models_before_serving_and_recycle_apart(transactional_db, tmp_path,
                                                                    sample_row):
    """Each worker, the first two and those that replace them after GUNICORN_MAX_REQUESTS,
    loads both models before the first request it answers; the first two recycle apart."""
    manage("register_models")
    models = sorted(m.pk for m in MLModel.objects.all())
    port, log = free_port(), tmp_path / "gunicorn.log"
    server = start_gunicorn(port, workers=2, log=log, accesslog="-", GUNICORN_LOGLEVEL="info",
                            GUNICORN_MAX_REQUESTS="10")
    try:
        answers = [requests.post(f"http://127.0.0.1:{port}/api/v1/classifier/predict",
                                 json=sample_row, timeout=60).status_code for _ in range(60)]
    finally:
        stop(server)
    assert answers == [200] * 60
    lines = log.read_text().splitlines()
    ready = {}  # pid -> (line number, models loaded, recycled after)
    for number, line in enumerate(lines):
        if match := re.search(r"worker (\d+) ready: models \[(.*)\] loaded, recycled after (\d+)",
                              line):
            ready[match[1]] = (number, sorted(map(int, match[2].split(", "))), int(match[3]))
    served = {}  # pid -> line number of its first request
    for number, line in enumerate(lines):
        if match := re.search(r'"POST /api/v1/classifier/predict HTTP/1.1" 200 .* <(\d+)>$', line):
            served.setdefault(match[1], number)
    assert len(served) > 2, "no worker was recycled"
    for pid, first_request in served.items():
        assert pid in ready and ready[pid][0] < first_request, f"worker {pid} served cold"
        assert ready[pid][1] == models
    first_two = sorted(after for _, _, after in sorted(ready.values())[:2])  # either may be first
    assert first_two == [10, 15]


def predictions_counted(text: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    return sum(s.value for family in text_string_to_metric_families(text)
               for s in family.samples if s.name == "mlregistry_predictions_total")


def test_metrics_add_up_across_workers(transactional_db, tmp_path, sample_row):
    """Rows served by both workers, scrapes answered by both: each scrape reports every row.

    Which worker takes a request is the kernel's choice, so requests go in concurrent rounds
    until both workers have served (and then answered scrapes), up to LIVE_DEADLINE."""
    manage("register_models")
    port, log = free_port(), tmp_path / "gunicorn.log"
    server = start_gunicorn(port, workers=2, log=log, accesslog="-")
    url = f"http://127.0.0.1:{port}"

    def workers(request_line: str) -> set[str]:
        return set(re.findall(rf'"{request_line} HTTP/1.1" 200 .* <(\d+)>$', log.read_text(),
                              re.M))

    def predict(_):
        return requests.post(f"{url}/api/v1/classifier/predict", json=[sample_row] * 5,
                             timeout=60).status_code

    codes, scrapes = [], []
    try:
        with ThreadPoolExecutor(8) as pool:
            def predict_round():
                codes.extend(pool.map(predict, range(8)))
                return len(workers("POST /api/v1/classifier/predict")) == 2

            def scrape_round():
                scrapes.extend(pool.map(lambda _: requests.get(f"{url}/metrics",
                                                               timeout=60).text, range(8)))
                return len(workers("GET /metrics")) == 2

            wait_until(predict_round, "both workers serving predictions")
            wait_until(scrape_round, "both workers answering scrapes")
    finally:
        stop(server)
    assert set(codes) == {200}
    assert {predictions_counted(text) for text in scrapes} == {5.0 * len(codes)}
