from typing import Any

from django.apps import AppConfig
from django.db.models.signals import pre_save


class CallsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "calls"
    verbose_name = "Calls and agents"

    def ready(self) -> None:
        from calls import services, tasks  # noqa: F401 - tasks: registers the Celery tasks

        def keep_one_default(sender: Any, instance: Any, **kwargs: Any) -> None:
            services.profile_keep_one_default(profile=instance)

        pre_save.connect(
            keep_one_default,
            sender=self.get_model("AgentProfile"),
            weak=False,
            dispatch_uid="calls.profile_keep_one_default",
        )
