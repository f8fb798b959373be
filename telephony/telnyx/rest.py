"""Telnyx Call Control v2, the commands we send: answer, speak, hang up, dial (blocking httpx)."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from django.conf import settings

from telephony import links
from telephony.telnyx.wire import client_state

_ALREADY_ENDED = "90018"  # Call Control error code: "call has already ended"


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

    def __init__(self) -> None:
        self.base_url = settings.TELNYX_API_BASE_URL.rstrip("/")
        self.api_key = settings.TELNYX_API_KEY

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

    def hang_up(self, call_control_id: str) -> bool:
        """True if we ended the call, False if it had already ended (422 / 90018)."""
        response = self._command(call_control_id, "hangup", {})
        if response.status_code == 422 and _ALREADY_ENDED in response.text:
            return False
        self._raise_for(response, "hangup")
        return True

    def dial(self, *, to: str, from_: str, stream_url: str, client_state: str) -> str:
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


def dial(*, to: str, from_: str, call_id: str, token: str) -> str:
    """Dial ``to``, streaming to us once answered; returns its call_control_id."""
    return CallControl().dial(
        to=to,
        from_=from_,
        stream_url=links.telnyx_stream_url(token),
        client_state=client_state(call_id=call_id, mode="stream"),
    )
