from django.apps import AppConfig


class ScenariosConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "scenarios"
    verbose_name = "Scenario tests"

    def ready(self) -> None:
        from scenarios import tasks  # noqa: F401 - registers the Celery task
