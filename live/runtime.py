"""Live calls in this process: the glue between a consumer and an orchestrator session.

Every consumer (simulator, Twilio, Telnyx) starts calls here, so the same code builds
the config and engines, runs the session, applies the global stop policy on critical
errors, keeps Prometheus gauges right and ends the call record in every path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from dataclasses import dataclass, field, replace
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings
from django.db import connection

from calls import global_stop, recordings, selectors, services
from calls import metrics as prom
from calls.logging import bind_call
from calls.models import AgentProfile, VoicemailAction
from calls.recorder import DjangoCallRecorder
from live import admission
from orchestrator.config import CallConfig
from orchestrator.engines import EngineError, Engines, build_engines
from orchestrator.recorder_queue import flush_pending
from orchestrator.recording import CallRecording
from orchestrator.session import CallSession, CriticalCallError, EndReason, Transport

logger = logging.getLogger(__name__)


@dataclass(slots=True, kw_only=True, eq=False)
class LiveCall:
    call_id: str
    channel: str
    config: CallConfig
    session: CallSession
    engines: Engines
    task: asyncio.Task[EndReason] = field(init=False)
    warmup: asyncio.Task[None] | None = None
    answered: str | None = None  # the answering-machine verdict the session was given
    recording: CallRecording | None = None  # the profile records its calls

    @property
    def done(self) -> bool:
        return self.task.done()

    def answer(self, verdict: str) -> bool:
        """Give the session its answering-machine verdict, once (on the call's loop).

        Two paths may bring it (the webhook in this process, the socket's poll of the
        database): the first one counts."""
        if self.answered is not None or self.done:
            return False
        self.answered = verdict
        self.session.answered_by(verdict)
        return True


# call_id -> LiveCall, for graceful shutdown of this process and answering-machine verdicts.
ACTIVE: dict[str, LiveCall] = {}


def deliver_answer(call_id: str, verdict: str) -> bool:
    """From any thread: hand ``verdict`` to the call's session if it is live in this
    process (False otherwise). Webhooks run in Django's sync threads, the session on the
    event loop, so the hand-over is scheduled on the call's own loop."""
    live = ACTIVE.get(call_id)
    if live is None or live.done:
        return False
    live.task.get_loop().call_soon_threadsafe(live.answer, verdict)
    return True


async def start_live_call(
    *, call_id: str, profile: AgentProfile, channel: str, transport: Transport
) -> LiveCall:
    """Build and start the session of an existing call record.

    Raises ``EngineError`` when the engines cannot be built (e.g. a missing vendor key);
    the call record is then ended with ``error`` before re-raising.
    """
    bind_call(call_id=call_id, channel=channel, profile=profile.slug)
    _install_shutdown_hook()
    config = await database_sync_to_async(selectors.call_config_for)(
        profile=profile, channel=channel, call_id=call_id
    )
    # Engines synthesize for the rate the transport plays, never a rate guessed from a name.
    config = replace(config, output_rate=int(transport.sample_rate))
    if await database_sync_to_async(_detects_machines)(call_id=call_id, profile=profile):
        # The carrier was asked to detect an answering machine (telephony/amd.py): the
        # session stays silent until its verdict instead of greeting a voicemail box.
        config = replace(config, await_answer=True)
    try:
        engines = build_engines(config, selectors.engine_credentials())
    except EngineError as exc:
        await database_sync_to_async(services.call_end)(
            call_id=call_id, reason=EndReason.ERROR, error=f"engine setup failed: {exc}"
        )
        await database_sync_to_async(global_stop.report_critical_error)(
            reason=f"engine setup failed: {exc}", call_id=call_id, channel=channel
        )
        raise
    recorder = DjangoCallRecorder(call_id=call_id, channel=channel)
    recording = (
        CallRecording(await database_sync_to_async(_recording_config)(call_id), call_id=call_id)
        if config.record_calls
        else None
    )
    session = CallSession(
        config, engines=engines, transport=transport, recorder=recorder, recording=recording
    )
    live = LiveCall(
        call_id=call_id,
        channel=channel,
        config=config,
        session=session,
        engines=engines,
        recording=recording,
    )
    # Load models / pre-connect while the greeting plays, not before it: the caller should
    # hear the agent as soon as possible, and STT/LLM are not needed until they speak.
    live.warmup = asyncio.create_task(_warm_up(engines), name=f"warmup-{call_id}")
    live.task = asyncio.create_task(_run(live), name=f"call-{call_id}")
    ACTIVE[call_id] = live
    return live


def _detects_machines(*, call_id: str, profile: AgentProfile) -> bool:
    """An outbound call of a profile with answering-machine detection (the dial asked the
    carrier for it: telephony/outbound.py)."""
    if profile.voicemail_action == VoicemailAction.OFF:
        return False
    call = selectors.call_get(call_id=call_id)
    return call is not None and call.direction == "outbound"


def _recording_config(call_id: str) -> recordings.RecordingConfig:
    call = selectors.call_get(call_id=call_id)
    return recordings.recording_config(
        call_id=call_id, call_started_at=call.started_at if call is not None else None
    )


async def _store_recording(live: LiveCall) -> None:
    """The session closed its recording: move it into the recordings storage. Off the
    loop and off Django's one sync thread (a slow object store must not hold up the
    database writes of other calls). A failure leaves the spool file to the sweeper."""
    recording = live.recording
    if recording is None:
        return
    try:
        # Closed by the session's shutdown; again here for a session cancelled before it.
        result = await recording.close()
        await asyncio.to_thread(
            _store_recording_sync,
            call_id=live.call_id,
            spool_path=recording.config.path,
            duration_s=result.duration_s if result is not None else None,
        )
    except Exception:  # noqa: BLE001 - the sweeper stores the spool file later
        logger.warning("storing the recording failed; the sweeper will retry", exc_info=True)


def _store_recording_sync(**kwargs: Any) -> None:
    try:
        services.call_recording_store(**kwargs)
    finally:
        # This pool thread is not one of Django's: close the connection it opened.
        connection.close()


async def _warm_up(engines: Engines) -> None:
    try:
        await engines.warmup()
    except Exception as exc:  # noqa: BLE001 - a failed warm-up surfaces again on first real use
        logger.warning("engine warm-up failed: %s", exc)


async def _run(live: LiveCall) -> EndReason:
    prom.CALLS_STARTED.labels(channel=live.channel).inc()
    prom.ACTIVE_CALLS.labels(channel=live.channel).inc()
    try:
        return await live.session.run()
    except CriticalCallError as exc:
        prom.ENGINE_ERRORS.labels(vendor=exc.vendor).inc()
        # The stop state lives in Redis; /metrics reads it at scrape time for every process.
        await database_sync_to_async(global_stop.report_critical_error)(
            reason=exc.reason, call_id=live.call_id, channel=live.channel
        )
        return EndReason.ERROR
    finally:
        prom.ACTIVE_CALLS.labels(channel=live.channel).dec()
        ACTIVE.pop(live.call_id, None)
        try:
            if live.warmup is not None and not live.warmup.done():
                live.warmup.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await live.warmup
            with contextlib.suppress(Exception):
                await live.engines.aclose()
        finally:
            # Whatever ended the session (its own end, an error, a hang-up, a cancellation,
            # even one that cut the engines' close short), the process can take another call.
            await admission.controller.release(live.call_id)
        await _store_recording(live)  # last: nothing above waits for a slow store


async def stop_live_call(
    live: LiveCall, reason: EndReason, *, say: str | None = None, timeout: float = 10.0
) -> None:
    """Ask the session to end with ``reason`` and wait for it; cancel it if it hangs."""
    if not live.task.done():
        live.session.stop(reason, say=say)
    try:
        async with asyncio.timeout(timeout):
            await asyncio.shield(live.task)
    except TimeoutError:
        logger.warning("session did not stop within %.0fs; cancelling it", timeout)
        live.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await live.task
    except Exception:  # noqa: BLE001 - the session already logged and recorded its failure
        pass


async def shutdown_all(*, timeout: float | None = None) -> int:
    """Server shutdown: every active call says goodbye and ends as ``server_shutdown``."""
    calls = list(ACTIVE.values())
    grace = settings.SHUTDOWN_GRACE_SECONDS if timeout is None else timeout
    if calls:
        logger.warning("server shutdown: ending %d active call(s)", len(calls))
        await asyncio.gather(
            *(
                stop_live_call(
                    c, EndReason.SERVER_SHUTDOWN, say=c.config.goodbye_message, timeout=grace
                )
                for c in calls
            )
        )
    # Turn writes still retrying after a database blip get the rest of the grace period.
    await flush_pending(timeout=grace)
    return len(calls)


_hook_installed = False
_drain_tasks: set[asyncio.Task[None]] = set()


def install_signal_drain() -> bool:
    """Under uvicorn (ASGI lifespan startup): end live calls gracefully on SIGTERM/SIGINT.

    uvicorn's own shutdown closes every WebSocket with 1012 at once, before the lifespan
    shutdown event: a call would be cut mid-sentence and stored as a hang-up. So the
    signal is taken first: new calls are refused (admission ``shutting_down``), live ones
    say their goodbye and are stored ``server_shutdown`` (``shutdown_all``), then uvicorn's
    own handler runs. A second SIGINT during the drain goes to uvicorn at once.
    Returns False when there is no handler to wrap (not the main thread's loop).
    """
    loop = asyncio.get_running_loop()
    wrapped = False
    for signum in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(signum)
        if not callable(previous):
            continue

        def _on_signal(signum: int = signum, previous: Any = previous) -> None:
            if admission.controller.draining:
                # Only a second Ctrl-C hurries (uvicorn's own rule); a repeated SIGTERM
                # (e.g. systemd signalling the supervisor and the workers) waits for the
                # goodbyes already under way.
                if signum == signal.SIGINT:
                    previous(signum, None)
                return
            admission.controller.draining = True
            logger.warning(
                "%s: ending live calls before the server stops", signal.Signals(signum).name
            )
            task = loop.create_task(shutdown_all())
            _drain_tasks.add(task)
            task.add_done_callback(_drain_tasks.discard)
            task.add_done_callback(lambda _: previous(signum, None))

        try:
            loop.add_signal_handler(signum, _on_signal)
        except (RuntimeError, ValueError):  # not the main thread
            continue
        wrapped = True
    return wrapped


def _install_shutdown_hook() -> None:
    """Under daphne, end live calls gracefully before the reactor stops (SIGTERM/SIGINT).

    Daphne cancels application instances on shutdown without calling ``disconnect``, so
    sessions (which run as their own tasks) are ended here first, with a goodbye.
    """
    global _hook_installed
    if _hook_installed or "daphne.server" not in sys.modules:
        return
    reactor_module = sys.modules.get("twisted.internet.reactor")
    if reactor_module is None:
        return
    from twisted.internet import defer, reactor

    def _before_shutdown() -> defer.Deferred:
        # twisted closes the listening port only later: refuse what still arrives meanwhile.
        admission.controller.draining = True
        return defer.Deferred.fromFuture(asyncio.ensure_future(shutdown_all()))

    reactor.addSystemEventTrigger("before", "shutdown", _before_shutdown)
    _hook_installed = True
