"""Registration is explicit, idempotent and safe to race; importing wsgi.py writes nothing."""
import io
import json
import subprocess
import sys

import pytest
from django.core.management import CommandError, call_command

from apps.endpoints.models import Endpoint, MLModel, MLModelStatus
from conftest import SERVER_DIR, server_env
from tests.live import LIVE_DEADLINE, run_script, spawn


def counts():
    return Endpoint.objects.count(), MLModel.objects.count(), MLModelStatus.objects.count()


def test_registration_creates_the_endpoint_and_both_models_with_their_statuses(db, manifest):
    call_command("register_models", stdout=io.StringIO())
    rf = MLModel.objects.get(name="random forest")
    entry = next(m for m in manifest["models"] if m["name"] == "random forest")
    assert rf.endpoint.name == "classifier"
    assert rf.artifact_sha256 == entry["sha256"]
    assert rf.metrics["accuracy"] == entry["metrics"]["accuracy"]
    assert rf.statuses.get(active=True).status == "production"
    assert MLModel.objects.get(name="extra trees").statuses.get(active=True).status == "testing"


def test_running_it_twice_creates_nothing_twice(db):
    call_command("register_models", stdout=io.StringIO())
    out = io.StringIO()
    call_command("register_models", stdout=out)
    assert counts() == (1, 2, 2)
    assert "random forest 0.0.1: already registered" in out.getvalue()


def test_a_retrained_artifact_updates_the_checksum_not_the_model(db, manifest, tmp_path,
                                                                  settings):
    call_command("register_models", stdout=io.StringIO())
    changed = json.loads(json.dumps(manifest))
    changed["models"][0]["sha256"] = "f" * 64
    (tmp_path / "manifest.json").write_text(json.dumps(changed))
    out = io.StringIO()
    call_command("register_models", manifest=tmp_path / "manifest.json", stdout=out)
    assert "artifact retrained, checksum updated" in out.getvalue()
    assert MLModel.objects.get(name=changed["models"][0]["name"]).artifact_sha256 == "f" * 64
    assert counts() == (1, 2, 2)


def test_a_missing_manifest_says_to_train_first(db, tmp_path):
    with pytest.raises(CommandError, match="train the models first"):
        call_command("register_models", manifest=tmp_path / "manifest.json")


def run_manage(*args):
    return spawn([sys.executable, "manage.py", *args], cwd=SERVER_DIR, env=server_env(),
                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_two_processes_registering_at_once_create_everything_once(transactional_db):
    runs = [run_manage("register_models") for _ in range(3)]
    outputs = [run.communicate(timeout=LIVE_DEADLINE)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0, 0], outputs
    assert counts() == (1, 2, 2)
    assert sum(out.count(": registered") for out in outputs) == 2


def test_importing_wsgi_writes_nothing_to_the_database(transactional_db):
    code = "import server.wsgi; print('imported')"
    result = run_script([sys.executable, "-c", code], cwd=SERVER_DIR, env=server_env())
    assert result.stdout.strip() == "imported", result.stderr
    assert counts() == (0, 0, 0)
