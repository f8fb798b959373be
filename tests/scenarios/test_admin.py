"""Scenarios in the admin and as YAML: import, export, validation, running, results."""

from __future__ import annotations

import pytest
import yaml
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from scenarios.models import Scenario, ScenarioResult
from scenarios.services import SHIPPED, scenario_import, scenarios_export, yaml_documents

pytestmark = pytest.mark.django_db

YAML = """\
name: Booking happy path
slug: booking
profile: demo
tags: [offline, booking]
enabled: true
voice: joe
caller:
  script:
    - wait_for_agent: true
    - say: [I would like a table, 1.0, for two people.]
    - wait_for_agent: {timeout_s: 40}
    - hang_up: true
assertions:
  - transcript_contains: {side: agent, text: [table, book]}
  - end_reason: caller_hangup
---
name: Keys
slug: keys
profile: demo
tags: []
enabled: false
caller:
  script:
    - dtmf: "42#"
assertions:
  - dtmf_received: "42#"
"""


def test_yaml_import_and_export_round_trip(profile):
    saved = scenario_import(documents=yaml_documents(YAML))
    assert [str(s) for s in saved] == ["demo/booking", "demo/keys"]
    booking = Scenario.objects.get(slug="booking")
    assert booking.tag_list == ["offline", "booking"] and booking.enabled
    assert "name" not in booking.spec and booking.spec["voice"] == "joe"

    exported = scenarios_export(scenarios=Scenario.objects.order_by("slug"))
    assert list(yaml.safe_load_all(exported)) == list(yaml.safe_load_all(YAML))

    # Importing the export again updates in place: same rows, same content.
    scenario_import(documents=yaml_documents(exported))
    assert Scenario.objects.count() == 2
    assert scenarios_export(scenarios=Scenario.objects.order_by("slug")) == exported


def test_the_admin_imports_a_yaml_upload_and_exports_it(staff_client, profile):
    url = reverse("admin:scenarios_scenario_import")
    upload = SimpleUploadedFile("demo.yaml", YAML.encode(), content_type="application/yaml")
    response = staff_client.post(url, {"file": upload})
    assert response.status_code == 302
    assert Scenario.objects.count() == 2

    changelist = reverse("admin:scenarios_scenario_changelist")
    page = staff_client.get(changelist)
    assert b"Import YAML" in page.content and b"Booking happy path" in page.content
    ids = list(Scenario.objects.values_list("pk", flat=True))
    response = staff_client.post(changelist, {"action": "export_yaml", "_selected_action": ids})
    assert response["Content-Disposition"] == 'attachment; filename="scenarios.yaml"'
    docs = list(yaml.safe_load_all(response.content))
    assert {d["slug"] for d in docs} == {"booking", "keys"}


def test_the_admin_refuses_an_invalid_upload_with_every_error(staff_client, profile):
    bad = YAML.replace("end_reason: caller_hangup", "end_reason: hung_up").replace(
        "profile: demo\ntags: []", "profile: nobody\ntags: []"
    )
    upload = SimpleUploadedFile("bad.yaml", bad.encode())
    response = staff_client.post(reverse("admin:scenarios_scenario_import"), {"file": upload})
    assert response.status_code == 200
    text = response.content.decode()
    assert "bad.yaml document 1: assertions[1].end_reason: unknown end reason" in text
    assert "bad.yaml document 2: profile: no agent profile with slug" in text
    assert Scenario.objects.count() == 0  # all or nothing

    not_yaml = SimpleUploadedFile("x.yaml", b"name: [unclosed")
    response = staff_client.post(reverse("admin:scenarios_scenario_import"), {"file": not_yaml})
    assert "x.yaml: not valid YAML" in response.content.decode()


def test_the_admin_form_shows_spec_errors_at_their_path(staff_client, profile):
    url = reverse("admin:scenarios_scenario_add")
    spec = '{"caller": {"script": [{"say": ""}]}, "assertions": [{"turns": {}}]}'
    response = staff_client.post(
        url, {"profile": profile.pk, "name": "X", "slug": "x", "tags": "", "enabled": "on",
              "spec": spec}
    )  # fmt: skip
    assert response.status_code == 200
    text = response.content.decode()
    assert "caller.script[0].say: must be non-empty text" in text
    assert "assertions[0].turns: needs at least one of min, max" in text
    assert not Scenario.objects.exists()


def test_the_results_list_links_each_run_to_its_call(staff_client, profile):
    from django.utils import timezone

    from calls.models import Call, Channel

    call = Call.objects.create(profile=profile, channel=Channel.TWILIO, started_at=timezone.now())
    ScenarioResult.objects.create(
        scenario_label="demo/booking", status="failed", call=call, started_at=timezone.now(),
        duration_s=3.2, checks=[{"check": "end_reason caller_hangup", "status": "failed",
                                 "message": "ended by error", "evidence": {}}],
    )  # fmt: skip
    page = staff_client.get(reverse("admin:scenarios_scenarioresult_changelist"))
    assert reverse("admin:calls_call_change", args=[call.pk]).encode() in page.content
    assert b"failed" in page.content and b"0/1" in page.content
    result = ScenarioResult.objects.get()
    detail = staff_client.get(reverse("admin:scenarios_scenarioresult_change", args=[result.pk]))
    assert b"ended by error" in detail.content


def test_seed_demo_loads_the_shipped_scenarios_and_keeps_an_edited_one(settings):
    import io

    from django.core.management import call_command

    settings.DEBUG = False  # no admin user: only the profiles and their scenarios
    call_command("seed_demo", stdout=io.StringIO())
    counts = {p: Scenario.objects.filter(profile__slug=p).count() for p in ("demo", "demo-es")}
    assert counts == {"demo": 9, "demo-es": 6}
    Scenario.objects.filter(slug="dtmf").update(name="Edited by an operator")

    call_command("seed_demo", stdout=io.StringIO())

    assert Scenario.objects.get(slug="dtmf").name == "Edited by an operator"
    assert Scenario.objects.count() == len(list(SHIPPED.glob("*/*.yaml")))  # one each


@pytest.mark.django_db
def test_the_profile_page_runs_its_scenarios_and_shows_their_results(
    staff_client, profile, django_capture_on_commit_callbacks
):
    scenario_import(documents=yaml_documents(YAML))
    page = staff_client.get(reverse("admin:calls_agentprofile_change", args=[profile.pk]))
    run_url = reverse("admin:scenarios_scenario_run_profile", args=[profile.pk])
    assert run_url in page.content.decode()
    assert staff_client.get(run_url).status_code == 405
    # Not executed: the queued task places real calls (tests/scenarios/test_runner.py).
    with django_capture_on_commit_callbacks(execute=False) as queued:
        response = staff_client.post(run_url)
    assert len(queued) == 1
    assert response.status_code == 302
    assert response["Location"].endswith(f"?scenario__profile__id__exact={profile.pk}")
    assert "queued" in str(list(response.wsgi_request._messages))


def test_staff_without_the_scenario_permission_cannot_run_a_profile(
    client, django_user_model, profile
):
    clerk = django_user_model.objects.create_user(username="clerk", is_staff=True)
    client.force_login(clerk)
    run_url = reverse("admin:scenarios_scenario_run_profile", args=[profile.pk])
    assert client.post(run_url).status_code == 403
