from django.urls import path

from simulator import views

app_name = "simulator"
urlpatterns = [path("", views.simulator_page, name="page")]
