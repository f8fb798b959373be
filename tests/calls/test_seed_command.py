"""``seed_demo``: the demo profile for `make run`, and for a new deployment's first call."""

from __future__ import annotations

import logging
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from calls import selectors
from calls.models import AgentProfile

pytestmark = pytest.mark.django_db


def seed(*args: str) -> str:
    out = StringIO()
    call_command("seed_demo", *args, stdout=out, stderr=out)
    return out.getvalue()


def test_a_new_deployment_gets_a_default_profile_and_no_user_even_in_debug(settings):
    settings.DEBUG = True

    seed("--if-no-profile")

    assert selectors.profile_get(slug=None).slug == "demo"  # the first call is answered
    assert not get_user_model().objects.exists()


def test_a_deployment_with_its_own_profile_is_left_alone():
    AgentProfile.objects.create(name="Clinic", slug="clinic", is_default=True)

    output = seed("--if-no-profile")

    assert list(AgentProfile.objects.values_list("slug", flat=True)) == ["clinic"]
    assert "clinic" in output


def test_an_inactive_demo_profile_is_not_switched_back_on():
    AgentProfile.objects.create(name="Demo", slug="demo", is_active=False)

    output = seed("--if-no-profile")

    assert not AgentProfile.objects.get(slug="demo").is_active
    assert "inactive" in output


def test_seeding_is_idempotent():
    seed("--if-no-profile")
    seed("--if-no-profile")
    assert AgentProfile.objects.count() == 1


def test_the_demo_admin_user_exists_only_in_debug(settings):
    settings.DEBUG = False
    seed()
    assert not get_user_model().objects.exists()

    settings.DEBUG = True
    seed()
    assert get_user_model().objects.filter(username=settings.DEMO_ADMIN_USERNAME).exists()


def test_no_active_profile_is_logged_as_a_warning_with_the_fix(caplog):
    with caplog.at_level(logging.WARNING), pytest.raises(selectors.ProfileNotFound):
        selectors.profile_get(slug=None)

    (record,) = [r for r in caplog.records if r.name == "calls.selectors"]
    assert record.levelno == logging.WARNING and "no active agent profile" in record.getMessage()


@pytest.mark.django_db
def test_reseeding_upgrades_an_untouched_demo_prompt_but_keeps_an_operators_settings():
    from calls import services

    old = next(p for p in services._OLD_DEMO_PROMPTS if p.startswith("You are the friendly"))
    AgentProfile.objects.create(
        slug="demo", name="Demo", language="en-US", system_prompt=old, temperature=0.9
    )

    profile = services.profile_ensure_demo()

    assert profile.system_prompt == services.DEMO_PROMPT_EN  # never edited: upgraded
    assert profile.temperature == 0.9  # the operator's choice stays
