"""Inbound noise suppression (``orchestrator/noise.py``): CPU per call and noise removed.

Printed:

- **CPU % of one core per call**: :class:`InboundCleaner` over noisy speech in 20 ms chunks,
  as the session's input task feeds it (CPU time of this thread / audio time, median of
  the runs). The same WebRTC processing at 8 kHz (``AudioProcessor(sample_rate=8000)``,
  what it would cost on a phone call's own rate, before our 8 -> 16 kHz resample).
- **noise removed**: RMS in and out for 10 s of steady line noise at -35 dBFS (white, pink,
  50 Hz mains hum with harmonics, white + hum), at 16 kHz and after a phone line's 8 kHz
  µ-law round trip; "out" is measured after the first second, the suppressor's learning.
- **speech kept**: espeak-ng speech on a clean and on the -35 dBFS white line, level of its
  speech windows against the clean speech, and when the end of the turn is detected
  without and with the cleaner (needs espeak-ng + sox; skipped without them).
- **VAD**: SPEECH_STARTED events, Silero model calls and CPU % (VAD, plus the cleaner when
  on) over the 10 s of noise through the real ``TurnDetector``, without and with the
  cleaner: a cleaned -35 dBFS line falls below the VAD's -40 dBFS line-noise skip.

Usage: ``.venv/bin/python -m bench.noise [--seconds 60] [--runs 5]``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from orchestrator.audio import StreamResampler, pcm16_to_ulaw, ulaw_to_pcm16  # noqa: E402
from orchestrator.noise import InboundCleaner, available  # noqa: E402
from orchestrator.silero import SileroVad  # noqa: E402
from orchestrator.vad import TurnDetector, TurnEventKind  # noqa: E402

RATE = 16000
CHUNK = 640  # 20 ms of 16 kHz PCM16: what the socket hands the session per carrier frame
NOISE_KINDS = ("white", "pink", "hum", "white+hum")


def line_noise(kind: str, ms: int, dbfs: float, *, seed: int = 0) -> bytes:
    """``ms`` of steady 16 kHz line noise at an RMS of ``dbfs``: white, pink (1/f),
    50 Hz mains hum with harmonics, or white + hum (equal power). Same seed, same samples."""
    n = RATE * ms // 1000
    rng = np.random.default_rng(seed)
    t = np.arange(n) / RATE
    hum = sum(
        a * np.sin(2 * np.pi * 50 * k * t + k) for k, a in ((1, 1), (2, 0.3), (3, 0.5), (5, 0.2))
    )
    if kind == "white":
        x = rng.normal(0.0, 1.0, n)
    elif kind == "pink":
        spectrum = np.fft.rfft(rng.normal(0.0, 1.0, n))
        spectrum /= np.sqrt(np.maximum(np.arange(len(spectrum)), 1))
        x = np.fft.irfft(spectrum, n)
    elif kind == "hum":
        x = hum
    elif kind == "white+hum":
        x = rng.normal(0.0, 1.0, n) + hum / np.sqrt(np.mean(hum**2))
    else:
        raise ValueError(kind)
    x = x / np.sqrt(np.mean(x**2)) * 32768 * 10 ** (dbfs / 20)
    return np.clip(np.rint(x), -32768, 32767).astype("<i2").tobytes()


def phone_line(pcm16_16k: bytes) -> bytes:
    """What a phone call does to it: 16 -> 8 kHz, µ-law, back to 16 kHz (the app's helpers)."""
    down, up = StreamResampler(RATE, 8000), StreamResampler(8000, RATE)
    pcm8 = ulaw_to_pcm16(pcm16_to_ulaw(down.process(pcm16_16k) + down.flush()))
    return up.process(pcm8) + up.flush()


def mix(*pcms: bytes) -> bytes:
    n = min(len(p) for p in pcms) // 2
    total = sum(np.frombuffer(p, "<i2", count=n).astype(np.int32) for p in pcms)
    return np.clip(total, -32768, 32767).astype("<i2").tobytes()


def dbfs(pcm16: bytes) -> float:
    x = np.frombuffer(pcm16, "<i2").astype(np.float64)
    return 10 * np.log10(max(float(np.mean(x**2)), 1e-3) / 32768**2)


def clean(pcm16: bytes, cleaner: InboundCleaner | None = None) -> bytes:
    cleaner = cleaner or InboundCleaner()
    return b"".join(cleaner.process(pcm16[i : i + CHUNK]) for i in range(0, len(pcm16), CHUNK))


def turn_starts(pcm16: bytes, cleaner: InboundCleaner | None) -> tuple[int, int, float]:
    """SPEECH_STARTED events, Silero model calls and CPU % of one core (cleaner + VAD) for
    ``pcm16`` through the real VAD."""
    vad = SileroVad()
    detector = TurnDetector(
        vad, min_speech_ms=120, silence_timeout_ms=500, preroll_ms=300, barge_in_ms=250
    )
    starts = 0
    started = time.thread_time()
    for i in range(0, len(pcm16), CHUNK):
        chunk = pcm16[i : i + CHUNK]
        for event in detector.feed(cleaner.process(chunk) if cleaner else chunk):
            starts += event.kind is TurnEventKind.SPEECH_STARTED
    cpu = (time.thread_time() - started) / (len(pcm16) / 2 / RATE) * 100
    return starts, vad.model_calls, cpu


def cpu_percent(process, pcm16: bytes, rate: int, runs: int) -> float:  # type: ignore[no-untyped-def]
    """Median CPU % of one core: ``process(chunk)`` over ``pcm16`` in 20 ms chunks."""
    chunk = rate * 2 // 50
    chunks = [pcm16[i : i + chunk] for i in range(0, len(pcm16), chunk)]
    audio_s = len(pcm16) / 2 / rate
    results = []
    for _ in range(runs):
        fn = process()
        started = time.thread_time()
        for c in chunks:
            fn(c)
        results.append((time.thread_time() - started) / audio_s * 100)
    return statistics.median(results)


def webrtc_8k():  # type: ignore[no-untyped-def]
    """The same NS + high-pass at 8 kHz, 20 ms chunks (whole 10 ms frames: no buffering)."""
    from pywebrtc_audio import AudioProcessor

    p = AudioProcessor(sample_rate=8000, noise_suppression=True, high_pass_filter=True, ns_level=1)
    return lambda c: p.process(np.frombuffer(c, "<i2")).tobytes()


def speech_sample() -> bytes | None:
    try:
        from tests.speech import have_speech_tools, silence_pcm16, speech_pcm16
    except ImportError:
        return None
    if not have_speech_tools():
        return None
    text = "Hello there, I would like to book a table for two people tonight, please."
    return silence_pcm16(1000) + speech_pcm16(text) + silence_pcm16(1000)


def turn_end_ms(pcm16: bytes, cleaner: InboundCleaner | None) -> float | None:
    """Audio fed (ms) when TURN_ENDED fired, 20 ms chunks: the end-of-turn detection point."""
    detector = TurnDetector(
        SileroVad(), min_speech_ms=120, silence_timeout_ms=500, preroll_ms=300, barge_in_ms=250
    )
    for i in range(0, len(pcm16), CHUNK):
        chunk = pcm16[i : i + CHUNK]
        events = detector.feed(cleaner.process(chunk) if cleaner else chunk)
        if any(e.kind is TurnEventKind.TURN_ENDED for e in events):
            return (i + len(chunk)) / 2 / RATE * 1000
    return None


def report_cpu(seconds: int, runs: int, speech: bytes | None) -> None:
    base = speech or line_noise("pink", 5000, -25, seed=7)  # speech-like level if no espeak
    reps = -(-seconds * RATE * 2 // len(base))
    noise = line_noise("white", seconds * 1000, -35)
    noisy = mix((base * reps)[: seconds * RATE * 2], noise)
    down = StreamResampler(RATE, 8000)
    noisy_8k = down.process(noisy) + down.flush()
    what = "speech" if speech else "pink noise"
    print(f"CPU: {seconds} s of {what} on a -35 dBFS line, 20 ms chunks, median of {runs}")
    cpu_16k = cpu_percent(lambda: InboundCleaner().process, noisy, RATE, runs)
    cpu_8k = cpu_percent(webrtc_8k, noisy_8k, 8000, runs)
    print(f"  16 kHz InboundCleaner (NS level 1 + high-pass): {cpu_16k:.2f} % of one core per call")
    print(f"   8 kHz AudioProcessor, same settings:           {cpu_8k:.2f} % of one core per call")


def report_noise() -> None:
    print("\nNoise removed (10 s at -35 dBFS RMS; out = after the first second) and the VAD:")
    print(
        "  noise      line       in dBFS out dBFS removed |"
        " w/o: starts model  CPU % | with: starts model  CPU %"
    )
    for kind in NOISE_KINDS:
        for line in ("16 kHz", "8k µ-law"):
            noise = line_noise(kind, 10_000, -35, seed=1)
            if line != "16 kHz":
                noise = phone_line(noise)
            level_in, level_out = dbfs(noise[RATE * 2 :]), dbfs(clean(noise)[RATE * 2 :])
            without = turn_starts(noise, None)
            with_ = turn_starts(noise, InboundCleaner())
            print(
                f"  {kind:<10} {line:<10} {level_in:7.1f} {level_out:8.1f} "
                f"{level_in - level_out:7.1f} | {without[0]:11d} {without[1]:5d} {without[2]:6.2f}"
                f" | {with_[0]:12d} {with_[1]:5d} {with_[2]:6.2f}   ({len(noise) // 1024} windows)"
            )


def report_speech(speech: bytes) -> None:
    print("\nSpeech kept (32 ms windows louder than -40 dBFS in the clean speech):")
    ref = np.frombuffer(speech, "<i2").astype(np.float64)
    windows = len(ref) // 512
    loud = np.sqrt((ref[: windows * 512].reshape(windows, 512) ** 2).mean(1)) > 330
    mask = np.repeat(loud, 512)

    def level(pcm: bytes | np.ndarray, skip: int = 0) -> float:
        x = np.frombuffer(pcm, "<i2") if isinstance(pcm, bytes) else pcm
        x = x.astype(np.float64)[skip:]
        n = min(len(x), len(mask))
        return 10 * np.log10(np.mean(x[:n][mask[:n]] ** 2) / 32768**2)

    noisy = mix(speech, line_noise("white", len(speech) * 1000 // (RATE * 2), -35, seed=3))
    for label, line in (("clean line", speech), ("-35 dBFS white", noisy)):
        out = level(clean(line), skip=96)  # the suppressor delays its output by 96 samples
        print(
            f"  {label:<15} speech {level(ref):6.1f} dBFS, line in {level(line):6.1f}, "
            f"out {out:6.1f} (out - speech {out - level(ref):+.1f} dB); end of turn "
            f"detected at {turn_end_ms(line, None):.0f} ms w/o, "
            f"{turn_end_ms(line, InboundCleaner()):.0f} ms with the cleaner"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=60, help="audio per CPU run")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    if not available():
        sys.exit("pywebrtc-audio is not installed: pip install -r requirements.txt")
    speech = speech_sample()
    report_cpu(args.seconds, args.runs, speech)
    report_noise()
    if speech is None:
        print("\nSpeech kept: skipped (espeak-ng and sox needed)")
    else:
        report_speech(speech)


if __name__ == "__main__":
    main()
