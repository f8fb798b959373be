import logging

from django.apps import AppConfig
from django.conf import settings


class TelephonyConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "telephony"

    def ready(self) -> None:
        if settings.TELEPHONY_ALLOW_UNSIGNED:
            logging.getLogger(__name__).warning(
                "TELEPHONY_ALLOW_UNSIGNED=true: carrier webhooks and streams are NOT "
                "authenticated. Development only; never enable this on a public deployment."
            )
