from django.urls import path

app_name = "telephony"
urlpatterns: list = []
