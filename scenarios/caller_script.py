"""Plays a scripted caller on a media socket of any channel (``scenarios/caller_line.py``):
each step of the scenario's script, with line silence (noise) sent whenever the caller is
not speaking, as a phone line does.

The caller never decides anything from what the agent says (it cannot hear words); it
only follows the agent's audio: started speaking, done speaking, hung up.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

from websockets.exceptions import ConnectionClosed

from scenarios.spec import (
    Dtmf,
    HangUp,
    OverAgent,
    Pause,
    Say,
    Step,
    WaitForAgent,
    WaitForEnd,
)
from scenarios.caller_line import CallerLine, Payload, Reply
from scenarios.voice import CallerVoice


@dataclass(slots=True)
class ScriptOutcome:
    """What happened on the wire: steps played, who ended the call, and notes for the report."""

    steps_done: int = 0
    hung_up: bool = False  # the caller hung up (``stop``)
    server_closed: str | None = None  # close code and reason, when the server ended the socket
    closed_at_step: int | None = None  # the step that was running when it did
    expected_end: bool = False  # it closed during ``wait_for_end``
    clears: int = 0  # ``clear`` messages received (the agent stopped for the caller)
    notes: list[str] = field(default_factory=list)


class ScriptedCaller:
    def __init__(self, caller: CallerLine, voice: CallerVoice, script: list[Step]) -> None:
        self.caller = caller
        self.voice = voice
        self.script = script
        self.outcome = ScriptOutcome()

    async def run(self) -> ScriptOutcome:
        """Play every step; hang up at the end unless the server ended the call."""
        for index, step in enumerate(self.script):
            await self.play(index, step)
            if self.caller.closed is not None or self.outcome.hung_up:
                break
        return await self.finish()

    async def play(self, index: int, step: Step) -> None:
        """One step (numbered ``index`` in notes); nothing once the call is over."""
        if self.caller.closed is not None or self.outcome.hung_up:
            return
        try:
            await self._play(index, step)
        except ConnectionClosed as exc:
            # Sending raced the receiver noticing the close: the same server close.
            if self.caller.closed is None and not self.caller.stopped:
                self.caller.closed = f"closed while sending: {exc}"
        if self.caller.closed is not None:
            if self.outcome.closed_at_step is None:
                self.outcome.closed_at_step = index
                self.outcome.expected_end = isinstance(step, WaitForEnd)
            return
        self.outcome.steps_done = index + 1

    async def finish(self) -> ScriptOutcome:
        """Hang up unless the server ended the call; what happened on the wire."""
        if self.caller.closed is None and not self.outcome.hung_up:
            await self.caller.stop()
            self.outcome.hung_up = True
        self.outcome.server_closed = self.caller.closed
        self.outcome.clears = len(self.caller.clears)
        return self.outcome

    async def _play(self, index: int, step: Step) -> None:
        caller, note = self.caller, self.outcome.notes.append
        match step:
            case Say():
                await self._say(step)
            case Pause(seconds=seconds):
                await self._quiet(seconds)
            case WaitForAgent(timeout_s=timeout, quiet_s=quiet):
                done = functools.partial(caller.agent_done, quiet)
                if not await caller.silence_until(done, self.voice.silence, timeout):
                    if caller.closed is None:
                        heard = "spoke and did not stop" if caller.reply.frames else "did not speak"
                        note(f"step {index + 1}: the agent {heard} within {timeout:g} s")
            case OverAgent():
                await self._over_agent(index, step)
            case Dtmf(digits=digits, gap_s=gap):
                for digit in digits:
                    await caller.dtmf(digit)
                    await self._quiet(gap)
                # The agent's answer to the keys is what the next wait_for_agent waits for.
                caller.reply = Reply(speech_end=caller.loop.time())
            case HangUp():
                await caller.stop()
                self.outcome.hung_up = True
            case WaitForEnd(timeout_s=timeout):
                if not await caller.silence_until(lambda: False, self.voice.silence, timeout):
                    if caller.closed is None:
                        note(f"step {index + 1}: the server did not end the call in {timeout:g} s")

    async def _quiet(self, seconds: float) -> None:
        """Line silence (with the line's noise) for ``seconds``."""
        until = self.caller.loop.time() + seconds
        await self.caller.silence_until(
            lambda: self.caller.loop.time() >= until, self.voice.silence, seconds + 1
        )

    async def _say(self, step: Say) -> None:
        frames: list[Payload] = []
        for part in step.parts:
            frames += (
                await self.voice.speech(part) if isinstance(part, str) else self.voice.pause(part)
            )
        end = await self._send(frames)
        # What the agent sends from now on answers this line.
        self.caller.reply = Reply(speech_end=end)

    async def _over_agent(self, index: int, step: OverAgent) -> None:
        caller = self.caller
        frames = await self.voice.speech(step.text)  # synthesized before the moment comes
        if not await caller.silence_until(
            lambda: caller.reply.first_at is not None, self.voice.silence, 60
        ):
            if caller.closed is None:
                self.outcome.notes.append(f"step {index + 1}: the agent never spoke to talk over")
            return
        at = (caller.reply.first_at or 0.0) + step.after_s
        await caller.silence_until(
            lambda: caller.loop.time() >= at, self.voice.silence, step.after_s + 1
        )
        if caller.agent_done():
            self.outcome.notes.append(
                f"step {index + 1}: the agent had already finished when {step.text!r} was said"
            )
        end = await self._send(frames)
        caller.reply = Reply(speech_end=end)

    async def _send(self, frames: list[Payload]) -> float:
        end = self.caller.loop.time()
        for payload in frames:
            if self.caller.closed is not None:
                break
            end = await self.caller.frame(payload)
        return end
