"""PostgreSQL restarts while clients predict and post feedback through a live gunicorn.

What must hold: every feedback the service acknowledged (200) is in the database afterwards with
its label, and every prediction it answered is stored; what failed during the outage failed as
a JSON 503 saying the database is unavailable (no 500, no driver message); and the same gunicorn
(master and workers, none restarted) answers again once PostgreSQL is back.

It restarts the machine's PostgreSQL cluster (``pg_ctlcluster ... restart``, as root), so it runs
only against PostgreSQL and only where that is allowed: in CI, or with RESTART_POSTGRES=1.
"""
import os
import random
import re
import shutil
import subprocess
import threading
import time

import pytest
import requests
from django.db import connection, connections

from apps.endpoints.models import MLRequest
from conftest import issue_token, manage, start_gunicorn
from tests.live import LIVE_DEADLINE, free_port, stop, wait_until

pytestmark = [pytest.mark.live, pytest.mark.production]

CLIENTS = 4


def _cannot_run() -> str | None:
    if connection.vendor != "postgresql":
        return "runs against PostgreSQL (DATABASE_URL=postgres://...)"
    if not shutil.which("pg_ctlcluster") or os.geteuid() != 0:
        return "restarting PostgreSQL needs pg_ctlcluster and root"
    if not (os.environ.get("CI") or os.environ.get("RESTART_POSTGRES")):
        return "restarts this machine's PostgreSQL: set RESTART_POSTGRES=1 to allow it (CI does)"
    return None


def cluster() -> tuple[str, str]:
    """The version and name of the cluster the tests' database lives on."""
    port = str(connection.settings_dict["PORT"] or 5432)
    listing = subprocess.run(["pg_lsclusters", "--no-header"], capture_output=True, text=True,
                             check=True).stdout
    for line in listing.splitlines():
        version, name, cluster_port = line.split()[:3]
        if cluster_port == port:
            return version, name
    raise RuntimeError(f"no PostgreSQL cluster listens on port {port}:\n{listing}")


def pg_ctl(action: str) -> None:
    version, name = cluster()
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, name, action],
                   check=True, capture_output=True, text=True, timeout=LIVE_DEADLINE)


class Clients:
    """Threads that predict, then PUT a random label as feedback, until told to stop."""

    def __init__(self, url: str, token: str, row: dict):
        self.url, self.token, self.row = url, token, row
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.served: list[int] = []  # request ids answered 200
        self.acknowledged: dict[int, str] = {}  # request id -> feedback answered 200
        self.failures: list[tuple[float, int, str, str]] = []  # time, status, content type, body
        self.errors: list[str] = []  # no HTTP answer at all
        self.threads = [threading.Thread(target=self.run, args=(i,)) for i in range(CLIENTS)]

    def successes(self) -> int:
        with self.lock:
            return len(self.acknowledged)

    def run(self, seed: int) -> None:
        rng = random.Random(seed)
        session = requests.Session()
        session.headers["Authorization"] = f"Token {self.token}"
        while not self.stopping.is_set():
            try:
                answer = session.post(f"{self.url}/api/v1/classifier/predict", json=self.row,
                                      timeout=60)
                if answer.status_code != 200:
                    self.failed(answer)
                    continue
                request_id = answer.json()["request_id"]
                with self.lock:
                    self.served.append(request_id)
                label = rng.choice(["<=50K", ">50K"])
                feedback = session.put(f"{self.url}/api/v1/mlrequests/{request_id}",
                                       json={"feedback": label}, timeout=60)
                if feedback.status_code == 200:
                    with self.lock:
                        self.acknowledged[request_id] = label
                else:
                    self.failed(feedback)
            except requests.RequestException as exc:
                with self.lock:
                    self.errors.append(f"{type(exc).__name__}: {exc}")
                time.sleep(0.1)

    def failed(self, response) -> None:
        with self.lock:
            self.failures.append((time.monotonic(), response.status_code,
                                  response.headers.get("Content-Type", ""), response.text[:300]))
        time.sleep(0.05)

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc_info):
        self.stopping.set()
        for thread in self.threads:
            thread.join()


def test_feedback_survives_a_postgres_restart_under_load(transactional_db, tmp_path,
                                                         sample_row):
    if reason := _cannot_run():
        if os.environ.get("CI") and connection.vendor == "postgresql":
            pytest.fail(f"CI must run the PostgreSQL restart test: {reason}")
        pytest.skip(reason)
    manage("register_models")
    token = issue_token()
    port, log = free_port(), tmp_path / "gunicorn.log"
    server = start_gunicorn(port, workers=2, log=log, accesslog="", GUNICORN_LOGLEVEL="info",
                            PREDICT_RATE="off")
    try:
        with Clients(f"http://127.0.0.1:{port}", token, sample_row) as clients:
            wait_until(lambda: clients.successes() >= 20, "traffic before the restart")
            before = clients.successes()
            outage_began = time.monotonic()
            try:
                pg_ctl("restart")
            finally:
                connections.close_all()  # this process's connection died with the server
            back = clients.successes()
            recovered = wait_until(lambda: clients.successes() >= back + 20,
                                   "20 more acknowledged feedbacks after the restart")
        assert server.poll() is None, "gunicorn died"
    finally:
        stop(server)
        if subprocess.run(["pg_isready", "-q", "-h", "127.0.0.1"]).returncode != 0:
            pg_ctl("start")  # whatever happened, leave PostgreSQL running
        connections.close_all()

    workers_started = len(re.findall(r"worker \d+ ready", log.read_text()))
    assert workers_started == 2, "a worker was restarted"
    outage = [f for f in clients.failures if f[0] >= outage_began]
    assert outage, "no request failed: the restart was not observed"
    assert clients.errors == []
    for _, status, content_type, body in clients.failures:
        assert (status, content_type) == (503, "application/json"), body
        assert '"code":"unavailable"' in body and "the database is unavailable" in body, body
        assert "5432" not in body and "127.0.0.1" not in body, body  # no driver message
    stored = dict(MLRequest.objects.filter(pk__in=clients.acknowledged)
                  .values_list("pk", "feedback"))
    assert stored == clients.acknowledged
    assert MLRequest.objects.filter(pk__in=clients.served).count() == len(clients.served)
    print(f"\n{before} feedbacks before the restart, {len(clients.acknowledged)} in all; "
          f"{len(outage)} requests answered 503 during the outage; 20 more acknowledged "
          f"{recovered:.1f}s after pg_ctlcluster restart returned")
