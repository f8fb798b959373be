"""Staff-only call recordings under ``/calls/`` (namespace ``calls``): the admin's call
page plays ``calls:recording`` and draws ``calls:recording_peaks``."""

from django.urls import path

from calls import views

app_name = "calls"

urlpatterns = [
    path("<uuid:call_id>/recording/", views.call_recording, name="recording"),
    path(
        "<uuid:call_id>/recording/peaks.json",
        views.call_recording_peaks,
        name="recording_peaks",
    ),
]
