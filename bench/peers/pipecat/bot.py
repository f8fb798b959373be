"""A minimal pipecat Twilio bot with the scripted latencies of ``bench/scripted_engines.py``.

The peer that ``bench/load.py --target pipecat`` measures against our server: the same
Twilio Media Streams protocol, the same scripted STT/LLM/TTS timings, pipecat's own
transport (FastAPI websocket + ``TwilioFrameSerializer``), Silero VAD and turn logic.

    bench/peers/pipecat/.venv/bin/python bench/peers/pipecat/bot.py --port 8765 \
        --stt-ms 120 --llm-ttft-ms 250 --tokens-per-s 60 --tts-ttfb-ms 120 ...

Routes, mirroring ours so the load client runs one code path for both:
``POST /telephony/twilio/voice/`` returns TwiML ``<Connect><Stream>`` (no signature or
token: pipecat ships neither), ``WS /ws`` is the media stream, ``GET /health/``.

Turn taking is configured to mean what our ``silence_timeout_ms`` means: Silero VAD
``stop_secs`` = the silence timeout, then STT on the segment, then the LLM
(``SpeechTimeoutUserTurnStopStrategy(user_speech_timeout=0)``), instead of pipecat's
default Smart Turn model, whose extra ONNX inference the scripted server does not run.
Runs in its own venv (``bench/peers/pipecat/requirements.txt``), never in the app's.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import re
import sys
from collections.abc import AsyncGenerator

import numpy as np
import uvicorn
from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import PlainTextResponse, Response
from loguru import logger
from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADParams
from pipecat.frames.frames import (
    Frame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
    TTSSpeakFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.runner import PipelineRunner
from pipecat.pipeline.task import PipelineParams, PipelineTask
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import (
    LLMContextAggregatorPair,
    LLMUserAggregatorParams,
)
from pipecat.processors.frame_processor import FrameDirection
from pipecat.runner.utils import parse_telephony_websocket
from pipecat.serializers.twilio import TwilioFrameSerializer
from pipecat.services.llm_service import LLMService
from pipecat.services.settings import LLMSettings, STTSettings, TTSSettings
from pipecat.services.stt_service import SegmentedSTTService
from pipecat.services.tts_service import TTSService
from pipecat.transports.websocket.fastapi import (
    FastAPIWebsocketParams,
    FastAPIWebsocketTransport,
)
from pipecat.turns.user_stop import SpeechTimeoutUserTurnStopStrategy
from pipecat.turns.user_turn_strategies import UserTurnStrategies
from pipecat.utils.time import time_now_iso8601

PHONE_RATE = 8000


def unsupported(settings_class: type) -> object:
    """Settings with every field None ("not supported"): scripted services have no model,
    voice or language, and pipecat logs an error for fields left NOT_GIVEN."""
    return settings_class(**{f.name: None for f in dataclasses.fields(settings_class)})


class ScriptedSTT(SegmentedSTTService):
    """``text`` after ``delay_ms`` for every speech segment (as ``ScriptedSTT`` in bench/)."""

    def __init__(self, *, delay_ms: float, text: str, **kwargs) -> None:
        super().__init__(settings=unsupported(STTSettings), **kwargs)
        self._delay_s = delay_ms / 1000.0
        self._text = text

    async def run_stt(self, audio: bytes) -> AsyncGenerator[Frame | None, None]:
        await asyncio.sleep(self._delay_s)
        yield TranscriptionFrame(self._text, "caller", time_now_iso8601())


class ScriptedLLM(LLMService):
    """Streams ``reply`` word by word: first token after ``ttft_ms``, then ``tokens_per_s``."""

    def __init__(self, *, ttft_ms: float, tokens_per_s: float, reply: str, **kwargs) -> None:
        super().__init__(settings=unsupported(LLMSettings), **kwargs)
        self._ttft_s = ttft_ms / 1000.0
        self._token_s = 1.0 / tokens_per_s
        self._tokens = re.findall(r"\S+\s*", reply)

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, LLMContextFrame):
            # Inline, as pipecat's own LLM services do: an interruption cancels this.
            await self.push_frame(LLMFullResponseStartFrame())
            await asyncio.sleep(self._ttft_s)
            for i, token in enumerate(self._tokens):
                if i:
                    await asyncio.sleep(self._token_s)
                await self.push_frame(LLMTextFrame(token))
            await self.push_frame(LLMFullResponseEndFrame())
        else:
            await self.push_frame(frame, direction)


class ScriptedTTS(TTSService):
    """A 440 Hz tone of ``ms_per_char`` per character: first chunk after ``ttfb_ms``, then
    ``chunk_ms`` chunks at ``realtime`` x real time (as ``ScriptedTTS`` in bench/)."""

    def __init__(
        self, *, ttfb_ms: float, ms_per_char: float, chunk_ms: float, realtime: float, **kwargs
    ) -> None:
        super().__init__(
            push_start_frame=True,
            push_stop_frames=True,
            settings=unsupported(TTSSettings),
            **kwargs,
        )
        self._ttfb_s = ttfb_ms / 1000.0
        self._ms_per_char = ms_per_char
        self._chunk_ms = chunk_ms
        self._realtime = realtime

    def can_generate_metrics(self) -> bool:
        return True

    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame | None, None]:
        rate = self.sample_rate
        await self.start_tts_usage_metrics(text)
        await asyncio.sleep(self._ttfb_s)
        await self.stop_ttfb_metrics()
        total = int(max(self._chunk_ms, len(text) * self._ms_per_char) * rate / 1000)
        step = max(1, int(self._chunk_ms * rate / 1000))
        for start in range(0, total, step):
            n = min(step, total - start)
            if start and self._realtime > 0:
                await asyncio.sleep(self._chunk_ms / 1000.0 / self._realtime)
            t = np.arange(start, start + n) / rate
            pcm = (6000 * np.sin(2 * np.pi * 440.0 * t)).astype("<i2").tobytes()
            yield TTSAudioRawFrame(pcm, rate, 1, context_id=context_id)


def build_app(args: argparse.Namespace) -> FastAPI:
    app = FastAPI()

    @app.get("/health/")
    async def health() -> PlainTextResponse:
        return PlainTextResponse("ok")

    @app.post("/telephony/twilio/voice/")
    async def voice(request: Request) -> Response:
        ws = f"ws://{request.url.hostname}:{request.url.port}/ws"
        twiml = (
            '<?xml version="1.0" encoding="UTF-8"?><Response><Connect>'
            f'<Stream url="{ws}"></Stream></Connect></Response>'
        )
        return Response(twiml, media_type="text/xml")

    @app.websocket("/ws")
    async def media(websocket: WebSocket) -> None:
        await websocket.accept()
        _, call_data = await parse_telephony_websocket(websocket)
        await run_bot(websocket, call_data["stream_id"], call_data["call_id"], args)

    return app


async def run_bot(
    websocket: WebSocket, stream_sid: str, call_sid: str, args: argparse.Namespace
) -> None:
    serializer = TwilioFrameSerializer(
        stream_sid=stream_sid,
        call_sid=call_sid,
        params=TwilioFrameSerializer.InputParams(auto_hang_up=False),  # no Twilio REST here
    )
    transport = FastAPIWebsocketTransport(
        websocket=websocket,
        params=FastAPIWebsocketParams(
            audio_in_enabled=True,
            audio_out_enabled=True,
            add_wav_header=False,
            serializer=serializer,
        ),
    )
    stt = ScriptedSTT(delay_ms=args.stt_ms, text=args.heard)
    llm = ScriptedLLM(ttft_ms=args.llm_ttft_ms, tokens_per_s=args.tokens_per_s, reply=args.reply)
    tts = ScriptedTTS(
        ttfb_ms=args.tts_ttfb_ms,
        ms_per_char=args.ms_per_char,
        chunk_ms=args.chunk_ms,
        realtime=args.tts_realtime,
    )
    context = LLMContext([{"role": "system", "content": "You are a helpful voice assistant."}])
    aggregators = LLMContextAggregatorPair(
        context,
        user_params=LLMUserAggregatorParams(
            vad_analyzer=SileroVADAnalyzer(
                params=VADParams(stop_secs=args.silence_timeout_ms / 1000.0)
            ),
            user_turn_strategies=UserTurnStrategies(
                stop=[SpeechTimeoutUserTurnStopStrategy(user_speech_timeout=0.0)]
            ),
        ),
    )
    pipeline = Pipeline(
        [
            transport.input(),
            stt,
            aggregators.user(),
            llm,
            tts,
            transport.output(),
            aggregators.assistant(),
        ]
    )
    task = PipelineTask(
        pipeline,
        params=PipelineParams(audio_in_sample_rate=PHONE_RATE, audio_out_sample_rate=PHONE_RATE),
    )

    @transport.event_handler("on_client_connected")
    async def on_client_connected(transport, client) -> None:  # noqa: ANN001
        if args.greeting:
            await task.queue_frames([TTSSpeakFrame(args.greeting)])

    @transport.event_handler("on_client_disconnected")
    async def on_client_disconnected(transport, client) -> None:  # noqa: ANN001
        await task.cancel()

    await PipelineRunner(handle_sigint=False).run(task)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--stt-ms", type=float, required=True)
    parser.add_argument("--heard", default="a table for four")
    parser.add_argument("--llm-ttft-ms", type=float, required=True)
    parser.add_argument("--tokens-per-s", type=float, required=True)
    parser.add_argument("--reply", required=True)
    parser.add_argument("--tts-ttfb-ms", type=float, required=True)
    parser.add_argument("--ms-per-char", type=float, required=True)
    parser.add_argument("--chunk-ms", type=float, default=100.0)
    parser.add_argument("--tts-realtime", type=float, required=True)
    parser.add_argument("--silence-timeout-ms", type=float, required=True)
    parser.add_argument("--greeting", default="")
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args()
    logger.remove()
    logger.add(sys.stderr, level=args.log_level)
    uvicorn.run(build_app(args), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
