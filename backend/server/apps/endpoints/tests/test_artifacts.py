"""No code from outside the project: artifacts only from the store, algorithms only from the list.

Each case is an attack that worked before: a registry write naming a file anywhere on the host
(which the next predict or readiness check unpickled), or a ``code`` that imported any module.
"""
import json
import sys

import joblib
import pytest

from apps.endpoints import artifacts, services
from apps.endpoints.exceptions import Unavailable
from apps.endpoints.models import MLModel
from apps.endpoints.registry import Registry
from apps.ml.checksums import sha256_bytes

PREDICT = "/api/v1/classifier/predict"


def new_model(registered, **overrides):
    rf = registered["random forest"]
    return {"endpoint": rf.endpoint_id, "name": "intruder", "version": "1", "code": rf.code,
            "owner": "mallory", "artifact_path": rf.artifact_path, **overrides}


@pytest.fixture
def outside(tmp_path):
    """A file outside the store whose bytes the attacker controls: a pickle that runs code."""
    target = tmp_path / "evil.joblib"
    joblib.dump({"not": "a model"}, target)
    return target


@pytest.fixture
def link_out(settings, outside):
    """A symbolic link inside the store that points outside it."""
    link = artifacts.store_root() / "link-out.joblib"
    link.symlink_to(outside)
    yield link
    link.unlink()


@pytest.mark.parametrize("path", [
    "../../../../etc/passwd", "/etc/passwd", "/proc/self/environ", "..", "../research",
    "link-out.joblib", "nested/../../outside.joblib",
])
def test_an_artifact_path_outside_the_store_is_a_400_and_stores_nothing(api, registered,
                                                                       link_out, path):
    response = api.post("/api/v1/mlmodels", new_model(registered, artifact_path=path),
                        format="json")
    assert response.status_code == 400, response.json()
    body = response.json()
    assert body["code"] == "invalid"
    assert body["detail"].startswith(f"artifact_path: {path!r} is not a file of the bundled folder")
    assert str(artifacts.store_root()) not in json.dumps(body)
    assert MLModel.objects.count() == 2


def test_an_absolute_path_inside_the_store_is_recorded_relative_to_it(registered):
    rf = registered["random forest"]
    absolute = str(artifacts.store_root() / rf.artifact_path)
    created = services.mlmodel_create(**new_model(registered, artifact_path=absolute,
                                                  endpoint=rf.endpoint))
    assert created.artifact_path == rf.artifact_path


def test_a_model_pointing_outside_the_store_is_never_loaded(registered, outside, loads):
    """A row written before the check existed (or by hand) is refused at load time too."""
    rf = registered["random forest"]
    rf.artifact_path = str(outside)
    rf.artifact_sha256 = sha256_bytes(outside.read_bytes())  # the file's own checksum
    with pytest.raises(Unavailable) as err:
        Registry().get(rf)
    assert "outside the bundled folder" in err.value.log_detail
    assert loads == []


def test_a_symlink_swapped_in_after_registration_is_refused(registered, link_out, outside,
                                                            loads):
    rf = registered["random forest"]
    rf.artifact_path = link_out.name
    rf.artifact_sha256 = sha256_bytes(outside.read_bytes())  # the checksum would pass
    with pytest.raises(Unavailable) as err:
        Registry().get(rf)
    assert "outside the bundled folder" in err.value.log_detail
    assert loads == []


@pytest.mark.parametrize("path", ["a" * 300, "sub/" * 100 + "x", "."])
def test_an_artifact_path_the_system_cannot_open_is_a_400(api, registered, path):
    response = api.post("/api/v1/mlmodels", new_model(registered, artifact_path=path),
                        format="json")
    assert response.status_code == 400, response.json()
    assert response.json()["code"] == "invalid"


@pytest.fixture
def planted_module(tmp_path, monkeypatch):
    """An importable module that leaves a mark when imported, as an attacker's code would."""
    mark = tmp_path / "imported"
    (tmp_path / "planted_xyz.py").write_text(
        f"open({str(mark)!r}, 'w').close()\nclass Evil:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield mark
    sys.modules.pop("planted_xyz", None)


@pytest.mark.parametrize("code", ["planted_xyz.Evil", "os.system", "builtins.eval",
                                  "apps.ml.base.Algorithm"])
def test_code_must_name_a_registered_algorithm_and_nothing_is_imported(api, registered,
                                                                      planted_module, code):
    response = api.post("/api/v1/mlmodels", new_model(registered, code=code), format="json")
    assert response.status_code == 400
    assert response.json()["detail"].startswith(f"code: unknown algorithm {code!r}; the "
                                                f"registered algorithms are: ")
    assert not planted_module.exists(), "the named module was imported"
    assert MLModel.objects.count() == 2


def test_a_model_whose_code_is_not_listed_is_never_loaded(registered, planted_module):
    rf = registered["random forest"]
    rf.code = "planted_xyz.Evil"
    with pytest.raises(Unavailable) as err:
        Registry().get(rf)
    assert "unknown algorithm 'planted_xyz.Evil'" in err.value.log_detail
    assert not planted_module.exists()


def test_the_public_503_names_the_model_and_a_reference_not_the_file(anon, registered,
                                                                      sample_row, settings,
                                                                      tmp_path, caplog):
    from apps.endpoints.registry import registry

    registry.clear()
    settings.ML_ARTIFACTS_DIR = tmp_path
    try:
        response = anon.post(PREDICT, sample_row, format="json")
    finally:
        registry.clear()
    rf = registered["random forest"]
    body = response.json()
    assert response.status_code == 503 and body["code"] == "unavailable"
    assert body["detail"] == (f"model {rf.pk} (random forest 0.0.1) is unavailable "
                              f"(reference {body['reference']})")
    assert str(tmp_path) not in response.content.decode()
    assert rf.artifact_sha256 not in response.content.decode()
    logged = [r.getMessage() for r in caplog.records if body["reference"] in r.getMessage()]
    assert len(logged) == 1 and str(tmp_path) in logged[0] and "is missing" in logged[0]
