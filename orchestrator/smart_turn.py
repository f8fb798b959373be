"""Smart Turn v3.2: has the caller finished their turn? A probability from the audio alone.

The model: Daily's Smart Turn v3.2 (https://github.com/pipecat-ai/smart-turn), a Whisper-Tiny
encoder with a small classification head (~8 M parameters, int8 "CPU" build), trained on
23 languages to tell a finished turn from a pause inside one, from prosody (pitch, rhythm,
the shape of the last words), not from a transcript. License: BSD-2-Clause (notice below).

The file: ``smart-turn-v3.2-cpu.onnx`` (8,679,182 bytes, sha256 ``SHA256`` below) ships
inside the ``pipecat-ai==1.14.0`` wheel, which ``requirements-turn.txt`` installs with
``--no-deps --require-hashes`` only to carry it. pipecat is never imported (its import
pulls loguru and prints a banner): :func:`model_path` finds the file with
``importlib.util.find_spec``, which does not import the package, and the file's sha256 is
checked once when it is loaded.

Input: the last 8 s of the turn as 16 kHz PCM16 (128,000 samples; a shorter turn is
zero-padded at the front, as pipecat does), turned into Whisper log-mel features
``input_features`` float32 [1, 80, 800] by :func:`features`. Output ``logits`` [1, 1] is
already a sigmoid probability: >= 0.5 means the turn is complete. Telephone audio (8 kHz
µ-law) is resampled to 16 kHz by the caller; the model is weaker on it, and on synthetic
voices (espeak/piper prosody reads as "finished" whatever the words), so the decision
around the score belongs to ``end_of_turn.py``.

Cost, measured on the 2-core AMD EPYC VM of bench/README.md (onnxruntime 1.32, one thread,
``bench/smart_turn.py``, 2026-11-27): features 6.7 ms p50, inference 26 ms p50 (36-38 ms p90),
~32 ms of CPU per scored turn, the same at 16 kHz and after a phone line; model load 50 ms
(sha256 + session), first inference ~40-100 ms. With the cores busy, p50 doubles. A process
runs one inference at a time, on one dedicated thread shared by every call (:class:`SmartTurn`):
the model never runs on the event loop, and when more than ``max_waiting`` jobs are queued
:meth:`SmartTurn.score` answers ``None`` at once (the caller falls back to its silence
rule), so an overloaded process does not pile up model work behind its calls.

--- License of the model and of the feature extraction it expects -------------------------
Smart Turn and pipecat: BSD 2-Clause License, Copyright (c) 2024-2026, Daily.
  Redistribution and use in source and binary forms, with or without modification, are
  permitted provided that the following conditions are met: 1. Redistributions of source
  code must retain the above copyright notice, this list of conditions and the following
  disclaimer. 2. Redistributions in binary form must reproduce the above copyright notice,
  this list of conditions and the following disclaimer in the documentation and/or other
  materials provided with the distribution. THIS SOFTWARE IS PROVIDED BY THE COPYRIGHT
  HOLDERS AND CONTRIBUTORS "AS IS" AND ANY EXPRESS OR IMPLIED WARRANTIES, INCLUDING, BUT NOT
  LIMITED TO, THE IMPLIED WARRANTIES OF MERCHANTABILITY AND FITNESS FOR A PARTICULAR PURPOSE
  ARE DISCLAIMED. IN NO EVENT SHALL THE COPYRIGHT HOLDER OR CONTRIBUTORS BE LIABLE FOR ANY
  DIRECT, INDIRECT, INCIDENTAL, SPECIAL, EXEMPLARY, OR CONSEQUENTIAL DAMAGES (INCLUDING, BUT
  NOT LIMITED TO, PROCUREMENT OF SUBSTITUTE GOODS OR SERVICES; LOSS OF USE, DATA, OR
  PROFITS; OR BUSINESS INTERRUPTION) HOWEVER CAUSED AND ON ANY THEORY OF LIABILITY, WHETHER
  IN CONTRACT, STRICT LIABILITY, OR TORT (INCLUDING NEGLIGENCE OR OTHERWISE) ARISING IN ANY
  WAY OUT OF THE USE OF THIS SOFTWARE, EVEN IF ADVISED OF THE POSSIBILITY OF SUCH DAMAGE.
:func:`features` follows pipecat's ``_whisper_features.py`` (BSD-2-Clause, Daily), itself
derived from Hugging Face Transformers' ``WhisperFeatureExtractor`` and ``audio_utils``
(Copyright 2022-2023 The HuggingFace Inc. team and the librosa & torchaudio authors,
Apache License 2.0, https://www.apache.org/licenses/LICENSE-2.0); rewritten here.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import importlib.metadata
import importlib.util
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

SHA256 = "2bb026316b14a660486a75b1733cd3fbab8c2fd0314dc9af7be49f8cca967e4f"
_WHEEL = "pipecat-ai==1.14.0"
_IN_PACKAGE = Path("audio", "turn", "smart_turn", "data", "smart-turn-v3.2-cpu.onnx")

SAMPLE_RATE = 16000
WINDOW_SAMPLES = 8 * SAMPLE_RATE  # the model sees the last 8 s
THRESHOLD = 0.5  # the model's own: a probability >= 0.5 is a complete turn

# --- Whisper log-mel features ---------------------------------------------------------------
_N_FFT = 400
_HOP = 160
_N_MELS = 80
_N_FRAMES = WINDOW_SAMPLES // _HOP  # 800: Whisper's last frame (801st) is dropped
_NORM_EPS = 1e-7  # transformers' zero-mean/unit-variance epsilon


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney mel scale: linear below 1 kHz, logarithmic above."""
    hz = np.asarray(hz, np.float64)
    above = 15.0 + np.log(np.maximum(hz, 1000.0) / 1000.0) * 27.0 / np.log(6.4)
    return np.where(hz < 1000.0, 3.0 * hz / 200.0, above)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    above = 1000.0 * np.exp((mel - 15.0) * np.log(6.4) / 27.0)
    return np.where(mel < 15.0, 200.0 * mel / 3.0, above)


def _mel_filterbank() -> np.ndarray:
    """[80, 201] Slaney-normalised triangular filters, 0-8 kHz (as librosa/transformers)."""
    mel_points = np.linspace(_hz_to_mel(0.0), _hz_to_mel(SAMPLE_RATE / 2), _N_MELS + 2)
    edges = _mel_to_hz(mel_points)  # [82]
    fft_hz = np.linspace(0, SAMPLE_RATE // 2, _N_FFT // 2 + 1)  # [201]
    slopes = edges[None, :] - fft_hz[:, None]  # [201, 82]
    widths = np.diff(edges)
    down = -slopes[:, :-2] / widths[:-1]
    up = slopes[:, 2:] / widths[1:]
    filters = np.maximum(0.0, np.minimum(down, up))
    filters *= 2.0 / (edges[2:] - edges[:-2])  # equal area per filter (Slaney)
    return np.ascontiguousarray(filters.T)


_MEL = _mel_filterbank()  # float64 [80, 201]
_WINDOW = np.hanning(_N_FFT + 1)[:-1]  # periodic Hann (torch.hann_window), float64


def features(pcm16_16k: bytes) -> np.ndarray:
    """Whisper log-mel features of the last 8 s of 16 kHz PCM16LE: float32 [80, 800].

    Equals ``WhisperFeatureExtractor(chunk_length=8)(audio, padding="max_length",
    max_length=128000, do_normalize=True)`` on pipecat's front-padded window: the
    waveform is zero-padded AT THE FRONT to 8 s, then that whole padded window is
    normalised to zero mean and unit variance (in float32, as pipecat and transformers
    do), so any constant gain gives the same features. Then a centred (reflect-padded)
    400-point periodic-Hann STFT every 160 samples, power spectrum, 80 Slaney mel bins,
    log10 (floor 1e-10), the top 80 dB kept (clamp to max - 8), scaled by (x + 4) / 4.
    Any length is accepted (empty, odd bytes: the trailing byte is ignored).
    """
    n = len(pcm16_16k) // 2
    samples = np.frombuffer(pcm16_16k, "<i2", count=n)[-WINDOW_SAMPLES:]
    x = np.zeros(WINDOW_SAMPLES, np.float32)
    if samples.size:
        x[WINDOW_SAMPLES - samples.size :] = samples
    x /= 32768.0
    x = (x - x.mean()) / np.sqrt(x.var() + _NORM_EPS)

    half = _N_FFT // 2
    padded = np.pad(x.astype(np.float64), (half, half), mode="reflect")
    # Only the 800 frames the model reads (Whisper computes 801 and drops the last).
    frames = np.lib.stride_tricks.sliding_window_view(padded, _N_FFT)[::_HOP][:_N_FRAMES]
    spectrum = np.fft.rfft(frames * _WINDOW, axis=-1)  # [800, 201] complex128
    power = spectrum.real**2 + spectrum.imag**2
    # einsum, not ``_MEL @ power.T``: numpy's matmul goes to OpenBLAS, which wakes a second
    # thread for this size and spins it, doubling the CPU of the features for no gain.
    mel = np.einsum("mf,tf->mt", _MEL, power)  # [80, 800]
    log_mel = np.log10(np.maximum(mel, 1e-10))
    log_mel = np.maximum(log_mel, log_mel.max() - 8.0)
    return ((log_mel + 4.0) / 4.0).astype(np.float32)


# --- The model file -------------------------------------------------------------------------


class ModelChecksumError(RuntimeError):
    """The ONNX file on disk is not the Smart Turn v3.2 file we pinned."""


def model_path() -> Path:
    """Where the installed ``pipecat-ai`` wheel put the ONNX file (pipecat is not imported).

    Raises FileNotFoundError when the wheel is not installed (``requirements-turn.txt``).
    """
    candidates: list[Path] = []
    try:
        spec = importlib.util.find_spec("pipecat")
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        candidates += [Path(loc) / _IN_PACKAGE for loc in spec.submodule_search_locations]
    try:
        files = importlib.metadata.files("pipecat-ai") or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    candidates += [Path(str(f.locate())) for f in files if f.name == _IN_PACKAGE.name]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"Smart Turn model not found: install it with "
        f"`pip install --no-deps --require-hashes -r requirements-turn.txt` ({_WHEEL})"
    )


def available() -> bool:
    """The model file is installed (its checksum is checked when it is loaded)."""
    try:
        model_path()
    except FileNotFoundError:
        return False
    return True


def _check_sha256(path: Path, expected: str) -> None:
    with path.open("rb") as f:
        actual = hashlib.file_digest(f, "sha256").hexdigest()
    if actual != expected:
        raise ModelChecksumError(
            f"{path} has sha256 {actual}, expected {expected} "
            f"(Smart Turn v3.2 CPU model from {_WHEEL}); refusing to load it"
        )


# --- Scoring --------------------------------------------------------------------------------


@dataclass(slots=True, kw_only=True, frozen=True)
class SmartTurnStats:
    """Counters since the process started (for metrics and benchmarks)."""

    inferences: int  # turns scored by the model
    skipped_busy: int  # answered None at once: too many jobs already waiting
    dropped: int  # the caller stopped waiting before the job started: never run
    failures: int  # the job raised (model missing, wrong file, ONNX error)
    features_s: float  # wall seconds in features(), all inferences
    inference_s: float  # wall seconds in the ONNX session, all inferences
    cpu_s: float  # CPU seconds of the model thread, all inferences

    @property
    def total_s(self) -> float:
        return self.features_s + self.inference_s


class SmartTurn:
    """The model with its own single worker thread; one per process is enough (:func:`shared`).

    One ONNX Runtime session (one intra-op and one inter-op thread), loaded lazily on the
    worker thread, thread-safe. ``score`` hands features + inference to the worker and
    awaits it; at most ``max_waiting`` jobs wait behind the running one, beyond that
    ``score`` returns None immediately. Cancelling a ``score`` never blocks: a job that has
    not started is dropped, a running one finishes on its thread and its result is lost.
    """

    def __init__(
        self, *, path: Path | None = None, sha256: str = SHA256, max_waiting: int = 4
    ) -> None:
        self._path = path
        self._sha256 = sha256
        self.max_waiting = max_waiting
        self._lock = threading.Lock()  # executor and counters: held briefly, also on the loop
        self._load_lock = threading.Lock()  # held while loading (~50 ms+): never on the loop
        self._session = None
        self._load_error: Exception | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._in_flight = 0  # submitted and not finished (running + waiting)
        self._inferences = self._skipped_busy = self._dropped = self._failures = 0
        self._features_s = self._inference_s = self._cpu_s = 0.0

    # -- the model, on whatever thread calls these (the worker, or a benchmark) --

    def load(self) -> None:
        """Check and load the ONNX file once; a failure is remembered and raised again."""
        if self._session is not None:
            return
        with self._load_lock:
            if self._session is not None:
                return
            if self._load_error is not None:  # without the old traceback, which would grow
                raise self._load_error.with_traceback(None)
            try:
                self._session = self._open()
            except Exception as exc:
                self._load_error = exc
                raise

    def _open(self):  # type: ignore[no-untyped-def]
        import onnxruntime as ort

        started = time.perf_counter()
        path = self._path or model_path()
        _check_sha256(path, self._sha256)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # one call's inference must not take both cores
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = ort.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        logger.info(
            "Smart Turn v3.2 loaded from %s (%.0f ms)", path, (time.perf_counter() - started) * 1000
        )
        return session

    def infer(self, input_features: np.ndarray) -> float:
        """The model's probability for features [80, 800] (blocking)."""
        self.load()
        session = self._session
        assert session is not None
        batch = np.ascontiguousarray(input_features, np.float32)[None]
        (logits,) = session.run(["logits"], {"input_features": batch})
        return float(logits.reshape(-1)[0])

    def predict(self, pcm16_16k: bytes) -> float:
        """Features + inference of one turn, blocking; counted in :meth:`stats`."""
        cpu0, t0 = time.thread_time(), time.perf_counter()
        try:
            feats = features(pcm16_16k)
            t1 = time.perf_counter()
            probability = self.infer(feats)
        except Exception:
            with self._lock:
                self._failures += 1
            raise
        t2 = time.perf_counter()
        cpu = time.thread_time() - cpu0
        with self._lock:
            self._inferences += 1
            self._features_s += t1 - t0
            self._inference_s += t2 - t1
            self._cpu_s += cpu
        return probability

    # -- the async API --

    async def score(self, pcm16_16k: bytes) -> float | None:
        """Probability that the turn in ``pcm16_16k`` (16 kHz PCM16) is complete, or None
        when the model thread is too busy to take the job (use the silence rule then).

        Raises what the model raised (not installed, wrong file): the caller falls back too.
        """
        return await self._run(pcm16_16k, bounded=True)

    async def warmup(self) -> None:
        """Load the model and run one inference on the model thread, whatever the queue
        (ONNX Runtime's first run is slower than the next ones); raises if the model is
        unusable. The warm-up counts as one inference in :meth:`stats`."""
        await self._run(b"", bounded=False)

    async def _run(self, pcm16_16k: bytes, *, bounded: bool) -> float | None:
        # The last 8 s, copied (the caller's buffer moves on); an odd trailing byte is dropped
        # here, not at the front, so the samples stay aligned.
        end = len(pcm16_16k) & ~1
        audio = bytes(pcm16_16k[max(0, end - 2 * WINDOW_SAMPLES) : end])
        with self._lock:
            if bounded and self._in_flight > self.max_waiting:
                self._skipped_busy += 1
                skipped, waiting = self._skipped_busy, self._in_flight - 1
            else:
                self._in_flight += 1
                skipped = 0
            if self._executor is None:
                self._executor = concurrent.futures.ThreadPoolExecutor(
                    max_workers=1, thread_name_prefix="smart-turn"
                )
            executor = self._executor
        if skipped:
            log = logger.info if skipped == 1 or skipped % 100 == 0 else logger.debug
            log("Smart Turn busy (%d jobs waiting): turn not scored (%d so far)", waiting, skipped)
            return None
        job = executor.submit(self.predict, audio)
        job.add_done_callback(self._finished)
        # Cancelling the awaiting task cancels ``job`` if it has not started (dropped);
        # a running job cannot be stopped and finishes unseen. Neither blocks the loop.
        return await asyncio.wrap_future(job)

    def _finished(self, job: concurrent.futures.Future[float]) -> None:
        with self._lock:
            self._in_flight -= 1
            if job.cancelled():
                self._dropped += 1

    def stats(self) -> SmartTurnStats:
        with self._lock:
            return SmartTurnStats(
                inferences=self._inferences,
                skipped_busy=self._skipped_busy,
                dropped=self._dropped,
                failures=self._failures,
                features_s=self._features_s,
                inference_s=self._inference_s,
                cpu_s=self._cpu_s,
            )


_shared: SmartTurn | None = None
_shared_lock = threading.Lock()


def shared() -> SmartTurn:
    """The process's model: one ONNX session and one model thread for every call."""
    global _shared
    if _shared is None:
        with _shared_lock:
            if _shared is None:
                _shared = SmartTurn()
    return _shared


async def score(pcm16_16k: bytes) -> float | None:
    """:meth:`SmartTurn.score` on the process's shared model (``end_of_turn.ScoreFn``)."""
    return await shared().score(pcm16_16k)


async def warmup() -> None:
    """Load the shared model and run it once, off the event loop."""
    await shared().warmup()


def stats() -> SmartTurnStats:
    return shared().stats()
