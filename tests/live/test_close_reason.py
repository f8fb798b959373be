"""A close frame's reason fits the WebSocket limit whatever the language of the error."""

from live.socket import _close_reason


def test_a_long_reason_is_cut_to_123_bytes_on_a_character_boundary() -> None:
    reason = "el motor de síntesis falló: " + "ñ" * 100
    cut = _close_reason(reason)
    assert len(cut.encode()) <= 123
    assert reason.startswith(cut)
    assert cut.endswith("ñ")


def test_a_short_reason_is_kept_whole() -> None:
    assert _close_reason("busy: too many waiting") == "busy: too many waiting"
