"""Every input that used to crash the service is a JSON 4xx naming the field, storing nothing.

The cases live in tests/hostile_inputs.py; tests/test_fuzz.py sends the same ones to a live
gunicorn with DEBUG off.
"""
import pytest

from apps.endpoints.models import ABTest, MLModel, MLRequest
from tests.hostile_inputs import CASES


def stored():
    return MLRequest.objects.count(), MLModel.objects.count(), ABTest.objects.count()


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_a_hostile_input_is_a_4xx_that_names_the_problem(anon, api, registered, case):
    client = api if case.token else anon
    before = stored()
    body = case.payload(registered["random forest"].endpoint_id,
                        [m.pk for m in registered.values()])
    kwargs = {} if body is None else {"data": body, "content_type": case.content_type}
    response = getattr(client, case.method)(case.path, **kwargs)
    assert response.status_code == case.status, response.content[:300]
    assert response["Content-Type"] == "application/json"
    assert set(response.json()) >= {"detail", "code"}
    assert case.fragment in response.json()["detail"]
    assert stored() == before
