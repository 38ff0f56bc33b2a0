"""The in-process registry: lazy, once per process, checksum before unpickling, 503 otherwise."""
import shutil

import joblib
import pytest

from apps.endpoints import registry as registry_module
from apps.endpoints.exceptions import Unavailable
from apps.endpoints.registry import Registry


@pytest.fixture
def loads(monkeypatch):
    """Counts calls to joblib.load: every unpickling of an artifact."""
    calls = []
    real = joblib.load

    def counting(path, *args, **kwargs):
        calls.append(path)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(joblib, "load", counting)
    return calls


def test_a_model_is_loaded_lazily_and_once(registered, loads, sample_row):
    registry = Registry()
    assert registry.loaded_ids() == []
    rf = registered["random forest"]
    first = registry.get(rf)
    assert registry.get(rf) is first
    assert len(loads) == 1
    assert registry.loaded_ids() == [rf.pk]
    assert first.compute_prediction(sample_row)["label"] == "<=50K"


def test_an_altered_artifact_is_refused_before_unpickling(registered, loads, tmp_path, settings):
    rf = registered["random forest"]
    original = registry_module.artifact_file(rf)
    settings.ML_ARTIFACTS_DIR = tmp_path
    shutil.copy(original, tmp_path / original.name)
    with open(tmp_path / original.name, "ab") as f:
        f.write(b"tampered")
    with pytest.raises(Unavailable, match="has sha256 .* but the registry expects .* was not "
                                          "loaded"):
        Registry().get(rf)
    assert loads == []


def test_a_missing_artifact_says_how_to_fix_it(registered, tmp_path, settings):
    settings.ML_ARTIFACTS_DIR = tmp_path
    with pytest.raises(Unavailable, match="artifact .* is missing. Train it"):
        Registry().get(registered["extra trees"])


def test_a_retrained_artifact_is_reloaded_when_its_checksum_changes(registered, loads):
    registry = Registry()
    rf = registered["random forest"]
    registry.get(rf)
    rf.artifact_sha256 = "0" * 64  # what the registry would see after a re-registration
    with pytest.raises(Unavailable):
        registry.get(rf)

