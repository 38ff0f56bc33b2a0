"""Bring-your-own models (issue 12): an ONNX file trained outside the project, uploaded over the
API (and the admin), stored in the artifact store under its checksum, fetched, verified and
cached by a replica that never had it, and served like the built-in models."""
import hashlib
import io
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnx
import pytest
from django.core.files.storage import storages
from onnx import TensorProto, helper

from apps.endpoints import artifacts, predictions, services
from apps.endpoints.models import MLModel, MLModelStatus, MLRequest, ShadowPrediction
from apps.endpoints.registry import registry
from apps.ml.income_classifier import preprocessing

NUMERIC = list(preprocessing.NUMERIC)
CATEGORICAL = list(preprocessing.CATEGORICAL)


def train_pipeline(rows, labels, skl2onnx_types=None, **export):
    """A scikit-learn Pipeline trained on Adult rows and exported by skl2onnx, as the README's
    notebook does (pandas, ColumnTransformer, LogisticRegression)."""
    import pandas as pd
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    frame = pd.DataFrame(rows)[NUMERIC + CATEGORICAL].fillna("?")
    frame = frame.astype({name: "float32" for name in NUMERIC})
    model = Pipeline([
        ("prepare", ColumnTransformer([
            ("scale", StandardScaler(), NUMERIC),
            ("encode", OneHotEncoder(handle_unknown="ignore"), CATEGORICAL)])),
        ("classify", LogisticRegression(max_iter=500)),
    ]).fit(frame, labels)
    types = skl2onnx_types or ([(n, FloatTensorType([None, 1])) for n in NUMERIC]
                               + [(n, StringTensorType([None, 1])) for n in CATEGORICAL])
    return to_onnx(model, initial_types=types, **export).SerializeToString()


@pytest.fixture(scope="session")
def adult_rows():
    from research import adult

    return adult.load("adult.data", None)[:4000]


@pytest.fixture(scope="session")
def logreg_onnx(adult_rows):
    return train_pipeline(adult_rows, [r["income"] for r in adult_rows])


@pytest.fixture
def store(tmp_path, settings):
    """A fresh local artifact store and cache for the test."""
    settings.STORAGES = {**settings.STORAGES, "artifacts": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": str(tmp_path / "store"), "allow_overwrite": True}}}
    settings.ARTIFACT_CACHE_DIR = tmp_path / "cache"
    return tmp_path


def upload(api, data: bytes, **fields):
    form = {"endpoint": "classifier", "name": "logistic regression", "version": "1",
            "artifact": io.BytesIO(data), **fields}
    form["artifact"].name = "model.onnx"
    return api.post("/api/v1/mlmodels/upload", form, format="multipart")


def test_an_uploaded_model_is_stored_by_checksum_and_served(api, registered, store, logreg_onnx,
                                                            sample_row):
    response = upload(api, logreg_onnx, metrics=json.dumps({"accuracy": 0.85}),
                      description="from a notebook")
    assert response.status_code == 201, response.json()
    body = response.json()
    sha = hashlib.sha256(logreg_onnx).hexdigest()
    assert body["artifact_sha256"] == sha and body["artifact_source"] == "store"
    assert body["artifact_path"] == f"models/{sha}.onnx" and body["artifact_format"] == "onnx"
    assert body["status"] == "testing" and body["metrics"] == {"accuracy": 0.85}
    assert body["owner"] == "ml-client" and body["classes"] == ["<=50K", ">50K"]
    assert (store / "store" / "models" / f"{sha}.onnx").read_bytes() == logreg_onnx

    answer = api.post("/api/v1/classifier/predict?status=testing&name=logistic%20regression",
                      sample_row, format="json").json()
    assert answer["model"]["id"] == body["id"] and answer["label"] in ("<=50K", ">50K")
    assert 0 <= answer["probability"] <= 1


def test_an_uploaded_model_is_ab_tested_shadowed_and_promoted(api, registered, store,
                                                              logreg_onnx, sample_row):
    uploaded = MLModel.objects.get(pk=upload(api, logreg_onnx).json()["id"])
    rf = registered["random forest"]
    services.mlmodel_status_set(mlmodel=uploaded, status="shadow", created_by="ann")
    predictions.prediction_create(endpoint_name="classifier", input_data=sample_row)
    assert ShadowPrediction.objects.filter(mlmodel=uploaded).count() == 1
    services.mlmodel_status_set(mlmodel=uploaded, status="testing", created_by="ann")

    test = services.ab_test_create(title="rf vs uploaded", created_by="ann",
                                   mlmodels=[rf, uploaded], split=[1, 3])
    served = predictions.predictions_create(endpoint_name="classifier", status="ab_testing",
                                            rows=[sample_row] * 40)
    assert {r.mlmodel_id for r in served} == {rf.pk, uploaded.pk}
    for mlrequest in served:  # the uploaded model right, the forest wrong
        right = mlrequest.response if mlrequest.mlmodel_id == uploaded.pk else next(
            c for c in ("<=50K", ">50K") if c != mlrequest.response)
        services.feedback_set(mlrequest=mlrequest, feedback=right)
    stopped = services.ab_test_stop(ab_test_id=test.pk, stopped_by="ann")
    assert stopped.results["promoted"] == uploaded.pk
    assert MLModelStatus.objects.get(status="production", active=True).mlmodel == uploaded
    answer = predictions.prediction_create(endpoint_name="classifier", input_data=sample_row)
    assert answer.mlmodel_id == uploaded.pk


def test_a_replica_without_the_file_fetches_verifies_and_caches_it(api, registered, store,
                                                                   logreg_onnx, sample_row):
    model_id = upload(api, logreg_onnx).json()["id"]
    sha = hashlib.sha256(logreg_onnx).hexdigest()
    cached = store / "cache" / sha
    cached.unlink()  # as a replica that never had the file
    registry.clear()
    mlmodel = MLModel.objects.get(pk=model_id)
    registry.get(mlmodel)
    assert cached.read_bytes() == logreg_onnx
    # A damaged cached copy is fetched again, not loaded.
    cached.write_bytes(b"damaged")
    registry.clear()
    registry.get(mlmodel)
    assert cached.read_bytes() == logreg_onnx


def stored(*contents: bytes) -> list[str]:
    """Put objects in the artifact store (not models: the cache does not look inside)."""
    shas = [hashlib.sha256(data).hexdigest() for data in contents]
    for data, sha in zip(contents, shas):
        artifacts.save_to_store(data, sha, "onnx")
    return shas


def fetch(sha: str) -> bytes:
    return artifacts.read_verified(f"models/{sha}.onnx", sha, artifacts.STORE)


@pytest.fixture
def store_reads(monkeypatch):
    """The names the artifact store was read for."""
    real_read, reads = artifacts._read_stored, []

    def counted(name):
        reads.append(name)
        return real_read(name)

    monkeypatch.setattr(artifacts, "_read_stored", counted)
    return reads


def cached(cache) -> set[str]:
    return {p.name for p in cache.iterdir() if not p.name.startswith(".")}


def test_the_cache_keeps_the_most_recently_loaded_files_within_its_limit(store, settings,
                                                                          store_reads):
    a, b, c = (bytes([n]) * 1000 for n in range(3))
    settings.ARTIFACT_CACHE_MAX_BYTES = 2500
    cache = store / "cache"
    (cache.mkdir(parents=True))
    (cache / "notes.txt").write_bytes(b"not the cache's" * 1000)  # a folder shared by mistake
    sha_a, sha_b = stored(a, b)
    assert cached(cache) == {sha_a, sha_b, "notes.txt"}
    stored(b)  # the same file again: replaces its own copy, evicts nothing
    assert cached(cache) == {sha_a, sha_b, "notes.txt"}
    store_reads.clear()  # saving checks what the store holds
    assert fetch(sha_a) == a and store_reads == []  # a hit, and now a was loaded after b
    sha_c = stored(c)[0]
    assert cached(cache) == {sha_a, sha_c, "notes.txt"}
    store_reads.clear()
    assert fetch(sha_b) == b and len(store_reads) == 1  # from the store again; a goes now
    assert cached(cache) == {sha_b, sha_c, "notes.txt"}

    # A file larger than the whole cache is served, not kept (the others are still trimmed to
    # the limit); a partial file abandoned by a killed worker is removed by the next write.
    settings.ARTIFACT_CACHE_MAX_BYTES = 1500
    abandoned = cache / ".partial-killed"
    abandoned.write_bytes(b"x" * 100)
    os.utime(abandoned, (0, 0))
    big = b"big" * 1000
    sha_big = stored(big)[0]
    assert cached(cache) == {sha_b, "notes.txt"} and not abandoned.exists()  # c was older
    assert fetch(sha_big) == big and not (cache / sha_big).exists()
    assert fetch(sha_c) == c and cached(cache) == {sha_c, "notes.txt"}
    settings.ARTIFACT_CACHE_MAX_BYTES = 0  # no copies: those already kept go at the next fetch
    assert fetch(sha_big) == big and cached(cache) == {"notes.txt"}


def test_the_workers_of_a_replica_fetch_a_file_once(store, monkeypatch, store_reads):
    data = b"model" * 1000
    sha = stored(data)[0]
    (store / "cache" / sha).unlink()
    counted = artifacts._read_stored

    def slow_read(name):
        time.sleep(0.2)  # the others arrive while the first fetch is under way
        return counted(name)

    monkeypatch.setattr(artifacts, "_read_stored", slow_read)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: fetch(sha), range(4)))
    assert results == [data] * 4 and len(store_reads) == 1


def test_a_tampered_stored_file_is_refused(api, anon, registered, store, logreg_onnx,
                                           sample_row, caplog):
    model_id = upload(api, logreg_onnx).json()["id"]
    sha = hashlib.sha256(logreg_onnx).hexdigest()
    (store / "cache" / sha).unlink()
    with storages["artifacts"].open(f"models/{sha}.onnx", "wb") as f:
        f.write(logreg_onnx + b"\0")
    registry.clear()
    response = anon.post("/api/v1/classifier/predict?status=testing&name=logistic%20regression",
                         sample_row, format="json")
    assert response.status_code == 503
    assert response.json()["detail"].startswith(f"model {model_id} (logistic regression 1) is "
                                                f"unavailable")
    assert sha not in response.content.decode() and str(store) not in response.content.decode()
    assert "it was altered or replaced" in caplog.text


def test_a_registry_row_cannot_point_the_store_elsewhere(registered, store, logreg_onnx):
    sha = hashlib.sha256(logreg_onnx).hexdigest()
    for name in (f"../{sha}.onnx", "/etc/passwd", f"models/{'0' * 64}.onnx"):
        with pytest.raises(artifacts.OutsideStore):
            artifacts.read_verified(name, sha, artifacts.STORE)


def onnx_with(graph_change=None, opset_domain=None):
    """A tiny valid ONNX model (Identity), changed as a test needs."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 1])
    weight = helper.make_tensor("w", TensorProto.FLOAT, [1], [1.0])
    graph = helper.make_graph([helper.make_node("Mul", ["x", "w"], ["y"])], "g", [x], [y],
                              initializer=[weight])
    if graph_change:
        graph_change(graph)
    opsets = [helper.make_opsetid("", 17)]
    if opset_domain:
        opsets.append(helper.make_opsetid(opset_domain, 1))
    # IR version 9: what onnxruntime 1.31 loads (the onnx package's default is newer).
    return helper.make_model(graph, opset_imports=opsets, ir_version=9).SerializeToString()


def sparse_external(graph):
    """Weights kept outside the file in a sparse initializer, where a plain walk of
    ``graph.initializer`` would not look."""
    values = helper.make_tensor("sv", TensorProto.FLOAT, [1], [1.0])
    values.ClearField("float_data")
    values.data_location = TensorProto.EXTERNAL
    entry = values.external_data.add()
    entry.key, entry.value = "location", "secret.bin"
    indices = helper.make_tensor("si", TensorProto.INT64, [1], [0])
    graph.sparse_initializer.append(helper.make_sparse_tensor(values, indices, [1]))


def foreign_node(graph):
    """An operator of another domain, without declaring that domain's operator set."""
    graph.node.append(helper.make_node("FastGelu", ["x"], ["z"], domain="com.microsoft"))


def blow_up(graph):
    """A tensor sized by data: a few bytes of file, gigabytes of memory."""
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [100_000_000, 2])
    graph.initializer.append(shape)
    graph.node.append(helper.make_node("ConstantOfShape", ["shape"], ["big"]))


def external(graph):
    weight = graph.initializer[0]
    weight.ClearField("float_data")
    weight.data_location = TensorProto.EXTERNAL
    entry = weight.external_data.add()
    entry.key, entry.value = "location", "../../../../etc/passwd"


def not_utf8(data: bytes, text: str) -> bytes:
    """The file with a name or domain changed to bytes that are not UTF-8 (protobuf's parser
    accepts them, and hands them back as bytes where text is expected)."""
    assert data.count(text.encode()) == 1
    return data.replace(text.encode(), b"\xff\xfe\xfd\xfc"[:len(text)])


def named_node(graph):
    graph.node[0].name = "QQQQ"


@pytest.mark.parametrize("make, fragment", [
    (lambda rf, lr, rows: b"not a model at all", "not an ONNX model"),
    (lambda rf, lr, rows: not_utf8(onnx_with(opset_domain="ZZZZ"), "ZZZZ"),
     "the model's OperatorSetIdProto.domain is not UTF-8 text"),
    (lambda rf, lr, rows: not_utf8(onnx_with(named_node), "QQQQ"),
     "the model's NodeProto.name is not UTF-8 text"),
    (lambda rf, lr, rows: onnx_with(opset_domain="com.example.custom"),
     "operators outside the standard sets (domains com.example.custom)"),
    (lambda rf, lr, rows: onnx_with(external), "keeps weights in external files"),
    (lambda rf, lr, rows: rf, "must take the 14 raw features as 14 inputs named after them; it "
                              "lacks age"),
    (lambda rf, lr, rows: onnx_with(), "must take the 14 raw features"),
    (lambda rf, lr, rows: onnx_with(lambda g: None, None)[:-3], "not an ONNX model"),
    (lambda rf, lr, rows: helper.make_model(onnx.load_model_from_string(onnx_with()).graph,
                                            ir_version=99).SerializeToString(),
     "onnxruntime cannot load the model: Unsupported model IR version: 99"),
    (lambda rf, lr, rows: train_pipeline(rows, [int(r["income"] == ">50K") for r in rows]),
     "not a tensor of string labels: train it on the labels <=50K and >50K"),
    (lambda rf, lr, rows: onnx_with(sparse_external), "keeps weights in external files"),
    (lambda rf, lr, rows: onnx_with(foreign_node), "operator FastGelu is from domain "
                                                   "com.microsoft"),
    (lambda rf, lr, rows: onnx_with(blow_up), "operator ConstantOfShape is not served"),
])
def test_a_file_that_cannot_serve_the_endpoint_is_refused_saying_why(
        api, registered, store, logreg_onnx, adult_rows, make, fragment):
    rf = registered["random forest"]
    bundled = (artifacts.store_root() / rf.artifact_path).read_bytes()
    response = upload(api, make(bundled, logreg_onnx, adult_rows[:500]))
    assert response.status_code == 400, response.json()
    assert fragment in response.json()["detail"], response.json()
    assert response.json()["detail"].startswith("artifact: ")
    assert not MLModel.objects.filter(name="logistic regression").exists()
    assert not (store / "store").exists() or not any((store / "store").rglob("*.onnx"))


def test_numeric_inputs_as_strings_are_refused(api, registered, store, adult_rows):
    from skl2onnx.common.data_types import StringTensorType

    rows = adult_rows[:300]
    with pytest.raises(Exception):  # skl2onnx itself cannot scale strings: nothing to upload
        train_pipeline(rows, [r["income"] for r in rows],
                       skl2onnx_types=[(n, StringTensorType([None, 1]))
                                       for n in NUMERIC + CATEGORICAL])


def test_upload_needs_a_token_a_unique_version_and_a_size_within_the_limit(
        api, anon, registered, store, logreg_onnx, settings):
    assert upload(anon, logreg_onnx).status_code == 401
    assert upload(api, logreg_onnx).status_code == 201
    again = upload(api, logreg_onnx)
    assert again.status_code == 409
    assert "already has a model 'logistic regression' version '1'" in again.json()["detail"]
    settings.MAX_ARTIFACT_BYTES = len(logreg_onnx) - 1
    big = upload(api, logreg_onnx, version="2")
    assert big.status_code == 413 and "MAX_ARTIFACT_BYTES" in big.json()["detail"]


@pytest.mark.parametrize("fields, fragment", [
    ({"endpoint": "nowhere"}, "no endpoint named (or with id) 'nowhere'"),
    ({"metrics": "[1, 2]"}, "give the metrics as a JSON object"),
    ({"metrics": "{not json"}, "metrics"),
    ({"status": "ab_testing"}, "status"),
])
def test_bad_upload_fields_are_named(api, registered, store, logreg_onnx, fields, fragment):
    response = upload(api, logreg_onnx, **fields)
    assert response.status_code == 400
    assert fragment in json.dumps(response.json())


def test_the_upload_route_alone_takes_bodies_over_the_body_limit(api, registered, store,
                                                                 logreg_onnx, settings,
                                                                 sample_row):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000  # smaller than the file
    assert upload(api, logreg_onnx).status_code == 201
    big_batch = [sample_row] * 20
    assert api.post("/api/v1/classifier/predict", big_batch, format="json").status_code == 413


def test_the_admin_uploads_through_the_same_checks(admin_client, registered, store, logreg_onnx):
    def post(data, **fields):
        artifact = io.BytesIO(data)
        artifact.name = "model.onnx"
        form = {"endpoint": registered["random forest"].endpoint_id,
                "name": "logistic regression", "version": "1", "description": "",
                "metrics": "{}", "status": "testing", "artifact": artifact, **fields}
        return admin_client.post("/admin/endpoints/mlmodel/add/", form, follow=True)

    refused = post(b"garbage")
    assert "not an ONNX model" in refused.content.decode()
    assert not MLModel.objects.filter(name="logistic regression").exists()
    accepted = post(logreg_onnx)
    created = MLModel.objects.get(name="logistic regression")
    assert created.artifact_source == "store" and created.owner == "admin"
    assert created.artifact_sha256 == hashlib.sha256(logreg_onnx).hexdigest()
    assert accepted.status_code == 200
    assert MLModelStatus.objects.get(mlmodel=created, active=True).status == "testing"
    # Its record is read-only like every version's: the artifact cannot be changed here.
    page = admin_client.get(f"/admin/endpoints/mlmodel/{created.pk}/change/").content.decode()
    assert 'name="artifact_path"' not in page


def test_uploaded_answers_match_the_pipeline_it_came_from(registered, store, adult_rows):
    """The service feeds the raw features as the notebook's pipeline saw them."""
    import pandas as pd
    from skl2onnx import to_onnx  # noqa: F401 - the same exporter as the fixture

    from apps.ml.income_classifier.uploaded import UploadedIncomeClassifier

    rows = adult_rows[:2000]
    data = train_pipeline(rows, [r["income"] for r in rows])
    algorithm = UploadedIncomeClassifier.load(data, "onnx")
    sample = [{k: v for k, v in r.items() if k != "income"} for r in adult_rows[2000:2200]]
    answers = algorithm.compute_predictions(sample)
    import onnxruntime

    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    frame = pd.DataFrame(sample)[NUMERIC + CATEGORICAL].fillna("?")
    feed = {n.replace("-", "_"): frame[[n]].to_numpy().astype(
        np.float32 if n in NUMERIC else object) for n in NUMERIC + CATEGORICAL}
    labels, probabilities = session.run(None, feed)
    assert [a["label"] for a in answers] == list(labels)
    assert [a["probability"] for a in answers] == pytest.approx(
        [p[">50K"] for p in probabilities], abs=1e-6)


def integer_model(adult_rows):
    """The notebook's pipeline with 64-bit integer inputs for the numeric features."""
    from skl2onnx.common.data_types import Int64TensorType, StringTensorType

    rows = adult_rows[:800]
    return train_pipeline(rows, [r["income"] for r in rows], skl2onnx_types=(
        [(n, Int64TensorType([None, 1])) for n in NUMERIC]
        + [(n, StringTensorType([None, 1])) for n in CATEGORICAL]))


def test_integer_inputs_take_whole_numbers_in_range(api, registered, store, adult_rows,
                                                    sample_row):
    assert upload(api, integer_model(adult_rows), name="ints").status_code == 201
    url = "/api/v1/classifier/predict?status=testing&name=ints"
    assert api.post(url, sample_row, format="json").status_code == 200
    for value in (37.5, 2**70):
        refused = api.post(url, {**sample_row, "age": value}, format="json")
        assert refused.status_code == 400, refused.json()
        assert "age: this model takes whole numbers" in refused.json()["detail"]


def test_a_model_that_answers_nonsense_is_refused_for_the_request(api, anon, registered, store,
                                                                  logreg_onnx, sample_row,
                                                                  monkeypatch):
    from apps.ml.income_classifier.uploaded import UploadedIncomeClassifier

    assert upload(api, logreg_onnx).status_code == 201
    url = "/api/v1/classifier/predict?status=testing&name=logistic%20regression"
    assert anon.post(url, sample_row, format="json").status_code == 200  # loaded and serving
    real = UploadedIncomeClassifier.predict
    monkeypatch.setattr(UploadedIncomeClassifier, "predict", lambda self, feed: (
        real(self, feed)[0], [{">50K": float("nan"), "<=50K": 0.5}] * len(real(self, feed)[0])))
    before = MLRequest.objects.count()
    response = anon.post(url, sample_row, format="json")
    assert response.status_code == 503
    assert "(logistic regression 1) could not answer" in response.json()["detail"]
    assert "nan" not in response.json()["detail"]
    assert MLRequest.objects.count() == before


@pytest.mark.parametrize("metrics", ['{"a": 1e999}', '{"a": NaN}', '{"a": "\\u0000"}',
                                     "[" * 2000 + "]" * 2000])
def test_upload_metrics_are_held_to_the_json_rules(api, registered, store, logreg_onnx, metrics):
    response = upload(api, logreg_onnx, metrics=metrics)
    assert response.status_code == 400, response.json()
    assert "metrics" in response.json()["errors"]


def test_register_models_never_overwrites_an_uploaded_version(api, registered, store,
                                                             logreg_onnx, manifest, tmp_path):
    from django.core.management import CommandError, call_command

    entry = manifest["models"][0]
    uploaded = upload(api, logreg_onnx, name=entry["name"], version="9.9.9").json()
    clash = {**manifest, "models": [{**entry, "version": "9.9.9"}]}
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(clash))
    with pytest.raises(CommandError, match="uploaded to the artifact store"):
        call_command("register_models", manifest=path, stdout=io.StringIO())
    assert MLModel.objects.get(pk=uploaded["id"]).artifact_source == "store"


def test_the_admin_upload_takes_files_over_the_body_limit(admin_client, registered, store,
                                                          logreg_onnx, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000  # smaller than the file
    artifact = io.BytesIO(logreg_onnx)
    artifact.name = "model.onnx"
    admin_client.post("/admin/endpoints/mlmodel/add/", {
        "endpoint": registered["random forest"].endpoint_id, "name": "big", "version": "1",
        "description": "", "metrics": "{}", "status": "testing", "artifact": artifact})
    assert MLModel.objects.filter(name="big").exists()
