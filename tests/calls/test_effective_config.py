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


def test_turn_taking_fields_reach_the_call_config_with_the_defaults_a_user_wants(profile):
    config = call_config_for(profile=profile, channel="browser")
    assert (config.turn_detection, config.vad_stop_ms, config.max_turn_silence_ms) == (
        "smart",
        250,
        2500,
    )
    assert config.turn_threshold == 0.5 and config.stt_partial_interval_ms == 1000
    assert config.noise_suppression is True
    assert config.barge_in_min_ms == 900 and config.backchannel_words == ()


def test_backchannel_words_become_lower_case_trimmed_items(profile):
    profile.backchannel_words = " Claro, Got it ,, entendido ,"
    profile.full_clean()
    profile.save()
    config = call_config_for(profile=profile, channel="browser")
    assert config.backchannel_words == ("claro", "got it", "entendido")


def test_an_overlay_can_switch_a_channel_to_the_silence_timer(profile):
    overlay = ChannelOverlay(
        profile=profile,
        channel="twilio",
        overrides={
            "turn_detection": "silence",
            "silence_timeout_ms": "900",
            "turn_threshold": 0.7,
            "noise_suppression": False,
            "stt_partial_interval_ms": 0,
            "backchannel_words": ["Vale", " de acuerdo "],
        },
    )
    overlay.full_clean()
    overlay.save()

    phone = call_config_for(profile=profile, channel="twilio")
    browser = call_config_for(profile=profile, channel="browser")

    assert phone.turn_detection == "silence" and phone.silence_timeout_ms == 900
    assert phone.turn_threshold == 0.7 and phone.stt_partial_interval_ms == 0
    assert phone.noise_suppression is False
    assert phone.backchannel_words == ("vale", "de acuerdo")
    assert browser.turn_detection == "smart" and browser.noise_suppression is True


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"turn_detection": "psychic"}, "turn_detection"),
        ({"turn_threshold": 1.5}, "turn_threshold"),
        ({"vad_stop_ms": 50}, "vad_stop_ms"),
        ({"stt_partial_interval_ms": 9000}, "stt_partial_interval_ms"),
        ({"noise_suppression": "maybe"}, "noise_suppression"),
        ({"backchannel_words": ["ok", 3]}, "backchannel_words"),
        ({"max_turn_silence_ms": 600, "vad_stop_ms": 800}, "longest wait"),
    ],
)
def test_an_overlay_with_a_bad_turn_taking_value_is_rejected(profile, overrides, message):
    overlay = ChannelOverlay(profile=profile, channel="telnyx", overrides=overrides)
    with pytest.raises(ValidationError) as exc:
        overlay.full_clean()
    assert message in str(exc.value)


def test_a_profile_cannot_wait_less_for_an_unfinished_turn_than_the_pause_before_checking(
    profile,
):
    profile.vad_stop_ms, profile.max_turn_silence_ms = 1000, 800
    with pytest.raises(ValidationError) as exc:
        profile.full_clean()
    assert "max_turn_silence_ms" in exc.value.message_dict


def test_auto_never_sends_a_local_model_name_to_a_cloud_vendor(settings):
    from calls import services

    settings.GROQ_API_KEY = "gsk-test"
    spanish = services.profile_ensure_demo_es()  # LLM "auto", model qwen2.5-1.5b

    config = call_config_for(profile=spanish, channel="browser")

    assert config.llm[0].engine == "groq"
    assert config.llm[0].model == settings.GROQ_LLM_MODEL  # not "qwen2.5-1.5b"
    settings.GROQ_API_KEY = ""
    local = call_config_for(profile=spanish, channel="browser")
    assert (local.llm[0].engine, local.llm[0].model) == ("local", "qwen2.5-1.5b")
