"""The admin renders every model and changes statuses and stops tests through the services."""
import pytest
from django.contrib.auth.models import User

from apps.endpoints import services
from apps.endpoints.models import MLModelStatus, MLRequest


@pytest.fixture
def staff(client, db):
    client.force_login(User.objects.create_superuser("admin", "a@example.com", "pw"))
    return client


@pytest.mark.parametrize("name", ["endpoint", "mlmodel", "mlmodelstatus", "mlrequest", "abtest"])
def test_every_changelist_renders(staff, registered, name):
    response = staff.get(f"/admin/endpoints/{name}/")
    assert response.status_code == 200


def test_mlmodel_list_shows_the_current_status_and_filters_by_it(staff, registered):
    page = staff.get("/admin/endpoints/mlmodel/?status=production").content.decode()
    assert "1 ML model" in page and "random forest" in page


def test_the_status_action_goes_through_the_service(staff, registered):
    et = registered["extra trees"]
    staff.post("/admin/endpoints/mlmodel/", {"action": "set_status_production",
                                             "_selected_action": [et.pk]})
    active = dict(MLModelStatus.objects.filter(active=True).values_list("mlmodel__name", "status"))
    assert active == {"extra trees": "production", "random forest": "archived"}


def test_the_stop_action_stops_a_test_and_reports_refusals(staff, registered):
    rf, et = registered["random forest"], registered["extra trees"]
    test = services.ab_test_create(title="t", created_by="ann", mlmodels=[rf, et])
    response = staff.post("/admin/endpoints/abtest/", {"action": "stop_tests",
                                                       "_selected_action": [test.pk]},
                          follow=True)
    assert "no feedback for" in response.content.decode()
    for mlmodel, feedback in ((rf, ">50K"), (et, "<=50K")):
        MLRequest.objects.create(mlmodel=mlmodel, ab_test=test, input_data={},
                                 full_response={}, response="<=50K", feedback=feedback)
    detail = staff.get(f"/admin/endpoints/abtest/{test.pk}/change/").content.decode()
    assert "accuracy 100.0%" in detail
    staff.post("/admin/endpoints/abtest/", {"action": "stop_tests",
                                            "_selected_action": [test.pk]})
    test.refresh_from_db()
    assert test.ended_at is not None and test.results["promoted"] == et.pk


def test_staff_see_api_tokens_in_the_admin(staff, api_token):
    response = staff.get("/admin/authtoken/tokenproxy/")
    assert response.status_code == 200
    assert "ml-client" in response.content.decode()


def test_staff_cannot_point_a_model_at_another_file_or_class(staff, registered):
    rf = registered["random forest"]
    before = (rf.artifact_path, rf.code)
    page = staff.get(f"/admin/endpoints/mlmodel/{rf.pk}/change/").content.decode()
    assert 'name="artifact_path"' not in page and 'name="code"' not in page
    staff.post(f"/admin/endpoints/mlmodel/{rf.pk}/change/", {
        "name": rf.name, "description": "x", "owner": "x", "metrics": "{}",
        "artifact_path": "/etc/passwd", "code": "os.system",
        "statuses-TOTAL_FORMS": 0, "statuses-INITIAL_FORMS": 0})
    rf.refresh_from_db()
    assert (rf.artifact_path, rf.code) == before
    # "Add" is the ONNX upload (test_upload.py): a file and what it is, never a path or a class.
    add = staff.get("/admin/endpoints/mlmodel/add/").content.decode()
    assert 'name="artifact"' in add and 'type="file"' in add
    assert 'name="artifact_path"' not in add and 'name="code"' not in add


@pytest.mark.parametrize("metrics, fragment", [
    ('{"auc": NaN}', "NaN is not valid JSON"),
    ('{"auc": 1e999}', "auc: number too large"),
    ('{"note": "\\u0000"}', "note: text must not contain NUL"),
    ("[" * 5000 + "]" * 5000, "nested deeper than 32 levels"),
    ("[1]", "give the metrics as a JSON object"),
    ("null", "give the metrics as a JSON object"),
])
def test_the_admins_metrics_are_held_to_the_apis_json_rules(staff, registered, metrics, fragment):
    rf = registered["random forest"]
    response = staff.post(f"/admin/endpoints/mlmodel/{rf.pk}/change/", {
        "name": rf.name, "description": "x", "owner": "x", "metrics": metrics,
        "statuses-TOTAL_FORMS": 0, "statuses-INITIAL_FORMS": 0})
    assert response.status_code == 200 and fragment in response.content.decode()
    rf.refresh_from_db()
    assert isinstance(rf.metrics, dict) and rf.description != "x"
    assert staff.get(f"/models/{rf.pk}").status_code == 200


def test_a_rename_that_clashes_with_another_version_is_refused(staff, registered):
    rf, et = registered["random forest"], registered["extra trees"]
    assert (rf.endpoint_id, rf.version) == (et.endpoint_id, et.version)
    response = staff.post(f"/admin/endpoints/mlmodel/{et.pk}/change/", {
        "name": rf.name, "description": "", "owner": "x", "metrics": "{}",
        "statuses-TOTAL_FORMS": 0, "statuses-INITIAL_FORMS": 0})
    assert response.status_code == 200 and "already exists" in response.content.decode()
    et.refresh_from_db()
    assert et.name == "extra trees"


@pytest.mark.parametrize("query", [
    "/admin/endpoints/mlrequest/?created_at__year=9999",
    "/admin/endpoints/mlrequest/?created_at__year=9999&created_at__month=12",
    "/admin/endpoints/mlrequest/?created_at__year=99999999999999999999",
])
def test_a_date_beyond_the_calendar_is_the_admins_invalid_lookup(staff, registered, query):
    response = staff.get(query)
    assert response.status_code == 302 and response["Location"].endswith("?e=1")


@pytest.mark.parametrize("query", [
    "/admin/endpoints/mlmodel/?name=%00", "/admin/endpoints/mlmodel/?status=%00",
    "/admin/endpoints/mlmodel/?q=%00", "/admin/webhooks/subscriber/?url=%00",
    "/admin/auth/user/?q=%00", "/admin/authtoken/tokenproxy/?q=a%00",
])
def test_a_nul_in_a_query_outside_the_api_is_a_400(staff, registered, query):
    response = staff.get(query)
    assert response.status_code == 400 and b"NUL character" in response.content


def test_a_form_in_another_charset_is_a_400_outside_the_api_too(client, db):
    response = client.generic("POST", "/admin/login/", b"--B\r\nContent-Disposition: form-data; "
                           b"name=\"username\"\r\n\r\nx\r\n--B--\r\n",
                           content_type="multipart/form-data; boundary=B; charset=idna")
    assert response.status_code == 400 and b"a form must be in UTF-8" in response.content


@pytest.mark.parametrize("charset", ["ISO-8859-1", "windows-1252", "utf-8", "no-such-charset"])
def test_an_api_form_in_a_charset_that_keeps_ascii_is_read(client, registered, charset):
    """Java's HttpClient sends forms as ISO-8859-1 (DRF reads them; Django's own forms take UTF-8
    only); a charset Python lacks is read as UTF-8."""
    response = client.generic("POST", "/api/v1/classifier/predict", "age=37",
                              content_type=f"application/x-www-form-urlencoded; charset={charset}")
    assert response.status_code == 400  # read: the form lacks the other features
    assert "workclass: This field is required." in response.json()["detail"]
