"""Telnyx Call Control v2, the commands we send: answer, speak, hang up, transfer, stop
streaming, dial with answering-machine detection (blocking httpx)."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from django.conf import settings

from calls.models import VoicemailAction
from telephony import links
from telephony.telnyx.wire import client_state

_ALREADY_ENDED = "90018"  # Call Control error code: "call has already ended"
# answering_machine_detection per profile action. To hang up, "detect" is enough
# (call.machine.detection.ended); to leave a message, "greeting_end" also reports the end
# of a machine's greeting (call.machine.greeting.ended: beep, silence or not sure).
# "detect_beep" reports that end only when it hears a beep, and "premium" only with a beep
# too: a greeting without one would leave the message waiting for nothing.
_MACHINE_DETECTION = {
    VoicemailAction.HANG_UP: "detect",
    VoicemailAction.LEAVE_MESSAGE: "greeting_end",
}
TRANSFER_RING_S = 30  # how long the transfer destination may ring (Telnyx timeout_secs)
# client_state mode of the new leg a transfer dials (its webhooks carry it).
TRANSFER_LEG = "transfer"


class CallControlError(Exception):
    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def stream_fields(stream_url: str) -> dict[str, Any]:
    """A bidirectional raw-audio stream of the caller's side only (docs/protocols.md §2.2)."""
    return {
        "stream_url": stream_url,
        "stream_track": "inbound_track",
        "stream_bidirectional_mode": "rtp",  # the default, mp3, is whole files
        "stream_bidirectional_codec": "PCMU",
        "stream_bidirectional_sampling_rate": 8000,
        "stream_bidirectional_target_legs": "self",
    }


class CallControl:
    """The few Call Control v2 commands we send (blocking httpx; use ``asyncio.to_thread``)."""

    TIMEOUT_S = 10.0

    def __init__(self, *, timeout_s: float | None = None) -> None:
        self.base_url = settings.TELNYX_API_BASE_URL.rstrip("/")
        self.api_key = settings.TELNYX_API_KEY
        if timeout_s is not None:
            self.TIMEOUT_S = timeout_s

    def _post(self, path: str, body: dict[str, Any]) -> httpx.Response:
        if not self.api_key:
            raise CallControlError("TELNYX_API_KEY is not set")
        try:
            response = httpx.post(
                f"{self.base_url}{path}",
                json=body,
                headers={"Authorization": f"Bearer {self.api_key}"},
                timeout=self.TIMEOUT_S,
            )
        except httpx.HTTPError as exc:
            raise CallControlError(f"{path}: {exc!r}") from exc
        return response

    def _command(self, call_control_id: str, action: str, body: dict[str, Any]) -> httpx.Response:
        body = {**body, "command_id": str(uuid.uuid4())}
        return self._post(f"/calls/{call_control_id}/actions/{action}", body)

    @staticmethod
    def _raise_for(response: httpx.Response, what: str) -> None:
        if response.status_code >= 300:
            raise CallControlError(
                f"{what}: HTTP {response.status_code} {response.text[:300]}",
                status=response.status_code,
            )

    def answer(self, call_control_id: str, *, stream_url: str, client_state: str) -> None:
        body = {**stream_fields(stream_url), "client_state": client_state}
        self._raise_for(self._command(call_control_id, "answer", body), "answer")

    def answer_plain(self, call_control_id: str, *, client_state: str) -> None:
        self._raise_for(
            self._command(call_control_id, "answer", {"client_state": client_state}), "answer"
        )

    def speak(self, call_control_id: str, *, text: str, language: str, client_state: str) -> None:
        body = {
            "payload": text,
            "voice": "female",
            "language": language or "en-US",
            "client_state": client_state,
        }
        self._raise_for(self._command(call_control_id, "speak", body), "speak")

    def reject(self, call_control_id: str, *, cause: str = "USER_BUSY") -> None:
        """Refuse a ringing incoming call unanswered (``cause``: ``USER_BUSY`` or
        ``CALL_REJECTED``); Telnyx then sends ``call.hangup``."""
        self._raise_for(self._command(call_control_id, "reject", {"cause": cause}), "reject")

    def hang_up(self, call_control_id: str) -> bool:
        """True if we ended the call, False if it had already ended (422 / 90018)."""
        response = self._command(call_control_id, "hangup", {})
        if response.status_code == 422 and _ALREADY_ENDED in response.text:
            return False
        self._raise_for(response, "hangup")
        return True

    def transfer(
        self, call_control_id: str, *, to: str, from_: str, call_id: str, client_state: str
    ) -> None:
        """Cold transfer: Telnyx dials ``to`` (E.164 or SIP URI) and bridges the caller to it.

        The new leg's webhooks carry ``mode=transfer`` in their ``client_state`` (with our
        call and the caller's leg), so ``call.hangup`` of that leg can end the caller's leg
        when nobody answered (Telnyx keeps it up otherwise, parked and silent).
        """
        body: dict[str, Any] = {
            "to": to,
            "timeout_secs": TRANSFER_RING_S,
            "client_state": client_state,
            "target_leg_client_state": transfer_leg_state(
                call_id=call_id, caller_leg=call_control_id
            ),
        }
        if from_:
            body["from"] = from_
        self._raise_for(self._command(call_control_id, "transfer", body), "transfer")

    def streaming_stop(self, call_control_id: str) -> None:
        """Stop our media stream without touching the call (after a transfer)."""
        self._raise_for(self._command(call_control_id, "streaming_stop", {}), "streaming_stop")

    def dial(
        self,
        *,
        to: str,
        from_: str,
        stream_url: str,
        client_state: str,
        answering_machine_detection: str = "",
    ) -> str:
        """Place an outbound call streaming to us once answered; returns its call_control_id."""
        if not settings.TELNYX_CONNECTION_ID:
            raise CallControlError("TELNYX_CONNECTION_ID is not set")
        body = {
            "connection_id": settings.TELNYX_CONNECTION_ID,
            "to": to,
            "from": from_,
            "client_state": client_state,
            **stream_fields(stream_url),
        }
        if answering_machine_detection:
            body["answering_machine_detection"] = answering_machine_detection
        response = self._post("/calls", body)
        self._raise_for(response, "dial")
        try:
            return str(response.json()["data"]["call_control_id"])
        except (ValueError, KeyError, TypeError) as exc:
            raise CallControlError(f"dial: unexpected response {response.text[:300]}") from exc


ERRORS = (CallControlError,)
# What an outbound call needs set; the last is the number we call from.
FROM_NUMBER_SETTING = "TELNYX_FROM_NUMBER"
DIAL_SETTINGS = ("TELNYX_API_KEY", "TELNYX_CONNECTION_ID", FROM_NUMBER_SETTING)


def can_hang_up() -> bool:
    return bool(settings.TELNYX_API_KEY)


def hang_up(call_control_id: str) -> bool:
    return CallControl().hang_up(call_control_id)


def transfer_leg_state(*, call_id: str, caller_leg: str) -> str:
    return client_state(call_id=call_id, mode=TRANSFER_LEG, caller_leg=caller_leg)


def transfer(
    call_control_id: str, destination: str, *, call_id: str, caller_id: str = "", timeout_s: float
) -> None:
    """Hand the call to ``destination``; raises :class:`CallControlError`. ``caller_id``
    empty: Telnyx presents the number the original call went to."""
    CallControl(timeout_s=timeout_s).transfer(
        call_control_id,
        to=destination,
        from_=caller_id,
        call_id=call_id,
        client_state=client_state(call_id=call_id, mode="stream"),
    )


def release_stream(call_control_id: str) -> None:
    """After a transfer: the media stream of the caller's leg would go on feeding us the
    call with the person, so it is stopped (the call itself stays up)."""
    CallControl().streaming_stop(call_control_id)


def dial(*, to: str, from_: str, call_id: str, token: str, voicemail_action: str) -> str:
    """Dial ``to``, streaming to us once answered; returns its call_control_id. Unless
    ``voicemail_action`` is off, Telnyx also runs answering-machine detection and reports
    it through ``call.machine.*`` webhooks."""
    return CallControl().dial(
        to=to,
        from_=from_,
        stream_url=links.telnyx_stream_url(token),
        client_state=client_state(call_id=call_id, mode="stream"),
        answering_machine_detection=_MACHINE_DETECTION.get(voicemail_action, ""),
    )
