"""Inputs that used to crash the service (a 500, or a value stored that should not be).

Each is sent in-process (apps/endpoints/tests/test_hostile_inputs.py) and over real HTTP to a
gunicorn with DEBUG off (tests/test_fuzz.py). Every one must be answered by a JSON 4xx whose
detail names the field at fault, and must store nothing.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from research.adult import EXAMPLE_ROW

PREDICT = "/api/v1/classifier/predict"
ROW = json.dumps(EXAMPLE_ROW)
MODEL = "apps.ml.income_classifier.random_forest.RandomForestIncomeClassifier"


# Ids differ from run to run (PostgreSQL does not rewind sequences): bodies name them by these
# placeholders, which ``Case.payload`` replaces with the registered endpoint's and models' ids.
ENDPOINT, MODELS = "__ENDPOINT__", "__MODELS__"


def row_with(**raw: str) -> str:
    """The example row as JSON text, some features replaced by raw JSON text."""
    text = ROW
    for name, value in raw.items():
        name = name.replace("_", "-")
        text = text.replace(f'"{name}": {json.dumps(EXAMPLE_ROW[name])}', f'"{name}": {value}')
    return text


def model_body(**extra) -> str:
    """A model registration as JSON text; ``raw_metrics`` is spliced in unparsed."""
    raw_metrics = extra.pop("raw_metrics", "{}")
    body = {"endpoint": ENDPOINT, "name": "hostile", "version": "1", "code": MODEL, "owner": "x",
            "artifact_path": "random_forest-0.0.1.joblib", **extra}
    return json.dumps(body)[:-1] + f', "metrics": {raw_metrics}}}'


@dataclass(frozen=True)
class Case:
    id: str
    path: str
    body: str | None
    status: int
    fragment: str
    method: str = "post"
    token: bool = False
    content_type: str = "application/json"

    def payload(self, endpoint: int, models: list[int]) -> bytes | None:
        if self.body is None:
            return None
        text = self.body.replace(f'"{ENDPOINT}"', str(endpoint))
        return text.replace(f'"{MODELS}"', json.dumps(models)).encode("utf-8", "surrogatepass")


NESTED = "[" * 2000 + "]" * 2000
DEEP_OBJECT = '{"a": ' * 40 + "1" + "}" * 40

CASES = [
    Case("float beyond float32", PREDICT, row_with(age="1e39"), 400, "'age' is out of range"),
    Case("negative float beyond float32", PREDICT, row_with(age="-1e308"), 400,
         "'age' is out of range"),
    Case("float overflowing to infinity", PREDICT, row_with(age="1e999"), 400,
         "age: number too large"),
    Case("40-digit integer", PREDICT, row_with(fnlwgt="9" * 40), 400,
         "'fnlwgt' is out of range"),
    Case("400-digit integer", PREDICT, row_with(fnlwgt="9" * 400), 400,
         "fnlwgt: number too large"),
    Case("NaN literal", PREDICT, row_with(age="NaN"), 400, "NaN is not valid JSON"),
    Case("NUL in a string", PREDICT, row_with(workclass='"Pri\\u0000vate"'), 400,
         "workclass: text must not contain NUL"),
    Case("lone surrogate in a string", PREDICT, row_with(workclass='"\\ud800"'), 400,
         "workclass: text must not contain a lone surrogate"),
    Case("lone surrogate in a key", PREDICT, ROW[:-1] + ', "\\udfff": 1}', 400,
         "a key must not contain a lone surrogate"),
    Case("2000 nested arrays", PREDICT, NESTED, 400, "nested deeper than 32 levels"),
    Case("40 nested objects in a feature", PREDICT, row_with(age=DEEP_OBJECT), 400,
         "nested deeper than 32 levels"),
    Case("1 MB category", PREDICT, row_with(workclass=json.dumps("x" * 1_000_000)), 400,
         "'workclass' is 1000000 characters long; a category has at most 100"),
    Case("body over the limit", PREDICT, row_with(workclass=json.dumps("x" * 1_100_000)), 413,
         "limit of 1048576 bytes"),
    Case("NUL in ?version", PREDICT + "?version=%00", ROW, 400, "version: Null characters"),
    Case("NUL in ?name", PREDICT + "?name=a%00b", ROW, 400, "name: Null characters"),
    Case("NUL in ?user_id", PREDICT + "?status=ab_testing&user_id=%00", ROW, 400,
         "user_id: Null characters"),
    Case("?status=archived", PREDICT + "?status=archived", ROW, 400,
         "status: 'archived' is not a status that serves predictions"),
    Case("created_after offset below year 1", "/api/v1/mlrequests?created_after="
         "0001-01-01T00:00:00%2B19:00", None, 400, "created_after: '0001-01-01T00:00:00+19:00' "
         "is outside the dates", method="get"),
    Case("created_before offset beyond year 9999", "/api/v1/mlrequests?created_before="
         "9999-12-31T23:00:00-19:00", None, 400, "created_before: '9999-12-31T23:00:00-19:00' "
         "is outside the dates", method="get"),
    Case("NUL in ?name filter", "/api/v1/mlmodels?name=%00", None, 400, "name:", method="get"),
    Case("NUL inside metrics", "/api/v1/mlmodels", model_body(raw_metrics='{"note": "\\u0000"}'),
         400, "metrics.note: text must not contain NUL", token=True),
    Case("surrogate inside metrics", "/api/v1/mlmodels",
         model_body(raw_metrics='{"note": ["\\udc00"]}'), 400,
         "metrics.note[0]: text must not contain a lone surrogate", token=True),
    Case("infinity inside metrics", "/api/v1/mlmodels", model_body(raw_metrics='{"auc": 1e999}'),
         400, "metrics.auc: number too large", token=True),
    Case("form body over the limit", "/api/v1/mlmodels", "name=" + "x" * 1_100_000, 413,
         "limit of 1048576 bytes", token=True, content_type="application/x-www-form-urlencoded"),
    Case("NUL in a form field", "/api/v1/mlmodels", "name=a%00b&metrics.note=x", 400,
         "name: text must not contain NUL", token=True,
         content_type="application/x-www-form-urlencoded"),
    Case("too many form fields", "/api/v1/mlmodels", "&".join(f"f{i}=1" for i in range(1200)),
         400, "the form has too many fields", token=True,
         content_type="application/x-www-form-urlencoded"),
    Case("nested body on a token route", "/api/v1/mlmodels", NESTED, 400,
         "nested deeper than 32 levels", token=True),
    Case("nested body starting a test", "/api/v1/abtests", NESTED, 400,
         "nested deeper than 32 levels", token=True),
    Case("split weights whose sum overflows", "/api/v1/abtests", json.dumps(
        {"title": "t", "created_by": "x", "mlmodels": MODELS, "split": [1e308, 1e308]}), 400,
         "split: weights must be positive numbers up to 1e+06", token=True),
    Case("NUL in a title", "/api/v1/abtests", json.dumps(
        {"title": "a\x00b", "created_by": "x", "mlmodels": MODELS}), 400,
         "title: text must not contain NUL", token=True),
    Case("endpoint named by a superscript digit", "/api/v1/mlmodels/upload",
         "--B\r\nContent-Disposition: form-data; name=\"endpoint\"\r\n\r\n\u00b3\r\n"
         "--B\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\nx\r\n--B--\r\n", 400,
         "no endpoint named (or with id) '\u00b3'", token=True,
         content_type="multipart/form-data; boundary=B"),
    Case("form in the punycode charset", PREDICT, "age=37&workclass=%41", 400,
         "Unsupported charset 'punycode' in request Content-Type header: a form must be in UTF-8 "
         "or another charset that keeps ASCII as it is",
         content_type="application/x-www-form-urlencoded; charset=punycode"),
    Case("multipart in the idna charset", PREDICT,
         "--B\r\nContent-Disposition: form-data; name=\"age\"\r\n\r\n37\r\n--B--\r\n", 400,
         "Unsupported charset 'idna'", content_type="multipart/form-data; boundary=B; charset=idna"),
    Case("OPTIONS on the API's docs page", "/api/docs/", None, 405,
         'Method "OPTIONS" not allowed', method="options"),
    Case("unknown path under /api/", "/api/v1/nothing/here/at/all", None, 404,
         "no API route matches '/api/v1/nothing/here/at/all'", method="get"),
    Case("unknown path under /api/ by POST", "/api/nothing", "{}", 404, "no API route matches"),
    Case("plain text body on predict", PREDICT, "age=37", 415, "Unsupported media type",
         content_type="text/plain"),
    Case("form missing features on predict", PREDICT, "age=37", 400,
         "workclass: This field is required.", content_type="application/x-www-form-urlencoded"),
    Case("malformed JSON", PREDICT, '{"age": 37,', 400, "JSON parse error"),
    Case("body in a non-text charset", PREDICT, ROW, 400, "Unsupported charset",
         content_type="application/json; charset=bz2_codec"),
]
