"""Reads of the scenarios app."""

from __future__ import annotations

from collections.abc import Iterable

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
