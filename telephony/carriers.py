"""The carriers we speak to, by name: shared code asks here and never branches on a name.

A carrier is one folder (``telephony/<name>/``: ``wire.py``, ``webhooks.py``, ``rest.py``,
``urls.py``) and one line below. The name is the call's ``Channel`` value.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Protocol

from calls.models import Channel
from telephony import wire
from telephony.telnyx import rest as telnyx_rest
from telephony.telnyx.wire import TelnyxStream
from telephony.twilio import rest as twilio_rest
from telephony.twilio.wire import TwilioStream


class Stream(Protocol):
    """A media socket's serializer: carrier JSON and µ-law in, PCM16 8 kHz out, and back."""

    def parse(self, text: str | None) -> list[wire.Inbound]: ...
    def token(self, start: wire.Start, path_kwargs: dict[str, Any]) -> str: ...
    def media(self, pcm16: bytes) -> str: ...
    def mark(self, name: str) -> str: ...
    def clear(self) -> str: ...
    def log_upgrade(self, scope: dict[str, Any]) -> None: ...


@dataclass(frozen=True, slots=True)
class Carrier:
    name: str  # the call's channel
    label: str
    stream_class: Callable[[], Stream]
    # can_hang_up, hang_up, transfer, release_stream, dial, ERRORS, DIAL_SETTINGS,
    # FROM_NUMBER_SETTING
    rest: ModuleType
    stream_route: str  # under /ws/telephony/
    # Said when we must end a call without REST credentials: closing the stream ends a
    # Twilio call (its <Connect> is over), not a Telnyx one.
    close_without_rest: str = ""


_TELNYX_STAYS_UP = (
    "TELNYX_API_KEY unset: closing the stream; the call stays up until the caller hangs up"
)
CARRIERS: dict[str, Carrier] = {
    c.name: c
    for c in (
        Carrier(Channel.TWILIO, "Twilio", TwilioStream, twilio_rest, "twilio/"),
        Carrier(
            Channel.TELNYX,
            "Telnyx",
            TelnyxStream,
            telnyx_rest,
            "telnyx/<str:secret>/",
            _TELNYX_STAYS_UP,
        ),
    )
}
DEFAULT = Channel.TWILIO
# Every carrier's REST failures (plus network ones): a failed hang-up or dial is logged.
REST_ERRORS: tuple[type[BaseException], ...] = (
    *(error for carrier in CARRIERS.values() for error in carrier.rest.ERRORS),
    TimeoutError,
    OSError,
)


def get(name: str) -> Carrier | None:
    return CARRIERS.get(name)


def choices() -> list[tuple[str, str]]:
    return [(c.name, c.label) for c in CARRIERS.values()]
