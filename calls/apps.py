from typing import Any

from django.apps import AppConfig
from django.db import transaction
from django.db.models.signals import post_delete, pre_save


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

        def delete_recording(sender: Any, instance: Any, **kwargs: Any) -> None:
            # After the commit: a delete that rolls back keeps its recording.
            if name := instance.recording.name:
                transaction.on_commit(lambda: services.recording_files_delete(name=name))

        # Every deletion of a call (admin, queryset, cascade) deletes its recording.
        post_delete.connect(
            delete_recording,
            sender=self.get_model("Call"),
            weak=False,
            dispatch_uid="calls.call_delete_recording",
        )
