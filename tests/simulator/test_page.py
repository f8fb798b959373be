"""The simulator page: staff only, lists the profiles, and its static files are served."""

from __future__ import annotations

import json
import re

import pytest
from django.contrib.staticfiles import finders
from django.core.management import call_command
from django.test import override_settings

from calls import global_stop
from calls.models import AgentProfile

pytestmark = pytest.mark.django_db

STATIC_FILES = ["simulator/simulator.js", "simulator/simulator.css", "simulator/worklets.js"]


def page_config(response) -> dict:
    match = re.search(
        rb'<script id="simulator-config" type="application/json">(.*?)</script>', response.content
    )
    assert match, "the page embeds its config with json_script"
    return json.loads(match.group(1))


def test_it_redirects_anonymous_users_to_the_admin_login(client):
    response = client.get("/simulator/")
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")
    assert "next=/simulator/" in response["Location"]


def test_it_refuses_logged_in_users_who_are_not_staff(client, django_user_model):
    user = django_user_model.objects.create_user(username="caller", password="pw-for-tests-1")
    client.force_login(user)
    response = client.get("/simulator/")
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


def test_it_lists_active_profiles_with_the_default_preselected(staff_client, profile):
    AgentProfile.objects.create(name="Sales line", slug="sales", language="es-ES")
    AgentProfile.objects.create(name="Retired bot", slug="retired", is_active=False)

    response = staff_client.get("/simulator/")

    assert response.status_code == 200
    html = response.content.decode()
    assert '<option value="demo" selected>' in html
    assert '<option value="sales">' in html
    assert "retired" not in html
    for channel in ("browser", "twilio", "telnyx"):
        assert f'<option value="{channel}">' in html
    assert "8 kHz phone sound" in html
    start_button = re.search(r'<button[^>]*id="start"[^>]*>', html).group(0)
    assert "disabled" not in start_button
    assert '<dd id="overlap-counts">0 backchannels · 0 interruptions</dd>' in html


def test_it_gives_the_script_the_socket_path_worklets_and_admin_call_url(staff_client, profile):
    response = staff_client.get("/simulator/")
    html = response.content.decode()
    config = page_config(response)

    assert config["wsPath"] == "/ws/simulator/"
    assert config["worklets"] == "/static/simulator/worklets.js"
    call_id = "0b6f4a6e-2f65-4d39-9d0e-3f7b8c1d2e4a"
    url = config["callUrlTemplate"].replace(config["callIdPlaceholder"], call_id)
    assert url == f"/admin/calls/call/{call_id}/change/"
    assert config["callsStopped"] is False
    assert '<script type="module" src="/static/simulator/simulator.js">' in html
    assert 'href="/static/simulator/simulator.css"' in html


def test_it_says_so_when_there_is_no_active_profile(staff_client):
    response = staff_client.get("/simulator/")
    assert response.status_code == 200
    assert b"No active agent profile" in response.content
    assert re.search(rb'<button[^>]*id="start"[^>]*disabled', response.content)


def test_it_shows_calls_disabled_while_the_global_stop_is_active(staff_client, profile, settings):
    settings.GLOBAL_STOP_MAX_ERRORS_IN_WINDOW = 1
    global_stop.report_critical_error(
        reason="groq: 500 from upstream", call_id="c1", channel="browser"
    )
    try:
        response = staff_client.get("/simulator/")
    finally:
        global_stop.reset(actor="test")

    html = response.content.decode()
    assert 'id="calls-stopped"' in html
    assert "Calls are disabled" in html and "groq: 500 from upstream" in html
    assert re.search(r'<button[^>]*id="start"[^>]*disabled', html)
    assert page_config(response)["callsStopped"] is True


@pytest.mark.parametrize("path", STATIC_FILES)
def test_its_static_files_are_found(path):
    assert finders.find(path), f"{path} is not in any static directory"


def test_its_static_files_survive_the_production_manifest_storage(staff_client, profile, tmp_path):
    """collectstatic with whitenoise's manifest storage (DEBUG=false); hashed URLs in the page."""
    storages = {
        "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
        "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
    }
    with override_settings(STATIC_ROOT=tmp_path, STORAGES=storages):
        call_command("collectstatic", interactive=False, verbosity=0)
        response = staff_client.get("/simulator/")

    html = response.content.decode()
    hashed = re.search(r'src="/static/(simulator/simulator\.[0-9a-f]{12}\.js)"', html)
    assert hashed, "the page links the hashed (cache-busting) script"
    assert (tmp_path / hashed.group(1)).is_file()
    assert (tmp_path / f"{hashed.group(1)}.gz").is_file()
    worklets = page_config(response)["worklets"]
    assert re.fullmatch(r"/static/simulator/worklets\.[0-9a-f]{12}\.js", worklets)
    assert (tmp_path / worklets.removeprefix("/static/")).is_file()
    assert re.search(r'href="/static/simulator/simulator\.[0-9a-f]{12}\.css"', html)
