"""Placing a scenario's call on its channel, the way that channel's callers reach the server:

- **twilio**: the signed voice webhook, the TwiML's ``<Connect><Stream>``, the Media
  Streams socket (``scenarios/wire_client.py``);
- **telnyx**: a signed ``call.initiated`` webhook; the server answers through Call Control
  REST, which the runner serves (``scenarios/telnyx_api.py``), with the ``stream_url`` the
  runner then connects to (``scenarios/telnyx_client.py``); ``call.answered`` and, once
  either side hung up, ``call.hangup`` follow as Telnyx sends them;
- **browser**: the simulator socket with a staff session cookie and an accepted
  ``Origin``, the call started with the scenario's profile (``scenarios/browser_client.py``).

:func:`dial` yields the caller, connected and started, to the script; on the way out it
waits a moment for the server to close the socket, then closes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
from channels.db import database_sync_to_async
from websockets.asyncio.client import connect

from scenarios import selectors
from scenarios.browser_client import BrowserCaller, simulator_url
from scenarios.caller_line import CallerLine, CallRef, CallResult
from scenarios.jobs import Target
from scenarios.services import runner_session_close, runner_session_open
from scenarios.spec import ScenarioSpec
from scenarios.telnyx_api import TelnyxRig
from scenarios.telnyx_client import WEBHOOK_PATH, TelnyxCaller, TelnyxLeg, post_webhook
from scenarios.wire_client import (
    TwilioCaller,
    caller_form,
    parse_twiml,
    post_voice_webhook,
    reachable_stream_url,
)

logger = logging.getLogger(__name__)
Line = TypeVar("Line", bound=CallerLine)
_CARRIER_ID_PREFIXES = {"twilio": "CA", "telnyx": "v3:"}
CLOSE_WAIT_S = 5.0  # the server closes after the hang-up; then we close from our side
HANGUP_WEBHOOK_S = 5.0


class NotPlaceable(Exception):  # noqa: N818 - a reason, reported as the run's skip
    """This target cannot take a call on the scenario's channel (the run is skipped)."""


def new_ref(channel: str) -> CallRef:
    """How the call will be found: the carrier's id for it, made up as the carrier makes
    them (Twilio's CallSid, Telnyx's call_control_id); the simulator names its calls itself
    (the browser caller learns the id from the socket)."""
    prefix = _CARRIER_ID_PREFIXES.get(channel)
    return CallRef(channel=channel, external_id="" if prefix is None else prefix + uuid.uuid4().hex)


def caller_number(ref: CallRef) -> str:
    return "+15550100" + f"{hash(ref.external_id) % 1000:03d}"


@asynccontextmanager
async def dial(
    spec: ScenarioSpec, target: Target, http: httpx.AsyncClient, ref: CallRef
) -> AsyncIterator[CallerLine]:
    """The call placed on ``spec.channel``; ``ref`` learns how to find its stored record."""
    async with _DIALERS[spec.channel](spec, target, http, ref) as caller:
        yield caller


@asynccontextmanager
async def _connected(
    url: str, make: Callable[[Any], Line], headers: dict[str, str] | None = None
) -> AsyncIterator[Line]:
    """The media socket, its caller, and the caller's receiver task (kept, cancelled)."""
    ws = await connect(
        url,
        compression=None,
        open_timeout=15,
        ping_interval=None,
        max_size=2**20,
        additional_headers=headers,
    )
    caller = make(ws)
    receiver = asyncio.create_task(caller.receive(), name=f"scenario-receive-{id(caller):x}")
    try:
        yield caller
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(receiver), CLOSE_WAIT_S)
    finally:
        await ws.close()
        receiver.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await receiver


@asynccontextmanager
async def _twilio(
    spec: ScenarioSpec, target: Target, http: httpx.AsyncClient, ref: CallRef
) -> AsyncIterator[CallerLine]:
    url, signed_url = target.voice_urls(spec.profile)
    form = caller_form(ref.external_id, from_number=caller_number(ref))
    try:
        twiml = await post_voice_webhook(
            http, url=url, form=form, auth_token=target.auth_token, signed_url=signed_url
        )
        stream_url, parameters = parse_twiml(twiml)
    except (httpx.HTTPError, RuntimeError, ValueError) as exc:
        raise RuntimeError(f"voice webhook: {exc}") from exc

    def caller(ws: Any) -> TwilioCaller:
        return TwilioCaller(
            ws, stream_sid="MZ" + ref.external_id[2:], call_sid=ref.external_id, result=CallResult()
        )

    async with _connected(reachable_stream_url(stream_url, target.base_url), caller) as line:
        await line.open(parameters)
        yield line


def telnyx_setup_hint(base_url: str) -> str:
    """Why a target without the runner's Telnyx cannot take a Telnyx call, and the settings
    (a fresh key, printed) that let a server of one's own take them."""
    rig = TelnyxRig()
    server = " ".join(f"{k}={v}" for k, v in rig.server_env().items())
    return (
        f"a telnyx scenario needs a server that trusts the runner's Telnyx (its webhook key and "
        f"Call Control API); {base_url} was not started by the runner. Run without --base-url, "
        f"or set SCENARIO_TELNYX_SEED={rig.seed} SCENARIO_TELNYX_PORT={rig.port} for the runner "
        f"and {server} on a server on this machine (docs/scenarios.md)"
    )


@asynccontextmanager
async def _telnyx(
    spec: ScenarioSpec, target: Target, http: httpx.AsyncClient, ref: CallRef
) -> AsyncIterator[CallerLine]:
    rig = target.telnyx
    if rig is None:
        raise NotPlaceable(telnyx_setup_hint(target.base_url))
    number = await database_sync_to_async(selectors.number_for_profile, thread_sensitive=False)(
        slug=spec.profile
    )
    if number is None:
        raise RuntimeError(
            f"Telnyx picks the profile by the number called, and no number reaches "
            f"{spec.profile!r}: give it a phone number (or make it the default profile)"
        )
    leg = TelnyxLeg(
        call_control_id=ref.external_id,
        from_number=caller_number(ref),
        to_number=number,
        call_leg_id=ref.external_id[3:],
        call_session_id=ref.external_id[3:],
    )
    answered = rig.expect(leg.call_control_id)
    webhook = target.base_url.rstrip("/") + WEBHOOK_PATH
    try:
        await post_webhook(
            http, url=webhook, key=rig.key, event_type="call.initiated",
            payload=leg.payload(state="parked"),
        )  # fmt: skip
        if not answered.done():
            raise RuntimeError(
                "the server took call.initiated but never called Call Control answer: is its "
                f"TELNYX_API_BASE_URL {rig.api_url} and TELNYX_API_KEY the runner's?"
            )
        answer = answered.result()
        if answer.refusal:
            raise RuntimeError(f"telnyx call.initiated: the server {answer.refusal}")
        leg.client_state = answer.client_state
        await post_webhook(
            http, url=webhook, key=rig.key, event_type="call.answered",
            payload=leg.payload(state="answered"),
        )  # fmt: skip

        def caller(ws: Any) -> TelnyxCaller:
            return TelnyxCaller(ws, leg=leg, result=CallResult())

        url = reachable_stream_url(answer.stream_url, target.base_url)
        async with _connected(url, caller) as line:
            await line.open()
            yield line
    finally:
        if answered.done():
            await _telnyx_hung_up(http, webhook, rig, leg)


async def _telnyx_hung_up(
    http: httpx.AsyncClient, webhook: str, rig: TelnyxRig, leg: TelnyxLeg
) -> None:
    """The call is over at one end: Telnyx tells the server with ``call.hangup`` (the server
    ignores it for a call it already ended, as for a repeated delivery)."""
    by_server = rig.hung_up_by_server(leg.call_control_id)
    rig.ended(leg.call_control_id)  # a later hang-up command gets 90018, as from Telnyx
    payload = leg.payload(
        state="hangup",
        hangup_cause="normal_clearing",
        hangup_source="callee" if by_server else "caller",
        sip_hangup_cause="200",
    )
    try:
        await asyncio.wait_for(
            post_webhook(http, url=webhook, key=rig.key, event_type="call.hangup", payload=payload),
            HANGUP_WEBHOOK_S,
        )
    except (httpx.HTTPError, RuntimeError, TimeoutError) as exc:
        # The server may be the reason the call is over; its record tells the rest.
        logger.warning("telnyx call.hangup of %s not delivered: %s", leg.call_control_id, exc)


@asynccontextmanager
async def _browser(
    spec: ScenarioSpec, target: Target, http: httpx.AsyncClient, ref: CallRef
) -> AsyncIterator[CallerLine]:
    cookie, session_key = await database_sync_to_async(
        runner_session_open, thread_sensitive=False
    )()
    base = urlsplit(target.base_url)
    # The simulator only takes sockets from pages of its own hosts (ALLOWED_HOSTS).
    headers = {"Cookie": f"{cookie}={session_key}", "Origin": f"{base.scheme}://{base.netloc}"}
    try:

        def caller(ws: Any) -> BrowserCaller:
            return BrowserCaller(ws, ref=ref, result=CallResult())

        async with _connected(simulator_url(target.base_url), caller, headers) as line:
            await line.open(spec.profile)
            yield line
    finally:
        await database_sync_to_async(runner_session_close, thread_sensitive=False)(
            session_key=session_key
        )


_DIALERS = {"twilio": _twilio, "telnyx": _telnyx, "browser": _browser}
