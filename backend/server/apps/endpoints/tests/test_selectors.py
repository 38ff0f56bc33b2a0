import pytest

from apps.endpoints import predictions, selectors, services
from apps.endpoints.exceptions import InvalidInput, NotFound
from apps.endpoints.models import Status


def test_the_model_for_a_status_is_found_in_one_query(registered, django_assert_num_queries):
    with django_assert_num_queries(1):
        mlmodel = selectors.model_for_status(endpoint_name="classifier", status="production")
    assert mlmodel == registered["random forest"]


def test_an_unknown_endpoint_is_named(registered):
    with pytest.raises(NotFound, match="unknown endpoint 'regressor' \\(known endpoints: "
                                       "classifier\\)"):
        selectors.model_for_status(endpoint_name="regressor", status="production")


def test_no_model_for_the_status_is_named(registered):
    with pytest.raises(NotFound, match="no model of endpoint 'classifier' matches status "
                                       "'staging'"):
        selectors.model_for_status(endpoint_name="classifier", status="staging")


def test_several_models_for_a_status_are_ambiguous_until_narrowed(registered):
    rf = registered["random forest"]
    services.mlmodel_create(endpoint=rf.endpoint, name="random forest", version="0.0.2",
                            code=rf.code, owner="ann", artifact_path=rf.artifact_path)
    with pytest.raises(InvalidInput, match="ambiguous: 2 models .* \\(extra trees 0.0.1, "
                                           "random forest 0.0.2\\); add \\?version="):
        selectors.model_for_status(endpoint_name="classifier", status="testing")
    chosen = selectors.model_for_status(endpoint_name="classifier", status="testing",
                                        version="0.0.2")
    assert (chosen.name, chosen.version) == ("random forest", "0.0.2")
    chosen = selectors.model_for_status(endpoint_name="classifier", status="testing",
                                        name="extra trees")
    assert chosen == registered["extra trees"]


def test_status_parse_defaults_to_production_and_rejects_unknown_values():
    assert Status.parse(None) == Status.parse("") == "production"
    assert Status.parse("archived") == "archived"
    with pytest.raises(InvalidInput, match="'prod' is not a status; expected one of: testing"):
        Status.parse("prod")
    with pytest.raises(InvalidInput, match="'archived' is not a status that serves predictions"):
        Status.parse("archived", serving=True)


def test_an_archived_model_is_not_served_even_by_name(registered, sample_row):
    services.mlmodel_status_set(mlmodel=registered["extra trees"], status="archived",
                                created_by="ann")
    with pytest.raises(InvalidInput, match="not a status that serves predictions"):
        predictions.prediction_create(endpoint_name="classifier", input_data=sample_row,
                                      status="archived", name="extra trees")
