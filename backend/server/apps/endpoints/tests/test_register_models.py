"""Registration is explicit, idempotent and safe to race; importing wsgi.py writes nothing."""
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from apps.endpoints.models import Endpoint, MLModel, MLModelStatus
from apps.ml.checksums import sha256_file
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
    assert (rf.artifact_format, rf.artifact_path) == ("onnx", entry["files"]["onnx"]["file"])
    assert MLModel.objects.get(name="extra trees").statuses.get(active=True).status == "testing"


def test_running_it_twice_creates_nothing_twice(db):
    call_command("register_models", stdout=io.StringIO())
    out = io.StringIO()
    call_command("register_models", stdout=out)
    assert counts() == (1, 2, 2)
    assert "random forest 0.0.1: already registered" in out.getvalue()


@pytest.fixture
def store(settings, tmp_path, manifest):
    """A copy of the artifact store the test may change, with its manifest."""
    source = Path(settings.ML_ARTIFACTS_DIR)
    for entry in manifest["models"]:
        shutil.copy(source / entry["artifact"], tmp_path / entry["artifact"])
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    settings.ML_ARTIFACTS_DIR = tmp_path
    return tmp_path


def retrain(store, manifest, artifact):
    """Replace the first model's artifact (here by the second's bytes) and list it."""
    first = manifest["models"][0]
    shutil.copy(store / manifest["models"][1]["artifact"], store / first["artifact"])
    changed = json.loads(json.dumps(manifest))
    changed["models"][0].update(artifact=artifact, sha256=sha256_file(store / first["artifact"]))
    (store / "manifest.json").write_text(json.dumps(changed))
    return changed["models"][0]


def test_a_retrained_artifact_updates_the_checksum_not_the_model(db, store, manifest):
    call_command("register_models", stdout=io.StringIO())
    entry = retrain(store, manifest, manifest["models"][0]["artifact"])
    out = io.StringIO()
    call_command("register_models", stdout=out)
    assert "artifact retrained, checksum updated" in out.getvalue()
    assert MLModel.objects.get(name=entry["name"]).artifact_sha256 == entry["sha256"]
    assert counts() == (1, 2, 2)


@pytest.mark.parametrize("artifact, sha256, message", [
    ("../../etc/passwd", None, "is not a file of the bundled folder"),
    (None, "f" * 64, "does not have the sha256 given"),
])
def test_a_retrained_entry_gets_the_checks_of_a_registration(db, store, manifest, artifact,
                                                            sha256, message):
    call_command("register_models", stdout=io.StringIO())
    before = MLModel.objects.values_list("artifact_path", "artifact_sha256").first()
    entry = retrain(store, manifest, artifact or manifest["models"][0]["artifact"])
    if sha256:
        changed = json.loads((store / "manifest.json").read_text())
        changed["models"][0]["sha256"] = sha256
        (store / "manifest.json").write_text(json.dumps(changed))
    with pytest.raises(CommandError, match=message):
        call_command("register_models", stdout=io.StringIO())
    assert MLModel.objects.filter(name=entry["name"]).values_list(
        "artifact_path", "artifact_sha256").first() == before


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


def test_a_version_registered_with_its_joblib_file_moves_to_onnx(db, manifest):
    """A database from before ONNX serving: register_models points the version at the ONNX
    file, as it would after a retraining."""
    call_command("register_models", stdout=io.StringIO())
    entry = manifest["models"][0]
    MLModel.objects.filter(name=entry["name"]).update(
        artifact_path=entry["files"]["joblib"]["file"], artifact_format="joblib",
        artifact_sha256=entry["files"]["joblib"]["sha256"])
    call_command("register_models", stdout=io.StringIO())
    rf = MLModel.objects.get(name=entry["name"])
    assert (rf.artifact_format, rf.artifact_sha256) == ("onnx", entry["files"]["onnx"]["sha256"])
