"""End calls whose session stopped sending heartbeats (process killed) as ``orphaned``."""

from datetime import timedelta

from django.conf import settings
from django.core.management.base import BaseCommand

from calls.services import calls_sweep_orphaned


class Command(BaseCommand):
    help = "End active calls with no heartbeat for --older-than seconds as orphaned."

    def add_arguments(self, parser) -> None:  # type: ignore[no-untyped-def]
        parser.add_argument("--older-than", type=int, default=settings.ORPHAN_AFTER_SECONDS)

    def handle(self, *args: object, older_than: int, **options: object) -> None:
        ended = calls_sweep_orphaned(older_than=timedelta(seconds=older_than))
        self.stdout.write(f"Ended {len(ended)} orphaned call(s).")
        for call_id in ended:
            self.stdout.write(f"  {call_id}")
