"""The profile list's "duplicate" action and the flow as a file: download, import, YAML."""

from __future__ import annotations

import json

import pytest
import yaml
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from calls.admin.profile import flow_to_yaml
from calls.models import AgentProfile, ChannelOverlay, ProfileTool
from tests.calls.test_admin_pages import profile_form_data
from tests.flows.booking import FLOW, flow

pytestmark = pytest.mark.django_db

LIST = "/admin/calls/agentprofile/"


@pytest.fixture
def booking_profile(profile):
    profile.transfer_destinations = "Front desk = +34910000000"
    profile.phone_numbers = "+34910000001"
    profile.is_default = True
    profile.flow = FLOW
    profile.save()
    ProfileTool.objects.create(
        profile=profile, name="book_table", description="Book.", secret="s3cret",
        url="https://bookings.example.com/book",
    )  # fmt: skip
    ChannelOverlay.objects.create(profile=profile, channel="twilio", overrides={"vad_stop_ms": 300})
    return profile


@pytest.fixture
def profile_factory(profile):
    def make(**fields):
        return AgentProfile.objects.create(
            **{"name": fields["slug"].title(), "language": profile.language, **fields}
        )

    return make


@pytest.fixture
def viewer(django_user_model):
    from django.contrib.auth.models import Permission

    user = django_user_model.objects.create_user(username="viewer", is_staff=True)
    user.user_permissions.add(
        Permission.objects.get(codename="view_agentprofile"),
        Permission.objects.get(codename="change_agentprofile"),
    )
    return user


def duplicate(staff_client, *profiles):
    data = {"action": "duplicate", "_selected_action": [p.pk for p in profiles]}
    return staff_client.post(LIST, data)


def test_duplicating_a_profile_copies_its_settings_tools_and_overlays_but_takes_no_calls(
    staff_client, booking_profile
):
    response = duplicate(staff_client, booking_profile)

    copy = AgentProfile.objects.get(slug=f"{booking_profile.slug}-copy")
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:calls_agentprofile_change", args=[copy.pk])
    assert copy.name == f"{booking_profile.name} (copy)"
    assert copy.flow == FLOW and copy.system_prompt == booking_profile.system_prompt
    assert copy.transfer_destinations == booking_profile.transfer_destinations
    # Routing stays with the original: a number belongs to one profile, one is the default.
    assert copy.phone_numbers == "" and not copy.is_default
    assert AgentProfile.objects.get(pk=booking_profile.pk).is_default
    tool = copy.tools.get()
    assert (tool.name, tool.url, tool.secret) == ("book_table", "https://bookings.example.com/book",
                                                  "s3cret")  # fmt: skip
    assert copy.overlays.get().overrides == {"vad_stop_ms": 300}
    assert booking_profile.tools.count() == 1 and booking_profile.overlays.count() == 1


def test_duplicating_twice_finds_a_free_slug_and_several_at_once_lists_the_copies(
    staff_client, booking_profile, profile_factory
):
    duplicate(staff_client, booking_profile)
    other = profile_factory(slug="other")
    response = duplicate(staff_client, booking_profile, other)
    assert response.status_code == 302 and response["Location"].endswith(LIST)
    slugs = set(AgentProfile.objects.values_list("slug", flat=True))
    assert {f"{booking_profile.slug}-copy", f"{booking_profile.slug}-copy-2", "other-copy"} <= slugs
    page = staff_client.get(LIST).content.decode()
    assert "Copies (no phone numbers, not default)" in page


def test_a_user_who_cannot_add_profiles_cannot_duplicate_them(client, booking_profile, viewer):
    client.force_login(viewer)
    duplicate(client, booking_profile)
    assert not AgentProfile.objects.filter(slug__endswith="-copy").exists()


@pytest.mark.parametrize("fmt", ["yaml", "json"])
def test_the_flow_downloads_as_a_file_that_imports_into_another_profile(
    staff_client, booking_profile, profile_factory, fmt
):
    url = reverse("admin:calls_agentprofile_flow_export", args=[booking_profile.pk, fmt])
    response = staff_client.get(url)
    assert response.status_code == 200
    name = f"{booking_profile.slug}-flow.{fmt}"
    assert response["Content-Disposition"] == f'attachment; filename="{name}"'
    body = response.content
    assert (yaml.safe_load(body) if fmt == "yaml" else json.loads(body)) == FLOW
    page = staff_client.get(f"{LIST}{booking_profile.pk}/change/").content.decode()
    assert url in page

    target = profile_factory(slug="variant", transfer_destinations="Front desk = +34910000002")
    ProfileTool.objects.create(profile=target, name="book_table", description="Book.",
                               url="https://bookings.example.com/book")  # fmt: skip
    form_url, form = profile_form_data(staff_client, target)
    form["transfer_destinations"] = target.transfer_destinations
    form["flow_file"] = SimpleUploadedFile(name, body)
    response = staff_client.post(form_url, form)
    assert response.status_code == 302, response.context["adminform"].form.errors
    assert AgentProfile.objects.get(pk=target.pk).flow == FLOW


def test_an_imported_flow_with_a_problem_is_refused_with_the_specific_error(
    staff_client, booking_profile
):
    broken = flow()
    broken["start"] = "lobby"
    form_url, form = profile_form_data(staff_client, booking_profile)
    form["transfer_destinations"] = booking_profile.transfer_destinations
    form["flow_file"] = SimpleUploadedFile("f.yaml", flow_to_yaml(broken).encode())
    response = staff_client.post(form_url, form)
    assert response.status_code == 200
    assert response.context["adminform"].form.errors["flow"] == [
        "The start node “lobby” is not a node."
    ]

    form["flow_file"] = SimpleUploadedFile("f.yaml", b"start: [unclosed\n")
    response = staff_client.post(form_url, form)
    errors = response.context["adminform"].form.errors["flow_file"]
    assert errors[0].startswith("Not valid JSON or YAML") and "line 2" in errors[0]
    assert AgentProfile.objects.get(pk=booking_profile.pk).flow == FLOW


def test_the_flow_box_takes_yaml_and_saves_it_as_json(staff_client, booking_profile):
    form_url, form = profile_form_data(staff_client, booking_profile)
    form["transfer_destinations"] = booking_profile.transfer_destinations
    form["flow"] = flow_to_yaml(FLOW)
    response = staff_client.post(form_url, form)
    assert response.status_code == 302, response.context["adminform"].form.errors
    assert AgentProfile.objects.get(pk=booking_profile.pk).flow == FLOW


def test_flow_yaml_is_plain_data_no_aliases_and_yes_stays_a_word(staff_client, booking_profile):
    form_url, form = profile_form_data(staff_client, booking_profile)
    form["transfer_destinations"] = booking_profile.transfer_destinations
    # A few lines of nested aliases would expand to gigabytes: refused where they start.
    form["flow"] = "a: &a [x, x, x]\nb: &b [*a, *a, *a]\nstart: greet\n"
    response = staff_client.post(form_url, form)
    errors = response.context["adminform"].form.errors["flow"]
    assert "aliases (*name) are not allowed" in errors[0]

    with_words = flow()
    with_words["nodes"][2]["transitions"][0]["schema"] = {
        "type": "object", "properties": {"answer": {"enum": ["yes", "no"]}},
    }  # fmt: skip
    form["flow"] = flow_to_yaml(with_words).replace("'yes'", "yes")
    assert "- yes" in form["flow"]  # unquoted: YAML 1.1 would read a boolean
    response = staff_client.post(form_url, form)
    assert response.status_code == 302, response.context["adminform"].form.errors
    saved = AgentProfile.objects.get(pk=booking_profile.pk).flow
    assert saved["nodes"][2]["transitions"][0]["schema"]["properties"]["answer"]["enum"] == [
        "yes", "no"
    ]  # fmt: skip
