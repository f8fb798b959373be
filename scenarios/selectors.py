"""Reads of the scenarios app."""

from __future__ import annotations

from collections.abc import Iterable

from calls import selectors as calls_selectors
from calls.models import AgentProfile
from scenarios.models import Scenario


def scenarios_matching(
    *, profile: str = "", tags: Iterable[str] = (), ids: Iterable[int] | None = None
) -> list[Scenario]:
    """Enabled scenarios of ``profile`` (any when empty) carrying every tag of ``tags``."""
    found = Scenario.objects.select_related("profile").filter(enabled=True)
    if profile:
        found = found.filter(profile__slug=profile)
    if ids is not None:
        found = found.filter(pk__in=list(ids))
    wanted = {t.strip() for t in tags if t.strip()}
    # Tags are a short comma-separated field: filtered here, the same on SQLite and Postgres.
    return [s for s in found if wanted <= set(s.tag_list)]


# Dialled to reach the default profile: a fictional number (555-01xx) no profile lists.
UNLISTED_NUMBER = "+15555550199"


def number_for_profile(*, slug: str) -> str | None:
    """The number a call must be placed to for profile ``slug`` on a carrier that routes by
    the called number (Telnyx): the profile's first phone number, or, for the default
    profile, a number nobody lists; None when no number reaches it."""
    profile = AgentProfile.objects.filter(slug=slug, is_active=True).first()
    if profile is None:
        return None
    if numbers := profile.phone_number_list():
        return numbers[0]
    try:
        default = calls_selectors.profile_get(slug=None)
    except calls_selectors.ProfileNotFound:
        return None
    return UNLISTED_NUMBER if default.pk == profile.pk else None
