from django.urls import path

from calls import views
from telephony import views as telephony_views

urlpatterns = [
    path("global-stop/", views.global_stop_status, name="global-stop-status"),
    path("global-stop/reset/", views.global_stop_reset, name="global-stop-reset"),
    path("calls/outbound/", telephony_views.outbound_call, name="outbound-call"),
]
