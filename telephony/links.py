"""Public URLs of this deployment, as the carriers see them (``PUBLIC_BASE_URL``).

Signatures are checked against these, never against the request URL a proxy or tunnel
rewrote; stream URLs handed to the carriers are built from them too.
"""

from __future__ import annotations

import logging

from django.conf import settings

logger = logging.getLogger(__name__)

TWILIO_STREAM_PATH = "/ws/telephony/twilio/"
TELNYX_STREAM_PATH = "/ws/telephony/telnyx/{secret}/"
TWILIO_STATUS_PATH = "/telephony/twilio/status/"
TWILIO_AMD_PATH = "/telephony/twilio/amd/"


def twilio_amd_path(call_id: str) -> str:
    # The call record rides in the query: Twilio signs the whole URL, so it cannot be forged.
    return f"{TWILIO_AMD_PATH}?call_id={call_id}"


def public_url(path_and_query: str) -> str:
    return settings.PUBLIC_BASE_URL + path_and_query


def ws_url(path: str) -> str:
    """``https://host`` -> ``wss://host/path`` (``ws://`` for a plain-http dev base)."""
    base = settings.PUBLIC_BASE_URL
    if base.startswith("https://"):
        return "wss://" + base.removeprefix("https://") + path
    logger.warning("PUBLIC_BASE_URL %s is not https: carriers require wss:// stream URLs", base)
    return "ws://" + base.removeprefix("http://") + path


def twilio_stream_url() -> str:
    # No query string: Twilio rejects it (error 31920); the call id and token go in <Parameter>s.
    return ws_url(TWILIO_STREAM_PATH)


def telnyx_stream_url(secret: str) -> str:
    return ws_url(TELNYX_STREAM_PATH.format(secret=secret))
