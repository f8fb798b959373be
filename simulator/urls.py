from django.urls import path

app_name = "simulator"
urlpatterns: list = []
