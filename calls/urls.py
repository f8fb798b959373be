from django.urls import path

from calls import views

urlpatterns = [
    path("global-stop/", views.global_stop_status, name="global-stop-status"),
    path("global-stop/reset/", views.global_stop_reset, name="global-stop-reset"),
]
