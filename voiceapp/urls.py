from django.contrib import admin
from django.templatetags.static import static
from django.urls import include, path
from django.views.generic import RedirectView

from telephony.urls import api_urlpatterns as telephony_api
from voiceapp import health

admin.site.site_header = "Voice agents"
admin.site.site_title = "Voice agents"
admin.site.index_title = "Calls, transcripts and agent profiles"


class FaviconRedirect(RedirectView):
    """``/favicon.ico``, which browsers ask for on any page, at its static file's URL
    (hashed in production, so resolved per request rather than at import)."""

    permanent = False

    def get_redirect_url(self, *args: object, **kwargs: object) -> str:
        return static("favicon.ico")


urlpatterns = [
    # Nothing public lives at the root: it leads to the admin (also its "View site" link).
    path("", RedirectView.as_view(pattern_name="admin:index", permanent=False), name="root"),
    path("favicon.ico", FaviconRedirect.as_view(), name="favicon"),
    path("health/", health.health, name="health"),
    path("health/ready/", health.ready, name="health-ready"),
    path("", include("calls.public_urls")),
    path("admin/", admin.site.urls),
    path("calls/", include("calls.recording_urls")),
    path("simulator/", include("simulator.urls")),
    path("telephony/", include("telephony.urls")),
    path("api/", include("calls.urls")),
    path("api/", include(telephony_api)),
]
