"""Data loading and training: checksums, download fallback, the UCI quirks, the manifest."""
import functools
import http.server
import json
import shutil
import threading
from pathlib import Path

import pytest

from research import adult, train

SHARED = Path(adult.ROOT).parent / "shared" / "data"
DATA = SHARED if (SHARED / "adult.data").exists() else adult.DEFAULT_DATA_DIR


@pytest.fixture
def http_dir(tmp_path):
    """A local HTTP server over a folder, standing in for the UCI repository."""
    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


def test_reading_adult_test_skips_its_header_and_strips_the_label_period():
    rows = adult.load("adult.test", DATA)
    assert len(rows) == 16281
    assert {row["income"] for row in rows} == {"<=50K", ">50K"}
    assert rows[0]["age"] == 25 and rows[0]["workclass"] == "Private"


def test_reading_adult_data_keeps_missing_values_for_preprocessing():
    rows = adult.load("adult.data", DATA)
    assert len(rows) == 32561
    assert sum(row["income"] == ">50K" for row in rows) == 7841
    assert any(row["occupation"] == "?" for row in rows)


def test_a_damaged_file_is_refused_with_its_checksum(tmp_path):
    (tmp_path / "adult.test").write_bytes((DATA / "adult.test").read_bytes()[:-100])
    with pytest.raises(adult.DataError, match="has sha256 .* expected a2a9044b"):
        adult.ensure_file("adult.test", tmp_path)


def test_a_missing_file_is_downloaded_and_verified(tmp_path, http_dir):
    served, url = http_dir
    shutil.copy(DATA / "adult.test", served / "adult.test")
    path = adult.ensure_file("adult.test", tmp_path / "data", base_url=url)
    assert path == tmp_path / "data" / "adult.test"
    assert adult.sha256_of(path) == adult.SHA256["adult.test"]


def test_a_failed_download_says_where_to_put_the_files(tmp_path, http_dir):
    _, url = http_dir  # serves nothing: 404
    with pytest.raises(adult.DataError) as err:
        adult.ensure_file("adult.data", tmp_path / "data", base_url=url)
    message = str(err.value)
    assert f"Put the UCI Adult files adult.data and adult.test in {tmp_path / 'data'}" in message
    assert "ADULT_DATA_DIR" in message
    assert not list((tmp_path / "data").iterdir())  # no partial file left behind


def test_train_script_fails_cleanly_without_data(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(adult, "UCI_URL", "http://127.0.0.1:9/")  # nothing listens there
    code = train.main(["--data-dir", str(tmp_path), "--out", str(tmp_path / "out")])
    assert code == 2
    assert "Put the UCI Adult files" in capsys.readouterr().err
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_training_writes_artifacts_and_a_manifest_that_matches_them(tmp_path):
    manifest = train.train(DATA, tmp_path, limit=2000)
    on_disk = json.loads((tmp_path / "manifest.json").read_text())
    assert on_disk == manifest
    assert [m["name"] for m in manifest["models"]] == ["random forest", "extra trees"]
    for entry in manifest["models"]:
        artifact = tmp_path / entry["artifact"]
        assert adult.sha256_of(artifact) == entry["sha256"]
        assert (entry["format"], artifact.suffix) == ("onnx", ".onnx")  # what is served
        assert set(entry["files"]) == {"onnx", "joblib"}
        for file in entry["files"].values():
            assert adult.sha256_of(tmp_path / file["file"]) == file["sha256"]
        assert entry["metrics"]["onnx_max_probability_difference"] < 1e-5
        assert entry["metrics"]["train_rows"] == 2000
        assert entry["training_profile"]["rows"] == 2000  # what drift compares requests with
        assert 0.7 < entry["metrics"]["accuracy"] <= 1.0
    assert manifest["data_sha256"] == adult.SHA256
