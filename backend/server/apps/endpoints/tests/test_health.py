"""Readiness: not ready only when production cannot serve; details only for token or staff."""
import pytest

from apps.endpoints import services
from apps.endpoints.models import MLModel
from apps.endpoints.registry import registry


@pytest.fixture
def damage(registered):
    """Give a model a checksum its file does not have, as a damaged artifact would."""
    def damage(name):
        MLModel.objects.filter(name=name).update(artifact_sha256="0" * 64)
        return registered[name]

    registry.clear()
    yield damage
    registry.clear()


def test_a_broken_testing_model_leaves_the_replica_ready_and_is_reported(client, damage):
    et = damage("extra trees")
    response = client.get("/health/ready")
    assert response.status_code == 200
    assert response.json() == {"status": "degraded", "models": 2, "failing": [
        {"id": et.pk, "name": "extra trees", "version": "0.0.1", "serves_production": False}]}


def test_a_broken_production_model_makes_the_replica_not_ready(client, damage):
    rf = damage("random forest")
    response = client.get("/health/ready")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert [(m["id"], m["serves_production"]) for m in body["failing"]] == [(rf.pk, True)]
    assert "details" not in body and "sha256" not in response.content.decode()


def test_the_incumbent_of_a_running_test_counts_as_production(client, damage, registered):
    services.ab_test_create(title="t", created_by="ann", mlmodels=list(registered.values()))
    damage("random forest")
    assert client.get("/health/ready").status_code == 503


def test_a_token_or_staff_sees_why(api, admin_client, damage):
    damage("extra trees")
    for reader in (api, admin_client):
        details = reader.get("/health/ready").json()["details"]
        assert len(details) == 1
        assert "extra trees 0.0.1" in details[0] and "but the registry expects" in details[0]
