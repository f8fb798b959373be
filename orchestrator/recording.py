"""Call recording: the caller on the left channel, the agent on the right, as the session
heard and played them, encoded to Opus in Ogg while the call runs.

    push_audio ──► caller()  ─┐                         every flush_s: the settled part
                              ├─► _Timeline (16 kHz,  ─► of the timeline ─► OggOpusWriter
    PacedPlayout ─► tapped    │   two channels)          (bounded executor, off the loop)
    transport.send_audio ─────┘
    transport.clear_audio: frames not yet played are taken back

Both channels are placed on one clock, the time since the call record's start
(``RecordingConfig.call_started_at``; the stretch before this session started is
silence), so turn times in the admin are positions in the file:

- **Caller**: the 16 kHz PCM the session received (before noise suppression), laid end
  to end as it arrives; a gap in the stream longer than ``settle_s / 2`` (the carrier
  stopped sending) resumes at the arrival time, so drift never accumulates.
- **Agent**: each frame the playout actually sent, at the time the far end plays it
  (``max(end of the previous frame, now)``, the same schedule as ``PacedPlayout``);
  silence where nothing was played. A clear (barge-in) erases the frames sent but not
  yet played: they never reached the caller's ear.

Audio is handed to the encoder once it is ``settle_s`` old (late caller audio still
lands in place), every ``flush_s``; the Ogg muxer writes a page at least every
``page_s`` and each page is flushed to the file, so a crash loses a few seconds at most
and the file stays readable up to its last page. Encoding runs on a small shared thread
pool, one job per call at a time, never on the event loop. PyAV is imported only when a
recording starts, so a session without recording never loads it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from orchestrator.audio import StreamResampler
from orchestrator.contracts import INPUT_SAMPLE_RATE, Transport

logger = logging.getLogger(__name__)

RATE = INPUT_SAMPLE_RATE  # the recording's rate: the caller's as the session gets it
CALLER, AGENT = 0, 1  # channel index: left, right
# Time 0 is the call record's start; an outbound call rings before its session starts.
# Longer than this (a carrier rings for 60 s at most) is not a ringing call: capped.
MAX_LEAD_S = 120.0
MAX_JOB_S = 10.0  # audio per encoder job at most: no call holds a pool thread for long
ENCODER_THREADS = 2  # shared by every call of the process; a job is ~1 s of audio (ms)


@dataclass(slots=True, kw_only=True, frozen=True)
class RecordingConfig:
    path: Path  # the spool file written while the call runs
    # bit/s for both channels: 32 kbit/s is at most 2.4 MB per 10 minutes. At 24 the
    # encoder's joint stereo leaks one side into the other (-29 dB) for ~0.5 s after the
    # agent stops and the caller starts; at 32 that is -50 dB, inaudible.
    bitrate: int = 32_000
    # Wall-clock start of the call record (epoch seconds): time 0 of the file. None: the
    # session's own start.
    call_started_at: float | None = None
    flush_s: float = 1.0  # how often settled audio goes to the encoder
    settle_s: float = 0.5  # caller audio this late still lands in place
    page_s: float = 1.0  # the Ogg muxer's longest page (each page is flushed to the file)


@dataclass(slots=True, kw_only=True, frozen=True)
class RecordingResult:
    path: Path
    duration_s: float
    size_bytes: int


class OggOpusWriter:
    """Stereo 16-bit PCM in, Opus in Ogg out; blocking (run it in an executor).

    Thread-safe: a write still running on the pool when the call's task is cancelled
    finishes before ``close``."""

    def __init__(self, path: Path, *, rate: int = RATE, bitrate: int = 32_000, page_s: float = 1.0):
        import av

        path.parent.mkdir(parents=True, exist_ok=True)
        self._av = av
        self._rate = rate
        self._lock = threading.Lock()
        # flush_packets: every page the muxer completes reaches the file at once, so a
        # crash leaves a file readable up to its last page.
        self._container: Any = av.open(
            str(path),
            mode="w",
            format="ogg",
            options={"page_duration": str(int(page_s * 1_000_000)), "flush_packets": "1"},
        )
        self._stream: Any = self._container.add_stream("libopus", rate=rate, layout="stereo")
        self._stream.bit_rate = bitrate
        self._pts = 0
        self._closed = False

    def write(self, stereo: np.ndarray) -> None:
        """``stereo``: int16 samples, shape (n, 2)."""
        if not len(stereo):
            return
        with self._lock:
            if self._closed:
                return
            frame = self._av.AudioFrame.from_ndarray(
                np.ascontiguousarray(stereo, dtype=np.int16).reshape(1, -1),
                format="s16",
                layout="stereo",
            )
            frame.sample_rate = self._rate
            frame.pts = self._pts
            self._pts += len(stereo)
            for packet in self._stream.encode(frame):
                self._container.mux(packet)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                for packet in self._stream.encode(None):
                    self._container.mux(packet)
            finally:
                self._container.close()


def decoded_blocks(source: str | IO[bytes]) -> Iterator[tuple[np.ndarray, int]]:
    """Read a recording back: (float32 samples shaped (channels, n), sample rate) per
    decoded frame. A file cut short by a crash decodes up to its last complete page."""
    import av

    with av.open(source) as container:
        try:
            for frame in container.decode(audio=0):
                block = frame.to_ndarray().astype(np.float32, copy=False)
                if not frame.format.is_planar:  # packed: (1, n * channels)
                    block = block.reshape(-1, len(frame.layout.channels)).T
                yield block, frame.sample_rate
        except av.error.FFmpegError as exc:  # a torn last page: what came before is kept
            logger.info("recording decoded up to a broken page: %s", exc)


class _Timeline:
    """Two int16 channels from sample ``base`` on; what is taken is gone.

    Holds only what is not yet taken (a few seconds): ``take`` moves the rest to the
    front and gives back memory a burst made it grow by, so neither its size nor the
    cost of a take grows with the call's length (or an outbound call's ringing lead,
    which starts ``base`` and is never held here)."""

    MIN_SAMPLES = RATE * 2

    def __init__(self, base: int = 0) -> None:
        self.base = base
        self._buf = np.zeros((self.MIN_SAMPLES, 2), np.int16)
        self._used = 0  # samples from base written (or erased) so far; beyond: zeros

    @property
    def nbytes(self) -> int:
        return self._buf.nbytes

    def _ensure(self, end: int) -> None:
        need = end - self.base
        if need > len(self._buf):
            grown = np.zeros((max(need, 2 * len(self._buf)), 2), np.int16)
            grown[: self._used] = self._buf[: self._used]
            self._buf = grown
        self._used = max(self._used, need)

    def write(self, channel: int, at: int, samples: np.ndarray) -> None:
        if at < self.base:  # already encoded: the late part is lost
            samples = samples[self.base - at :]
            at = self.base
        if not len(samples):
            return
        self._ensure(at + len(samples))
        self._buf[at - self.base : at - self.base + len(samples), channel] = samples

    def erase(self, channel: int, start: int, end: int) -> None:
        start = max(start, self.base)
        if end > start:
            self._ensure(end)
            self._buf[start - self.base : end - self.base, channel] = 0

    def take(self, until: int) -> np.ndarray:
        n = until - self.base
        if n <= 0:
            return np.zeros((0, 2), np.int16)
        self._ensure(until)
        out = self._buf[:n].copy()
        rest = self._used - n
        # Only the part still held moves (numpy copies overlapping slices correctly).
        self._buf[:rest] = self._buf[n : self._used]
        self._buf[rest : self._used] = 0
        self._used = rest
        if len(self._buf) > max(self.MIN_SAMPLES, 4 * rest):  # a burst is over: shrink
            smaller = np.zeros((max(self.MIN_SAMPLES, 2 * rest), 2), np.int16)
            smaller[:rest] = self._buf[:rest]
            self._buf = smaller
        self.base = until
        return out


_executor: ThreadPoolExecutor | None = None


def _shared_executor() -> Executor:
    global _executor
    if _executor is None:
        _executor = ThreadPoolExecutor(ENCODER_THREADS, thread_name_prefix="recording")
    return _executor


class CallRecording:
    """One call's recording: the session's collaborator (see the module docstring).

    ``tap`` wraps the transport the playout sends through; ``start`` at the session's
    start, ``caller`` for every chunk of caller audio, ``close`` once at the end (it
    finishes the file). Recording problems are logged and stop the recording, never
    the call."""

    def __init__(
        self,
        config: RecordingConfig,
        *,
        call_id: str = "",
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        executor: Executor | None = None,
    ) -> None:
        self.config = config
        self._call_id = call_id
        self._clock = clock
        self._wall = wall
        self._executor = executor
        self._timeline = _Timeline()
        self._t0 = 0.0
        self._lead = 0  # samples of silence before the session's start
        self._running = False
        self._caller_next = 0  # where the next caller sample goes
        self._agent_next = 0  # where the far end plays the next agent frame
        self._agent_write = 0  # where the agent's resampled audio continues
        self._resampler: StreamResampler | None = None
        self._end = 0
        self._closing = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._written = 0  # samples handed to the encoder
        self.result: RecordingResult | None = None
        self.failed = ""

    # --- the session's hooks ---------------------------------------------------------------

    def tap(self, transport: Transport) -> Transport:
        """``transport`` with its sent and cleared agent audio also recorded."""
        return _TappedTransport(transport, self)

    def start(self) -> None:
        """The session starts: time since the call record's start begins to count here."""
        if self._task is not None:
            return
        self._t0 = self._clock()
        started = self.config.call_started_at
        lead_s = min(max(0.0, self._wall() - started), MAX_LEAD_S) if started else 0.0
        self._lead = round(lead_s * RATE)
        # The lead (silence) is never held in the timeline: the encoder writes it first,
        # in chunks, so a long ringing time costs neither memory nor loop time.
        self._timeline = _Timeline(self._lead)
        self._caller_next = self._agent_next = self._agent_write = self._lead
        self._running = True
        self._task = asyncio.create_task(self._encode(), name=f"recording-{self._call_id}")

    def caller(self, pcm16: bytes) -> None:
        """Caller audio as the session received it (16 kHz mono PCM16)."""
        if not self._running:
            return
        samples = np.frombuffer(pcm16[: len(pcm16) & ~1], "<i2")
        start = self._caller_next
        # A gap in the stream (the carrier stopped sending): what arrives now ends now.
        arrived_end = self._now()
        if arrived_end - (start + len(samples)) > round(self.config.settle_s * RATE / 2):
            start = arrived_end - len(samples)
        self._timeline.write(CALLER, start, samples)
        self._caller_next = start + len(samples)

    def agent_sent(self, frame: bytes, *, sample_rate: int, at: float) -> None:
        """A frame the playout sent at clock time ``at``: it plays when the far end has
        played everything before it."""
        if not self._running:
            return
        at_index = self._index(at)
        start = max(self._agent_next, at_index)
        if self._resampler is None or self._resampler.in_rate != sample_rate:
            self._resampler = StreamResampler(sample_rate, RATE)
        if start > self._agent_write:  # a new stretch: the last one's filter tail first
            self._write_agent(self._resampler.flush())
            self._agent_write = max(self._agent_write, start)
        self._write_agent(self._resampler.process(frame))
        self._agent_next = start + (len(frame) // 2) * RATE // sample_rate

    def agent_cleared(self) -> None:
        """The far end dropped its queued agent audio: what it had not played is erased."""
        if not self._running:
            return
        now = self._now()
        self._timeline.erase(AGENT, now, max(self._agent_next, self._agent_write))
        if self._resampler is not None:
            self._resampler.clear()
        self._agent_next = min(self._agent_next, now)
        self._agent_write = min(self._agent_write, now)

    async def close(self, *, wait_s: float | None = None) -> RecordingResult | None:
        """Finish the file (the audio up to now, and any caller audio received ahead of
        real time); None when it failed or never started, or is still being finished
        after ``wait_s`` (a stuck disk never holds up the end of the call: the encoder
        goes on, and a later ``close`` waits for it)."""
        if self._task is None:
            return None
        if self._running:
            self._running = False
            if self._resampler is not None:
                self._write_agent(self._resampler.flush())
            self._end = max(self._now(), self._caller_next, self._agent_next, self._agent_write)
            self._closing.set()
        try:
            # shield: a timeout leaves the encoder task running, for the next close.
            await asyncio.wait_for(asyncio.shield(self._task), wait_s)
        except TimeoutError:
            logger.warning("call %s: recording still being finished after %.0f s",
                           self._call_id, wait_s, extra={"call_id": self._call_id})  # fmt: skip
            return None
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - logged in _encode; a recording never ends a call
            pass
        if self.result is None and not self.failed:
            try:
                size = self.config.path.stat().st_size
            except OSError as exc:
                self.failed = f"spool file gone: {exc}"
            else:
                self.result = RecordingResult(
                    path=self.config.path, duration_s=self._written / RATE, size_bytes=size
                )
        return self.result

    # --- inside ---------------------------------------------------------------------------

    def _index(self, t: float) -> int:
        return self._lead + round((t - self._t0) * RATE)

    def _now(self) -> int:
        return self._index(self._clock())

    def _write_agent(self, pcm16: bytes) -> None:
        if pcm16:
            samples = np.frombuffer(pcm16, "<i2")
            self._timeline.write(AGENT, self._agent_write, samples)
            self._agent_write += len(samples)

    async def _encode(self) -> None:
        """The call's encoder task: settled audio to the writer every ``flush_s``."""
        loop = asyncio.get_running_loop()
        pool = self._executor or _shared_executor()
        cfg = self.config
        job = round(MAX_JOB_S * RATE)
        writer: OggOpusWriter | None = None
        opening: Future[OggOpusWriter] | None = None
        # Set only once writer.close has returned: a cancel while that close (or the last
        # writes) is awaited must still close the file, whatever _closing says.
        closed = False
        try:
            opening = pool.submit(
                lambda: OggOpusWriter(cfg.path, bitrate=cfg.bitrate, page_s=cfg.page_s)
            )
            writer = await asyncio.wrap_future(opening)
            lead = self._lead  # the silence before the session started, off the timeline
            while lead > 0:
                silence = np.zeros((min(lead, job), 2), np.int16)
                await loop.run_in_executor(pool, writer.write, silence)
                self._written += len(silence)
                lead -= len(silence)
            while True:
                try:
                    await asyncio.wait_for(self._closing.wait(), cfg.flush_s)
                except TimeoutError:
                    pass
                closing = self._closing.is_set()
                settled = self._end if closing else self._now() - round(cfg.settle_s * RATE)
                while len(chunk := self._timeline.take(min(settled, self._timeline.base + job))):
                    await loop.run_in_executor(pool, writer.write, chunk)
                    self._written += len(chunk)
                if closing:
                    break
            await loop.run_in_executor(pool, writer.close)
            closed = True
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._running = False
            self.failed = f"{type(exc).__name__}: {exc}"
            logger.exception("call %s: recording failed; the call goes on without it",
                             self._call_id, extra={"call_id": self._call_id})  # fmt: skip
            raise
        finally:
            if writer is not None and not closed:
                # Cancelled or failed: close what was written (readable up to there);
                # on the pool, as the write it may still be running there holds the lock.
                # A close already running there finishes first; this one is then a no-op.
                pool.submit(writer.close)
            elif writer is None and opening is not None:
                # Cancelled while the file was being opened: close it once it is.
                opening.add_done_callback(_close_opened)


def _close_opened(opening: Future[OggOpusWriter]) -> None:
    """Close a writer whose opening finished after its encoder task was cancelled."""
    if not opening.cancelled() and opening.exception() is None:
        opening.result().close()


class _TappedTransport:
    """The call's transport, with the playout's sent frames and clears also recorded.
    Everything else (events, close, ``transfer`` when the carrier has it) passes through."""

    def __init__(self, inner: Transport, recording: CallRecording) -> None:
        self._inner = inner
        self._recording = recording
        self.sample_rate = inner.sample_rate

    async def send_audio(self, frame: bytes) -> None:
        at = self._recording._clock()
        await self._inner.send_audio(frame)
        self._recording.agent_sent(frame, sample_rate=int(self.sample_rate), at=at)

    async def clear_audio(self) -> None:
        self._recording.agent_cleared()
        await self._inner.clear_audio()

    async def send_event(self, event: dict[str, Any]) -> None:
        await self._inner.send_event(event)

    async def close(self, reason: str) -> None:
        await self._inner.close(reason)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)
