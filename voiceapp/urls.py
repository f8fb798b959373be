from django.contrib import admin
from django.urls import include, path

from telephony.urls import api_urlpatterns as telephony_api
from voiceapp import health

admin.site.site_header = "Voice agents"
admin.site.site_title = "Voice agents"
admin.site.index_title = "Calls, transcripts and agent profiles"

urlpatterns = [
    path("health/", health.health, name="health"),
    path("health/ready/", health.ready, name="health-ready"),
    path("", include("calls.public_urls")),
    path("admin/", admin.site.urls),
    path("simulator/", include("simulator.urls")),
    path("telephony/", include("telephony.urls")),
    path("api/", include("calls.urls")),
    path("api/", include(telephony_api)),
]
