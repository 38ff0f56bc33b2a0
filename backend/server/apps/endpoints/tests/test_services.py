"""Services against the real database: status changes, model registration, predict, feedback."""
import pytest
from django.db import IntegrityError, transaction

from apps.endpoints import predictions, services
from apps.endpoints.exceptions import Conflict, InvalidInput
from apps.endpoints.models import MLModel, MLModelStatus, MLRequest, Status


def active_status(mlmodel):
    return MLModelStatus.objects.get(mlmodel=mlmodel, active=True).status


def test_setting_a_status_deactivates_the_model_s_others(registered):
    et = registered["extra trees"]
    services.mlmodel_status_set(mlmodel=et, status="staging", created_by="ann")
    assert active_status(et) == Status.STAGING
    assert list(MLModelStatus.objects.filter(mlmodel=et).values_list("status", "active")) == [
        ("testing", False), ("staging", True)]


def test_promoting_to_production_archives_the_previous_holder_in_the_same_step(registered):
    rf, et = registered["random forest"], registered["extra trees"]
    services.mlmodel_status_set(mlmodel=et, status="production", created_by="ann")
    assert active_status(et) == Status.PRODUCTION
    assert active_status(rf) == Status.ARCHIVED
    assert MLModelStatus.objects.filter(status="production", active=True).count() == 1


def test_setting_the_current_status_again_changes_nothing(registered):
    rf = registered["random forest"]
    before = MLModelStatus.objects.count()
    services.mlmodel_status_set(mlmodel=rf, status="production", created_by="ann")
    assert MLModelStatus.objects.count() == before


@pytest.mark.parametrize("status, error, fragment", [
    ("retired", InvalidInput, "'retired' is not a status; expected one of: testing, staging"),
    ("ab_testing", InvalidInput, "by starting an A/B test"),
])
def test_unknown_and_reserved_statuses_are_refused(registered, status, error, fragment):
    with pytest.raises(error, match=fragment):
        services.mlmodel_status_set(
            mlmodel=registered["extra trees"], status=status, created_by="ann")
    assert active_status(registered["extra trees"]) == Status.TESTING


def test_the_database_refuses_two_active_statuses_for_one_model(registered):
    et = registered["extra trees"]
    with pytest.raises(IntegrityError), transaction.atomic():
        MLModelStatus.objects.create(mlmodel=et, endpoint=et.endpoint, status="staging",
                                     created_by="x")


@pytest.mark.parametrize("status", [
    pytest.param("production", id="a second production model on the endpoint"),
    pytest.param("retired", id="an unknown status"),
])
def test_the_database_refuses_a_status_the_services_would_refuse(registered, status):
    et = registered["extra trees"]
    MLModelStatus.objects.filter(mlmodel=et).update(active=False)
    with pytest.raises(IntegrityError), transaction.atomic():
        MLModelStatus.objects.create(mlmodel=et, endpoint=et.endpoint, status=status,
                                     created_by="x")


def model_kwargs(registered, **overrides):
    rf = registered["random forest"]
    return {"endpoint": rf.endpoint, "name": "random forest", "version": "0.0.2",
            "code": rf.code, "owner": "ann", "artifact_path": rf.artifact_path, **overrides}


def test_creating_a_model_records_its_checksum_and_first_status(registered):
    mlmodel = services.mlmodel_create(**model_kwargs(registered, status="staging"))
    assert mlmodel.artifact_sha256 == registered["random forest"].artifact_sha256
    assert mlmodel.classes == ["<=50K", ">50K"]
    assert active_status(mlmodel) == Status.STAGING


@pytest.mark.parametrize("overrides, fragment", [
    ({"code": "apps.ml.nothing.Here"}, "code: unknown algorithm 'apps.ml.nothing.Here'; the "
                                       "registered algorithms are: apps.ml.income_classifier"),
    ({"code": "json.JSONDecoder"}, "code: unknown algorithm 'json.JSONDecoder'"),
    ({"artifact_path": "nope.joblib"}, "artifact_path: the bundled folder has no file "
                                       "'nope.joblib'"),
    ({"artifact_sha256": "0" * 64}, "artifact_sha256: the file '.*' does not have the sha256 "
                                    "given"),
])
def test_creating_a_model_with_a_bad_reference_stores_nothing(registered, overrides, fragment):
    with pytest.raises(InvalidInput, match=fragment):
        services.mlmodel_create(**model_kwargs(registered, **overrides))
    assert MLModel.objects.count() == 2


def test_creating_a_duplicate_version_is_a_conflict_and_stores_nothing(registered):
    with pytest.raises(Conflict, match="already has a model 'random forest' version '0.0.1'"):
        services.mlmodel_create(**model_kwargs(registered, version="0.0.1"))
    assert MLModel.objects.count() == 2
    assert MLModelStatus.objects.count() == 2


def test_prediction_is_served_by_production_and_stored(registered, sample_row):
    mlrequest = predictions.prediction_create(endpoint_name="classifier", input_data=sample_row)
    assert mlrequest.mlmodel == registered["random forest"]
    assert mlrequest.response == "<=50K"
    assert mlrequest.full_response["label"] == "<=50K"
    assert MLRequest.objects.get().input_data == sample_row


def test_prediction_path_costs_one_query_and_one_insert(registered, sample_row,
                                                        django_assert_num_queries):
    predictions.prediction_create(endpoint_name="classifier", input_data=sample_row)  # warm
    with django_assert_num_queries(2):
        predictions.prediction_create(endpoint_name="classifier", input_data=sample_row)


def test_an_invalid_input_stores_nothing(registered, sample_row):
    del sample_row["age"]
    with pytest.raises(InvalidInput, match="missing feature"):
        predictions.prediction_create(endpoint_name="classifier", input_data=sample_row)
    assert MLRequest.objects.count() == 0


def test_feedback_is_recorded_with_its_time(registered, sample_row):
    mlrequest = predictions.prediction_create(endpoint_name="classifier", input_data=sample_row)
    services.feedback_set(mlrequest=mlrequest, feedback=">50K")
    mlrequest.refresh_from_db()
    assert mlrequest.feedback == ">50K" and mlrequest.feedback_at is not None


def test_feedback_outside_the_model_s_classes_is_refused(registered, sample_row):
    mlrequest = predictions.prediction_create(endpoint_name="classifier", input_data=sample_row)
    with pytest.raises(InvalidInput, match="expected one of: '<=50K', '>50K'"):
        services.feedback_set(mlrequest=mlrequest, feedback=">50K.")
    mlrequest.refresh_from_db()
    assert mlrequest.feedback is None
