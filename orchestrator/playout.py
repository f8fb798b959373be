"""Real-time pacing of outgoing 20 ms frames.

The carrier (Twilio/Telnyx/browser) plays what it receives in order. Sending a whole
sentence at once would queue seconds of audio there, so a barge-in could only be
stopped by ``clear`` and the transcript cut point would be a guess. Instead frames
leave against the wall clock, keeping at most ``lead_ms`` queued ahead: enough to
absorb network jitter, small enough that stopping is immediate.

Pause and resume (caller speech over the agent, turn_taking.py): ``pause`` stops sending
at once, so the far end goes quiet when its lead has played (no ``clear``: nothing is
lost); ``resume`` goes on with the next frame, so a backchannel costs no words.

Audio health (audio_health.py): within one stretch of speech (``new_stretch`` starts one;
pause, drain and discard end it) a frame sent more than ``LATE_S`` after the far end ran
out of audio (``plays_until``) is a *late frame*, and the longest time between two frames
beyond the 20 ms cadence is the *agent gap*. Gaps between stretches (the next sentence
not synthesized yet, a pause for the caller) are pauses, not stutter, and are not counted.
A few float updates per frame.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


class TransportFailed(Exception):
    """``Transport.send_audio`` raised: the socket is gone, not an engine problem."""


class PacedPlayout:
    """Keeps ``play_until``: the monotonic time the carrier runs out of audio sent so far.

    Each frame pushes ``play_until`` by exactly one frame, so the schedule never drifts
    with sleep jitter: a late wake-up just sends the next frame sooner. After an
    underrun (nothing to send for a while) the schedule restarts from now.
    """

    # A frame sent this long after the far end ran out of audio is late: the caller
    # heard a hole of at least one frame (the lead absorbed anything shorter).
    LATE_S = 0.020

    def __init__(
        self,
        send: Callable[[bytes], Awaitable[None]],
        *,
        lead_ms: int,
        frame_ms: int = 20,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._send = send
        self._lead_s = max(lead_ms, frame_ms) / 1000.0
        self._frame_s = frame_ms / 1000.0
        self._clock = clock
        self._sleep = sleep
        self._play_until = 0.0
        self.frames_sent = 0
        self.quiet_at = 0.0  # after pause(): when the far end runs out of agent audio
        # Audio health, over the call (see the module docstring).
        self.late_frames = 0
        self.max_gap_s = 0.0
        self._last_sent_at = 0.0  # the previous frame of this stretch; 0.0: none yet
        self._open = asyncio.Event()
        self._open.set()

    @property
    def paused(self) -> bool:
        return not self._open.is_set()

    async def send(self, frame: bytes) -> float:
        """Send one frame when the carrier's queue allows; return the time it was sent.
        While paused this waits for ``resume`` (or cancellation)."""
        while True:
            await self._open.wait()
            if (sent_at := await self._paced(frame)) is not None:
                return sent_at

    async def _paced(self, frame: bytes) -> float | None:
        """Send at the frame's slot; None (not sent) if a pause came while waiting."""
        now = self._clock()
        # When the far end needs this frame: it has played everything sent so far
        # (meaningless before a stretch's first frame: lateness counts within a stretch).
        due = self._play_until
        if self._play_until < now:
            self._play_until = now  # underrun (or first frame): restart the schedule
        # After this frame the carrier holds at most lead_ms.
        wait = self._play_until + self._frame_s - self._lead_s - now
        if wait > 0:
            await self._sleep(wait)
            if self.paused:
                return None
            now = self._clock()  # a late wake-up (a busy loop) makes a late frame too
        try:
            await self._send(frame)
        except Exception as exc:
            raise TransportFailed(f"send_audio failed: {exc!r}") from exc
        self._play_until += self._frame_s
        self.frames_sent += 1
        sent_at = self._clock()
        if self._last_sent_at:
            if now - due > self.LATE_S:
                self.late_frames += 1
            gap = sent_at - self._last_sent_at - self._frame_s
            if gap > self.max_gap_s:
                self.max_gap_s = gap
        self._last_sent_at = sent_at
        return sent_at

    def new_stretch(self) -> None:
        """The next frame starts a new stretch of speech (a sentence): the time before it
        is a pause, not a gap, for the audio-health figures."""
        self._last_sent_at = 0.0

    @property
    def plays_until(self) -> float:
        """When the far end runs out of the agent audio sent so far (clock time)."""
        return self._play_until

    def queued_s(self) -> float:
        """Audio sent but (by estimate) not yet played at the far end."""
        return max(0.0, self._play_until - self._clock())

    async def drain(self) -> None:
        """Wait until everything sent has been played (the agent really stopped talking);
        a pause meanwhile waits for the resume."""
        while True:
            await self._open.wait()
            wait = self.queued_s()
            if wait > 0:
                await self._sleep(wait)
            if not self.paused:
                self._last_sent_at = 0.0
                return

    def pause(self) -> None:
        """Stop sending (the far end plays out what it holds, at most the lead)."""
        if not self.paused:
            self.quiet_at = max(self._play_until, self._clock())
        self._open.clear()
        self._last_sent_at = 0.0

    def resume(self) -> None:
        self._open.set()

    def discard(self) -> float:
        """After ``clear_audio``: forget queued audio and reopen for the next utterance;
        returns how much was dropped (s)."""
        dropped = self.queued_s()
        self._play_until = 0.0
        self._last_sent_at = 0.0
        self._open.set()
        return dropped
