"""A persona caller: a goal, facts and a personality, played by an LLM engine of the profile
list (``local``, ``groq``, ``openai``...). It "hears" the agent through the call's stored
transcript (the server records each agent turn as it is spoken), writes its next line with
the LLM, speaks it with the scenario's voice and waits for the answer, until it says
``[HANG UP]`` or ``max_turns`` lines were said.

While the LLM writes and the TTS speaks, the caller keeps sending line noise on the wall
clock, as a person thinking on the phone would.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Any

from channels.db import database_sync_to_async

from calls.selectors import engine_credentials
from orchestrator.config import CallConfig, EngineSpec
from orchestrator.engines import create_engine
from scenarios.caller_script import ScriptedCaller, ScriptOutcome
from scenarios.spec import Persona, Say, WaitForAgent
from scenarios.stored_call import load

HANG_UP = "[HANG UP]"
THINK_TIMEOUT_S = 60.0  # the LLM's line and its synthesis, at most


def persona_prompt(persona: Persona) -> str:
    facts = "\n".join(f"- {fact}" for fact in persona.facts) or "- (none)"
    return "\n".join(
        [
            "You are a person calling a business on the phone. You are the CALLER, not the "
            "agent. Say only your next line: one or two short spoken sentences, no stage "
            "directions, no quotes.",
            f"Your goal: {persona.goal}",
            f"Your personality: {persona.personality or 'polite and brief'}",
            "What you know (give a fact only when it is asked for or needed):",
            facts,
            f"When your goal is reached or the agent says goodbye, answer exactly {HANG_UP}.",
        ]
    )


class PersonaCaller:
    def __init__(self, player: ScriptedCaller, persona: Persona, *, language: str) -> None:
        self.player = player  # plays each line and wait, as a script step
        self.persona = persona
        self.language = language
        self.lines: list[str] = []

    async def run(self) -> ScriptOutcome:
        player, caller = self.player, self.player.caller
        llm = create_engine(
            "llm",
            EngineSpec(engine=self.persona.engine, model=self.persona.model),
            engine_credentials(),
            config=CallConfig(language=self.language, system_prompt=persona_prompt(self.persona)),
        )
        step = 0
        await player.play(step, WaitForAgent(timeout_s=30))  # the greeting
        for _ in range(self.persona.max_turns):
            if caller.closed is not None:
                break
            line = await self._think(functools.partial(self._next_line, llm))
            if line is None or HANG_UP in line:
                break
            self.lines.append(line)
            await self._think(functools.partial(player.voice.speech, line))  # while on the line
            for next_step in (Say(parts=[line]), WaitForAgent(timeout_s=40)):
                step += 1
                await player.play(step, next_step)
        return await player.finish()

    async def _think(self, work: Callable[[], Awaitable[Any]]) -> Any:
        """``work`` in a task while the caller keeps the line alive; None if it overran."""
        caller = self.player.caller
        task = asyncio.create_task(work())
        try:
            if not await caller.silence_until(
                task.done, self.player.voice.silence, THINK_TIMEOUT_S
            ):
                if caller.closed is None:
                    self.player.outcome.notes.append(
                        f"the persona did not find its next line within {THINK_TIMEOUT_S:g} s"
                    )
                return None
            return task.result()
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _next_line(self, llm: Any) -> str:
        stored = await database_sync_to_async(load, thread_sensitive=False)(
            self.player.caller.ref
        )
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": persona_prompt(self.persona)}
        ]
        # The agent is the "user" of this LLM; the persona's own lines are its answers.
        for turn in stored.turns if stored is not None else []:
            if turn.role == "assistant":
                messages.append({"role": "user", "content": turn.text})
            elif turn.role == "user":
                messages.append({"role": "assistant", "content": turn.text})
        if messages[-1]["role"] != "user":
            messages.append({"role": "user", "content": "(silence)"})
        parts = [p async for p in llm.stream(messages, temperature=0.7, max_tokens=80)]
        return "".join(p for p in parts if isinstance(p, str)).strip().strip('"')
