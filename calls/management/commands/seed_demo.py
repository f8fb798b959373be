"""Seed the demo profiles (English ``demo``, Spanish ``demo-es``, the booking flow
``demo-flow`` / ``demo-flow-es``) and, in DEBUG only, a local admin user with printed
credentials.

``--if-no-profile`` is for deployments (compose's one-shot ``migrate`` service runs it on
every start): a new deployment gets the demo profile, so its first call is answered
instead of apologized for, and a deployment that has its own profiles is left alone.
It never creates a user, whatever DEBUG says.
"""

from django.apps import apps
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser

from calls import selectors
from calls.services import (
    profile_ensure_demo,
    profile_ensure_demo_es,
    profile_ensure_demo_flow,
    profile_ensure_demo_flow_es,
)


class Command(BaseCommand):
    help = "Create the demo agent profile and (DEBUG only) a local admin user."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--if-no-profile",
            action="store_true",
            help="Create the demo profile only when no active profile exists; never a user.",
        )

    def handle(self, *args: object, **options: object) -> None:
        if options["if_no_profile"]:
            self._ensure_a_profile()
            return
        # demo-flow(-es): the same restaurant through the booking flow (docs/flows.md).
        demos = (
            profile_ensure_demo(),
            profile_ensure_demo_es(),
            profile_ensure_demo_flow(),
            profile_ensure_demo_flow_es(),
        )
        for profile in demos:
            self.stdout.write(f"Demo profile: {profile.name} (slug {profile.slug})")
        if apps.is_installed("scenarios"):
            # By command name: calls/ never imports the scenarios app (scripts/check_imports.py).
            # Only new ones: a shipped scenario an operator edited stays as they left it.
            call_command("load_scenarios", "--only-new", stdout=self.stdout)
        if not settings.DEBUG:
            self.stdout.write("DEBUG is off: no demo admin user created (use createsuperuser).")
            return
        User = get_user_model()
        username, password = settings.DEMO_ADMIN_USERNAME, settings.DEMO_ADMIN_PASSWORD
        user, created = User.objects.get_or_create(
            username=username, defaults={"is_staff": True, "is_superuser": True}
        )
        if created:
            user.set_password(password)
            user.save()
            self.stdout.write(self.style.SUCCESS(f"Admin user created: {username} / {password}"))
        else:
            self.stdout.write(f"Admin user exists: {username} (password unchanged)")

    def _ensure_a_profile(self) -> None:
        active = list(selectors.profiles_active().values_list("slug", flat=True)[:5])
        if active:
            self.stdout.write(f"Active profile(s) {', '.join(active)}: none created.")
            return
        profile = profile_ensure_demo()
        if not profile.is_active:
            # An operator switched it off; switching it back on is theirs to decide.
            self.stderr.write(
                self.style.WARNING(
                    f"No active profile, and the demo profile {profile.slug!r} is inactive: "
                    "calls will hear the apology until a profile is activated in the admin."
                )
            )
            return
        self.stdout.write(
            self.style.SUCCESS(f"No active profile: created {profile.name} (slug {profile.slug}).")
        )
