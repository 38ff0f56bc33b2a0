"""The in-process registry: lazy, once per process, checksum before loading, 503 otherwise."""
import shutil

import pytest

from apps.endpoints import artifacts
from apps.endpoints.exceptions import Unavailable
from apps.endpoints.models import MLModel
from apps.endpoints.registry import RETRY_FAILED_SECONDS, Registry
from apps.ml.checksums import sha256_bytes


def test_a_model_is_loaded_lazily_and_once(registered, loads, sample_row):
    registry = Registry()
    assert registry.loaded_ids() == []
    rf = registered["random forest"]
    first = registry.get(rf)
    assert registry.get(rf) is first
    assert loads == [("onnx", len(artifacts.read(rf.artifact_path)[1]))]
    assert registry.loaded_ids() == [rf.pk]
    assert first.compute_prediction(sample_row)["label"] == "<=50K"


def test_an_altered_artifact_is_refused_before_loading(registered, loads, tmp_path, settings,
                                                         caplog):
    rf = registered["random forest"]
    original = artifacts.resolve(rf.artifact_path)
    settings.ML_ARTIFACTS_DIR = tmp_path
    shutil.copy(original, tmp_path / original.name)
    with open(tmp_path / original.name, "ab") as f:
        f.write(b"tampered")
    with pytest.raises(Unavailable) as err:
        Registry().get(rf)
    assert err.value.detail == f"model {rf.pk} (random forest 0.0.1) is unavailable"
    assert "but the registry expects" in err.value.log_detail
    assert "was altered or replaced, and not loaded" in err.value.log_detail
    assert loads == []


def test_a_missing_artifact_says_how_to_fix_it_in_the_log(registered, tmp_path, settings):
    settings.ML_ARTIFACTS_DIR = tmp_path
    with pytest.raises(Unavailable) as err:
        Registry().get(registered["extra trees"])
    assert "is missing" in err.value.log_detail and "Train it" in err.value.log_detail
    assert str(tmp_path) not in err.value.detail


def test_a_retrained_artifact_is_reloaded_when_its_checksum_changes(registered, loads):
    registry = Registry()
    rf = registered["random forest"]
    registry.get(rf)
    rf.artifact_sha256 = "0" * 64  # what the registry would see after a re-registration
    with pytest.raises(Unavailable):
        registry.get(rf)



def test_a_failed_load_is_not_retried_on_every_request(registered, monkeypatch):
    now = [0.0]
    registry = Registry(clock=lambda: now[0])
    rf = registered["random forest"]
    rf.artifact_sha256 = "0" * 64  # the file does not match: every try reads and hashes it
    reads = []
    real_read = artifacts.read
    monkeypatch.setattr(artifacts, "read", lambda path: reads.append(path) or real_read(path))
    for _ in range(3):
        with pytest.raises(Unavailable):
            registry.get(rf)
    assert len(reads) == 1
    now[0] = RETRY_FAILED_SECONDS + 1
    with pytest.raises(Unavailable):
        registry.get(rf)
    assert len(reads) == 2


def test_the_onnx_serving_path_unpickles_nothing(anon, registered, sample_row, no_unpickling):
    from apps.endpoints.registry import registry

    registry.clear()
    rows = [sample_row, dict(sample_row, age=60)]
    for status in ("production", "testing"):
        response = anon.post(f"/api/v1/classifier/predict?status={status}", rows, format="json")
        assert response.status_code == 200, response.json()
    assert {m.artifact_format for m in registered.values()} == {"onnx"}
    registry.clear()


def test_an_onnx_file_that_loads_but_cannot_serve_is_refused_when_loaded(registered, tmp_path,
                                                                         settings, anon,
                                                                         sample_row):
    """Another model's outputs: onnxruntime builds the session, but scoring would fail on every
    request; the registry refuses it once, as unavailable (503), details in the log."""
    import onnx

    from apps.endpoints.registry import registry as process_registry

    rf = registered["random forest"]
    model = onnx.load_from_string(artifacts.read(rf.artifact_path)[1])
    for node in model.graph.node:
        node.output[:] = ["scores" if o == "probabilities" else o for o in node.output]
    for output in model.graph.output:
        if output.name == "probabilities":
            output.name = "scores"
    data = model.SerializeToString()
    settings.ML_ARTIFACTS_DIR = tmp_path
    (tmp_path / rf.artifact_path).write_bytes(data)
    MLModel.objects.filter(pk=rf.pk).update(artifact_sha256=sha256_bytes(data))
    process_registry.clear()
    try:
        response = anon.post("/api/v1/classifier/predict", sample_row, format="json")
    finally:
        process_registry.clear()
    assert response.status_code == 503
    assert response.json()["detail"].startswith(f"model {rf.pk} (random forest 0.0.1) is "
                                                f"unavailable (reference ")
