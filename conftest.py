"""Fixtures shared by every test: the registered classifier, a sample row, live servers."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import connection

from research.adult import EXAMPLE_ROW as SAMPLE_ROW
from tests import live
from tests.live import ROOT, SERVER_DIR, free_port, stop, wait_for_http  # noqa: F401 (for tests)


@pytest.fixture(scope="session", autouse=True)
def _artifacts_present():
    manifest = Path(settings.ML_ARTIFACTS_DIR) / "manifest.json"
    if not manifest.is_file():
        pytest.exit(f"{manifest} is missing: run the tests with `make test`, which trains the "
                    f"models first (or run python research/train.py).", returncode=2)


@pytest.fixture(scope="session")
def manifest():
    return json.loads((Path(settings.ML_ARTIFACTS_DIR) / "manifest.json").read_text())


@pytest.fixture
def sample_row():
    return dict(SAMPLE_ROW)


@pytest.fixture
def registered(db):
    """The classifier endpoint with its two models, registered as at start-up."""
    from apps.endpoints.models import MLModel

    call_command("register_models", stdout=open(os.devnull, "w"))
    return {m.name: m for m in MLModel.objects.all()}


@pytest.fixture
def loads(monkeypatch):
    """Every model built from an artifact's bytes (ONNX or unpickled), as (format, size)."""
    from apps.ml.income_classifier.classifier import IncomeClassifier

    calls = []
    real = IncomeClassifier.load.__func__

    def counting(cls, data, artifact_format):
        calls.append((artifact_format, len(data)))
        return real(cls, data, artifact_format)

    monkeypatch.setattr(IncomeClassifier, "load", classmethod(counting))
    return calls


@pytest.fixture
def no_unpickling(monkeypatch):
    """Any unpickling fails the test: the ONNX serving path must not need it."""
    import pickle

    import joblib

    def refused(*args, **kwargs):
        raise AssertionError("something was unpickled")

    for module, name in ((pickle, "load"), (pickle, "loads"), (joblib, "load")):
        monkeypatch.setattr(module, name, refused)


@pytest.fixture(autouse=True)
def _fresh_cache():
    """Rate-limit counters live in the cache: each test starts with none."""
    from django.core.cache import cache

    cache.clear()


@pytest.fixture
def api_token(db) -> str:
    """An API token of a plain (non-staff) user, made the way an operator would."""
    out = io.StringIO()
    call_command("api_token", "ml-client", "--create-user", stdout=out, stderr=io.StringIO())
    return out.getvalue().strip()


@pytest.fixture
def anon():
    """A client without credentials: it may read and predict, nothing else."""
    from rest_framework.test import APIClient

    return APIClient()


@pytest.fixture
def api(api_token):
    """A client sending an API token, as registry tools and feedback senders do."""
    from rest_framework.test import APIClient

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {api_token}")
    return client


def test_database_url() -> str:
    """A DATABASE_URL for the database the tests run against, for servers in other processes."""
    s = connection.settings_dict
    if s["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{s['NAME']}"
    auth = s["USER"] + (f":{s['PASSWORD']}" if s["PASSWORD"] else "")
    return f"postgres://{auth}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


test_database_url.__test__ = False  # a helper, not a test


def server_env(**extra) -> dict:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "server.settings",
        "DEBUG": "0",
        "SECRET_KEY": "live-test-secret-key-not-for-production",
        "DATABASE_URL": test_database_url(),
        "ALLOWED_HOSTS": "127.0.0.1,localhost,127.0.0.2,127.0.0.3",
        "ML_ARTIFACTS_DIR": str(settings.ML_ARTIFACTS_DIR),
    }
    env.update(extra)
    return env


def manage(*args: str, **env) -> subprocess.CompletedProcess:
    """manage.py in a process of its own, against the database the live servers use."""
    result = live.run_script([sys.executable, "manage.py", *args], cwd=SERVER_DIR,
                             env=server_env(**env), timeout=300)
    if result.returncode != 0:
        raise AssertionError(f"manage.py {' '.join(args)} exited with {result.returncode}:\n"
                             f"{result.stdout}\n{result.stderr}")
    return result


def issue_token(username: str = "ml-client") -> str:
    """An API token from the management command, as an operator would get one."""
    return manage("api_token", username, "--create-user").stdout.strip()


def run_ab_test(url: str, *args: str, token: str | None = None) -> subprocess.CompletedProcess:
    """The A/B simulator, given the token in its environment variable (or none)."""
    env = {k: v for k, v in os.environ.items() if k not in ("ML_API_TOKEN", "ML_API_URL")}
    if token:
        env["ML_API_TOKEN"] = token
    return live.run_script([sys.executable, "ab_test.py", "--url", url, *args], env=env)


def start_gunicorn(port: int, host: str = "127.0.0.1", workers: int = 2,
                   accesslog: str = "", log=None, **env) -> subprocess.Popen:
    """gunicorn with the project's config against the test database (tests/live.py)."""
    return live.start_gunicorn(port, server_env(**env), host=host, workers=workers, log=log,
                               accesslog=accesslog)


@pytest.fixture(scope="session", autouse=True)
def _stop_every_process_a_test_started():
    yield
    live.stop_all()


@pytest.fixture
def live_server_url(transactional_db):
    """A gunicorn with two workers serving the test database over real HTTP."""
    port = free_port()
    process = start_gunicorn(port)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(process)
