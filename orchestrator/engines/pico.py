"""SVOX Pico text-to-speech: the ``pico2wave`` command (Debian non-free ``libttspico-utils``).

Offline voices for es-ES, de-DE, fr-FR, it-IT, en-GB and en-US (Apache-2.0, ~4 MB of
language files, no model to load): far more natural than espeak-ng and still instant
(~50 ms for a sentence). The local TTS (``local.py``) uses it for those languages where
the command is installed, piper for American English and espeak-ng otherwise.

``pico2wave`` only writes WAV files whose name ends in ``.wav``, so each sentence runs in a
private temporary directory holding one symlink ``speech.wav -> /dev/stdout``: the audio
comes through a pipe as it is written, and nothing is written to disk. Because a pipe
cannot seek, pico appends the finished 44-byte RIFF header after the audio instead of
rewriting the one at the start (whose lengths are placeholders): the start header gives
the format, and the trailing one is held back and dropped.

The text goes through stdin (never argv: a leading ``-`` would be an option); pico's markup
characters ``<``/``>`` are removed. Each read from the process has a timeout (the engine's
own: a hung process is an ``EngineError``, so a fallback chain can act), and the process is
killed and reaped when the consumer stops early or is cancelled (barge-in).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
from collections.abc import AsyncIterator

from orchestrator.audio import StreamResampler
from orchestrator.engines._pcm import language_code, split_wav_header
from orchestrator.engines.errors import EngineError

PICO2WAVE = "pico2wave"
PICO_RATE = 16000
# Longest wait for the process to produce its next bytes (a sentence takes ~50 ms).
PICO_TIMEOUT_S = 5.0
# BCP-47 language (lower case) or its base -> pico language. American English is not here:
# piper speaks it; pico's en-US is used only when a profile asks for voice ``pico``.
PICO_LANGUAGES = {
    "es": "es-ES",
    "de": "de-DE",
    "fr": "fr-FR",
    "it": "it-IT",
    "en-gb": "en-GB",
}
PICO_ALL = frozenset(PICO_LANGUAGES.values()) | {"en-US"}
_HEADER = 44  # pico's RIFF header: RIFF + fmt (16) + data
_READ = 8192


def pico_language(language: str, *, include_en_us: bool = False) -> str | None:
    """Pico's language for a BCP-47 tag (``es-MX`` -> ``es-ES``, ``en-GB`` -> ``en-GB``);
    ``None`` where pico has none (American English unless ``include_en_us``)."""
    tag = language.replace("_", "-").lower()
    found = PICO_LANGUAGES.get(tag) or PICO_LANGUAGES.get(language_code(language))
    if found is None and include_en_us and language_code(language) == "en":
        return "en-US"
    return found


def pico_command(binary: str = PICO2WAVE) -> str | None:
    """Path of ``pico2wave`` (or of ``binary``, a name or path), ``None`` when not installed."""
    return shutil.which(binary)


def clean_text(text: str) -> str:
    """One line of plain text: pico reads ``<...>`` as markup (speed, pitch, volume)."""
    return " ".join(text.replace("<", " ").replace(">", " ").split())


async def pico_pcm(
    text: str,
    *,
    language: str,
    command: str = PICO2WAVE,
    timeout_s: float = PICO_TIMEOUT_S,
    tmp_root: str | None = None,
) -> AsyncIterator[tuple[int, bytes]]:
    """Yield ``(16000, pcm16)`` chunks of ``text`` spoken in pico language ``language``.

    ``tmp_root``: where the private directory for the symlink is made (default: the system's
    temporary directory); it is removed before this returns, however it ends."""
    if language not in PICO_ALL:
        raise EngineError(f"pico has no voice for {language!r}", vendor="local")
    line = clean_text(text)
    if not line:
        return
    # mkdtemp/symlink/rmtree are a few metadata syscalls (like the fork below): not worth a
    # thread hop. The directory is 0700, so no other user can swap the link.
    workdir = tempfile.mkdtemp(prefix="voiceapp-pico-", dir=tmp_root)
    process: asyncio.subprocess.Process | None = None
    try:
        target = os.path.join(workdir, "speech.wav")
        os.symlink("/dev/stdout", target)
        try:
            process = await asyncio.create_subprocess_exec(
                command, "-l", language, "-w", target,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
        except OSError as exc:
            raise EngineError(f"pico2wave could not start: {exc}", vendor="local") from exc
        assert process.stdin and process.stdout and process.stderr
        process.stdin.write(line.encode() + b"\n")
        await process.stdin.drain()
        process.stdin.close()
        pending = b""  # bytes not yet yielded: the start header, then the last 44 bytes
        started = False
        while True:
            try:
                chunk = await asyncio.wait_for(process.stdout.read(_READ), timeout_s)
            except TimeoutError:
                raise EngineError(
                    f"pico2wave produced nothing for {timeout_s:g} s", vendor="local"
                ) from None
            if not chunk:
                break
            pending += chunk
            if not started:
                parsed = _start(pending)
                if parsed is None:
                    continue
                pending, started = pending[parsed:], True
            if len(pending) > _HEADER:
                cut = len(pending) - _HEADER
                cut -= cut & 1  # whole samples
                yield PICO_RATE, pending[:cut]
                pending = pending[cut:]
        try:
            stderr = await asyncio.wait_for(process.stderr.read(), timeout_s)
            code = await asyncio.wait_for(process.wait(), timeout_s)
        except TimeoutError:
            raise EngineError("pico2wave did not exit", vendor="local") from None
        if code != 0 or not started:
            message = stderr.decode(errors="replace").strip().splitlines()
            reason = message[0] if message else f"exit {code}"
            raise EngineError(f"pico2wave failed: {reason}", vendor="local")
        if not _is_header(pending):
            # A pico that could seek (or a future one that does not append): it is audio.
            yield PICO_RATE, pending
    finally:
        if process is not None and process.returncode is None:  # stopped early / timed out
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await _reap(process)
        shutil.rmtree(workdir, ignore_errors=True)


async def _reap(process: asyncio.subprocess.Process) -> None:
    """Wait for a killed process even when this task is being cancelled (no zombie)."""
    waiting = asyncio.ensure_future(process.wait())
    try:
        await asyncio.shield(waiting)
    except asyncio.CancelledError:
        await waiting  # SIGKILL was sent: this ends within milliseconds
        raise


def _start(data: bytes) -> int | None:
    """Offset of the audio after pico's start header, ``None`` while it is incomplete."""
    try:
        parsed = split_wav_header(data)
    except ValueError as exc:
        raise EngineError(f"pico2wave wrote no WAV: {exc}", vendor="local") from None
    if parsed is None:
        return None
    rate, offset = parsed
    if rate != PICO_RATE:
        raise EngineError(f"pico2wave wrote {rate} Hz, expected {PICO_RATE}", vendor="local")
    return offset


def _is_header(data: bytes) -> bool:
    return len(data) == _HEADER and data[:4] == b"RIFF" and data[8:16] == b"WAVEfmt "


async def synthesize(
    text: str,
    *,
    sample_rate: int,
    language: str,
    command: str = PICO2WAVE,
    timeout_s: float = PICO_TIMEOUT_S,
) -> AsyncIterator[bytes]:
    """PCM16 at ``sample_rate`` of ``text`` in BCP-47 ``language`` (pico's nearest voice;
    ``en-US`` included). For direct use (benchmarks); calls go through ``LocalTTS``."""
    voice = pico_language(language, include_en_us=True)
    if voice is None:
        raise EngineError(f"pico has no voice for {language!r}", vendor="local")
    resampler = StreamResampler(PICO_RATE, sample_rate)
    async with contextlib.aclosing(
        pico_pcm(text, language=voice, command=command, timeout_s=timeout_s)
    ) as chunks:
        async for _rate, pcm in chunks:
            if out := resampler.process(pcm):
                yield out
    if tail := resampler.flush():
        yield tail
