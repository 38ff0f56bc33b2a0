from django.urls import path

from apps.web import views

app_name = "web"
urlpatterns = [
    path("", views.home, name="home"),
    path("abtests/<int:pk>", views.ab_test_page, name="abtest"),
    path("abtests/<int:pk>/data", views.ab_test_data, name="abtest-data"),
    path("abtests/<int:pk>/stop", views.ab_test_stop, name="abtest-stop"),
    path("models/<int:pk>", views.model_page, name="model"),
    path("models/<int:pk>/data", views.model_data, name="model-data"),
]
