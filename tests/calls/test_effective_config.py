import pytest
from django.core.exceptions import ValidationError

from calls.models import AgentProfile, ChannelOverlay
from calls.selectors import ProfileNotFound, call_config_for, profile_get
from orchestrator.config import CallConfig

pytestmark = pytest.mark.django_db


def test_overlay_overrides_profile_fields_for_its_channel_only(profile):
    overlay = ChannelOverlay(
        profile=profile,
        channel="twilio",
        overrides={"silence_timeout_ms": 900, "voice_name": "x-phone"},
    )
    overlay.full_clean()
    overlay.save()

    phone = call_config_for(profile=profile, channel="twilio")
    browser = call_config_for(profile=profile, channel="browser")

    assert isinstance(phone, CallConfig)
    assert phone.silence_timeout_ms == 900
    assert phone.tts[0].voice == "x-phone"
    assert browser.silence_timeout_ms == profile.silence_timeout_ms
    assert phone.system_prompt == profile.system_prompt


def test_overlay_with_unknown_key_is_rejected_with_a_clear_error(profile):
    overlay = ChannelOverlay(profile=profile, channel="browser", overrides={"silence_ms": 10})
    with pytest.raises(ValidationError) as exc:
        overlay.full_clean()
    assert "Unknown field(s): silence_ms" in str(exc.value)


def test_overlay_with_bad_value_is_rejected(profile):
    overlay = ChannelOverlay(
        profile=profile, channel="telnyx", overrides={"silence_timeout_ms": 5, "llm_engine": "bard"}
    )
    with pytest.raises(ValidationError) as exc:
        overlay.full_clean()
    text = str(exc.value)
    assert "silence_timeout_ms" in text and "llm_engine" in text


def test_auto_engines_resolve_to_local_without_vendor_keys(profile, settings):
    settings.GROQ_API_KEY = ""
    settings.AZURE_SPEECH_KEY = ""
    config = call_config_for(profile=profile, channel="browser")
    assert [s.engine for s in (*config.stt, *config.llm, *config.tts)] == ["local"] * 3


def test_auto_engines_resolve_to_cloud_vendors_when_keys_are_set(profile, settings):
    settings.GROQ_API_KEY = "gsk-test"
    settings.AZURE_SPEECH_KEY = "az-test"
    profile.llm_fallback = "openai,local"
    profile.save()
    config = call_config_for(profile=profile, channel="browser")
    assert config.stt[0].engine == "groq" and config.stt[0].model == settings.GROQ_STT_MODEL
    assert [s.engine for s in config.llm] == ["groq", "openai", "local"]
    assert config.tts[0].engine == "azure"


def test_only_one_profile_is_default(profile):
    other = AgentProfile.objects.create(name="Other", slug="other", is_default=True)
    profile.refresh_from_db()
    assert other.is_default and not profile.is_default
    assert profile_get() == other


def test_unknown_or_inactive_profile_is_not_found(profile):
    profile.is_active = False
    profile.save()
    with pytest.raises(ProfileNotFound):
        profile_get(slug="demo")
    with pytest.raises(ProfileNotFound):
        profile_get(slug="nope")
