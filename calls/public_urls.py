from django.urls import path

from calls import views

urlpatterns = [
    path("metrics", views.metrics, name="metrics"),
    path("admin/global-stop/", views.global_stop_admin, name="global-stop-admin"),
]
