"""Azure Speech text-to-speech (``azure-cognitiveservices-speech``), streamed.

The SDK is blocking and calls back from its own threads: every blocking call runs in
``asyncio.to_thread`` and the ``synthesizing`` events hand audio chunks to the loop with
``call_soon_threadsafe``, so chunks are yielded while Azure is still producing them.

Output is raw PCM16 (no header) in the format closest to the channel's rate:
``Raw16Khz16BitMonoPcm`` for the browser, ``Raw8Khz16BitMonoPcm`` for phone calls — the
carrier serializer does the µ-law encoding, our internal format is PCM16 everywhere.
One synthesizer (and its websocket, opened by ``warmup()``) is reused for the whole call.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from xml.sax.saxutils import escape, quoteattr

from orchestrator.audio import StreamResampler
from orchestrator.config import CallConfig, EngineCredentials, EngineSpec
from orchestrator.engines import EngineError

log = logging.getLogger(__name__)

# Native raw PCM16 mono output formats of the service, by sample rate.
NATIVE_FORMATS: dict[int, str] = {
    8000: "Raw8Khz16BitMonoPcm",
    16000: "Raw16Khz16BitMonoPcm",
    22050: "Raw22050Hz16BitMonoPcm",
    24000: "Raw24Khz16BitMonoPcm",
    44100: "Raw44100Hz16BitMonoPcm",
    48000: "Raw48Khz16BitMonoPcm",
}

_RATE = re.compile(r"^(x-slow|slow|medium|fast|x-fast|default|[+-]?\d{1,3}(\.\d+)?%|\d(\.\d+)?)$")
_LANGUAGE = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$")
# Characters XML 1.0 cannot carry even escaped (control characters, lone surrogates).
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def output_format(sample_rate: int) -> tuple[int, str]:
    """``(native_rate, SpeechSynthesisOutputFormat name)`` for a channel rate.

    An exact native rate is used as is; otherwise the smallest higher native rate is
    requested and resampled down (or 48 kHz, resampled, above that)."""
    if sample_rate in NATIVE_FORMATS:
        return sample_rate, NATIVE_FORMATS[sample_rate]
    native = min((rate for rate in NATIVE_FORMATS if rate > sample_rate), default=48000)
    return native, NATIVE_FORMATS[native]


def build_ssml(text: str, *, language: str, voice: str, rate: str = "", pause_ms: int = 0) -> str:
    """SSML for one utterance. ``text`` is XML-escaped; ``voice`` and ``language`` are
    quoted attributes; ``rate`` is a prosody rate (``+10%``, ``0.9``, ``slow``) and
    ``pause_ms`` the silence Azure puts between sentences of ``text``."""
    if not _LANGUAGE.match(language):
        raise EngineError(f"invalid language tag {language!r}", vendor="azure")
    if rate and not _RATE.match(rate):
        raise EngineError(f"invalid prosody rate {rate!r}", vendor="azure")
    body = escape(_NOT_XML.sub("", text))
    if rate:
        body = f"<prosody rate={quoteattr(rate)}>{body}</prosody>"
    if pause_ms > 0:
        body = f'<mstts:silence type="Sentenceboundary" value="{int(pause_ms)}ms"/>{body}'
    return (
        '<speak version="1.0" xmlns="http://www.w3.org/2001/10/synthesis"'
        ' xmlns:mstts="https://www.w3.org/2001/mstts"'
        f" xml:lang={quoteattr(language)}><voice name={quoteattr(voice)}>{body}</voice></speak>"
    )


def create(
    role: str, spec: EngineSpec, credentials: EngineCredentials, *, config: CallConfig | None = None
) -> AzureTTS:
    config = config or CallConfig()
    if role != "tts":
        raise EngineError(f"azure has no {role!r} engine (tts only)", vendor="azure")
    if not credentials.azure_speech_key:
        raise EngineError("AZURE_SPEECH_KEY is not set", vendor="azure")
    if not (credentials.azure_speech_region or credentials.azure_speech_endpoint):
        raise EngineError("AZURE_SPEECH_REGION (or an endpoint) is not set", vendor="azure")
    voice = spec.voice or os.environ.get("AZURE_SPEECH_VOICE", "")
    if not voice:
        raise EngineError(
            "azure tts needs a voice: the profile's voice name or AZURE_SPEECH_VOICE",
            vendor="azure",
        )
    rate = config.extra.get("tts_rate", "")
    if rate and not _RATE.match(rate):
        raise EngineError(f"invalid tts_rate {rate!r} in the profile", vendor="azure")
    return AzureTTS(
        credentials=credentials,
        voice=voice,
        rate=rate,
        pause_ms=config.voice_pacing_ms,
        channel_rate=config.output_rate,
        timeout_s=config.engine_timeout_s,
    )


@dataclass(slots=True)
class _Synth:
    """One SDK synthesizer for one output format, plus the consumer of its events."""

    synthesizer: object
    connection: object
    # (loop, queue) of the synthesize() call in progress; set and cleared under the lock.
    target: tuple[asyncio.AbstractEventLoop, asyncio.Queue] | None = field(default=None)

    def deliver(self, item: object) -> None:  # SDK thread
        target = self.target
        if target is not None:
            loop, queue = target
            loop.call_soon_threadsafe(queue.put_nowait, item)


class AzureTTS:
    name = "azure"

    def __init__(
        self,
        *,
        credentials: EngineCredentials,
        voice: str,
        rate: str,
        pause_ms: int,
        channel_rate: int,
        timeout_s: float,
    ) -> None:
        self.voice = voice
        self.rate = rate
        self.pause_ms = pause_ms
        self.channel_rate = channel_rate
        self.timeout_s = timeout_s
        self._credentials = credentials
        self._synths: dict[int, _Synth] = {}
        self._lock = asyncio.Lock()  # one utterance at a time per synthesizer/call

    async def warmup(self) -> None:
        """Create the synthesizer for the channel's rate and open its connection now."""
        native, _ = output_format(self.channel_rate)
        async with self._lock:
            await asyncio.to_thread(self._synth_for, native)

    async def synthesize(
        self, text: str, *, sample_rate: int, language: str
    ) -> AsyncIterator[bytes]:
        native, _ = output_format(sample_rate)
        ssml = build_ssml(
            text, language=language, voice=self.voice, rate=self.rate, pause_ms=self.pause_ms
        )
        resampler = StreamResampler(native, sample_rate)
        async with self._lock:
            synth = await asyncio.to_thread(self._synth_for, native)
            queue: asyncio.Queue = asyncio.Queue()
            synth.target = (asyncio.get_running_loop(), queue)
            future = await asyncio.to_thread(synth.synthesizer.speak_ssml_async, ssml)
            finished = False
            try:
                while True:
                    try:
                        async with asyncio.timeout(self.timeout_s):
                            item = await queue.get()
                    except TimeoutError:
                        raise EngineError(
                            f"no audio within {self.timeout_s:g} s", vendor="azure", retryable=True
                        ) from None
                    if item is None:
                        finished = True
                        break
                    if isinstance(item, EngineError):
                        finished = True
                        raise item
                    if out := resampler.process(item):
                        yield out
            finally:
                if not finished:  # barge-in or error: stop Azure before the next utterance
                    await asyncio.to_thread(lambda: synth.synthesizer.stop_speaking_async().get())
                await asyncio.to_thread(future.get)
                synth.target = None
        if tail := resampler.flush():
            yield tail

    async def aclose(self) -> None:
        synths, self._synths = list(self._synths.values()), {}
        for synth in synths:
            await asyncio.to_thread(synth.connection.close)

    def _synth_for(self, native_rate: int) -> _Synth:  # worker thread
        if native_rate in self._synths:
            return self._synths[native_rate]
        import azure.cognitiveservices.speech as speechsdk

        creds = self._credentials
        if creds.azure_speech_endpoint:
            config = speechsdk.SpeechConfig(
                subscription=creds.azure_speech_key, endpoint=creds.azure_speech_endpoint
            )
        else:
            config = speechsdk.SpeechConfig(
                subscription=creds.azure_speech_key, region=creds.azure_speech_region
            )
        config.set_speech_synthesis_output_format(
            getattr(speechsdk.SpeechSynthesisOutputFormat, NATIVE_FORMATS[native_rate])
        )
        synthesizer = speechsdk.SpeechSynthesizer(speech_config=config, audio_config=None)
        connection = speechsdk.Connection.from_speech_synthesizer(synthesizer)
        synth = _Synth(synthesizer=synthesizer, connection=connection)
        synthesizer.synthesizing.connect(lambda evt: synth.deliver(evt.result.audio_data))
        synthesizer.synthesis_completed.connect(lambda evt: synth.deliver(None))
        synthesizer.synthesis_canceled.connect(
            lambda evt: synth.deliver(cancellation_error(evt.result))
        )
        connection.open(True)
        log.info(
            "azure synthesizer connected (%s, voice %s)", NATIVE_FORMATS[native_rate], self.voice
        )
        self._synths[native_rate] = synth
        return synth


# CancellationErrorCode name -> (HTTP-like status, retryable)
_CANCEL_CODES: dict[str, tuple[int | None, bool]] = {
    "AuthenticationFailure": (401, False),
    "Forbidden": (403, False),
    "BadRequest": (400, False),
    "TooManyRequests": (429, True),
    "ConnectionFailure": (None, True),
    "ServiceTimeout": (408, True),
    "ServiceError": (500, True),
    "ServiceUnavailable": (503, True),
}


def cancellation_error(result: object) -> EngineError:
    details = result.cancellation_details
    code = getattr(details.error_code, "name", str(details.error_code))
    status, retryable = _CANCEL_CODES.get(code, (None, False))
    message = details.error_details or f"synthesis canceled ({code})"
    return EngineError(message, vendor="azure", status=status, retryable=retryable)
