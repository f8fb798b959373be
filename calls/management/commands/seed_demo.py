"""Seed the demo profile and, in DEBUG only, a local admin user with printed credentials."""

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from calls.services import profile_ensure_demo


class Command(BaseCommand):
    help = "Create the demo agent profile and (DEBUG only) a local admin user."

    def handle(self, *args: object, **options: object) -> None:
        profile = profile_ensure_demo()
        self.stdout.write(f"Demo profile: {profile.name} (slug {profile.slug})")
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
