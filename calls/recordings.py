"""Call recordings on the Django side: where a live call's file is spooled, the name it is
stored under, reading it back (duration, waveform peaks) and serving byte ranges.

The recording itself is written by ``orchestrator/recording.py`` while the call runs;
``services.call_recording_store`` moves the finished file into the ``recordings``
storage. Reads (plus the waveform cache they fill): every change to a call or its
recording goes through ``calls/services.py``.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import numpy as np
from django.conf import settings
from django.core.files.base import ContentFile

from calls.models import Call, recordings_storage
from orchestrator.recording import RecordingConfig, decoded_blocks

logger = logging.getLogger(__name__)

PEAKS_PER_S = 50  # waveform resolution of peaks.json: one bar per 20 ms (one audio frame)
SPOOL_SUFFIX = ".ogg"


def spool_path(call_id: object) -> Path:
    return Path(settings.RECORDINGS_SPOOL_DIR) / f"{call_id}{SPOOL_SUFFIX}"


def recording_config(*, call_id: object, call_started_at: datetime | None) -> RecordingConfig:
    """What the session's recorder needs: its spool file and time 0 (the call's start)."""
    return RecordingConfig(
        path=spool_path(call_id),
        bitrate=settings.RECORDING_BITRATE_KBPS * 1000,
        call_started_at=call_started_at.timestamp() if call_started_at else None,
    )


def storage_name(call: Call) -> str:
    """``recordings/YYYY/MM/DD/<call id>.ogg`` (the call's start, UTC)."""
    return f"recordings/{call.started_at:%Y/%m/%d}/{call.pk}.ogg"


def peaks_name(recording_name: str) -> str:
    """The waveform cache kept next to a recording."""
    return re.sub(r"\.ogg$", "", recording_name) + ".peaks.json"


def spooled_call_ids() -> list[tuple[str, Path]]:
    """(call id, spool file) of every recording left in this host's spool directory."""
    root = Path(settings.RECORDINGS_SPOOL_DIR)
    if not root.is_dir():
        return []
    return [(p.name[: -len(SPOOL_SUFFIX)], p) for p in sorted(root.glob(f"*{SPOOL_SUFFIX}"))]


# --- reading a recording back (PyAV) -----------------------------------------------------


class UnreadableRecording(Exception):
    """The file holds no readable recording (empty, or not even its header reached disk)."""


def probe_duration(path: Path) -> float:
    """Seconds of audio in a (possibly unfinished) recording. Raises
    ``UnreadableRecording`` when the file's content is not a recording; any other error
    (PyAV missing, an I/O or permission error) propagates: it says nothing about the file,
    so the caller must not treat the file as garbage."""
    import av

    samples, last_rate = 0, 0
    try:
        for block, rate in decoded_blocks(str(path)):
            samples, last_rate = samples + block.shape[1], rate
    # What FFmpeg answers for content that is not a recording: InvalidDataError for bytes
    # it cannot parse, EOFError for a file that ends before its header (empty, or the
    # process died before the first page reached disk).
    except (av.error.InvalidDataError, av.error.EOFError) as exc:
        raise UnreadableRecording(str(exc)) from exc
    return samples / last_rate if last_rate else 0.0


@dataclass(slots=True, kw_only=True)
class _PeakAccumulator:
    """Max |sample| per 1/PEAKS_PER_S of a second, per channel, over streamed frames."""

    rate: int = 0
    samples: int = 0
    carry: np.ndarray | None = None
    left: list[float] = field(default_factory=list)
    right: list[float] = field(default_factory=list)

    def add(self, block: np.ndarray, rate: int) -> None:
        if block.shape[0] == 1:  # a mono file: an empty right channel
            block = np.vstack([block, np.zeros_like(block)])
        self.rate = rate
        self.samples += block.shape[1]
        data = block[:2] if self.carry is None else np.hstack([self.carry, block[:2]])
        step = rate // PEAKS_PER_S
        whole = data.shape[1] // step * step
        if whole:
            bars = np.abs(data[:, :whole]).reshape(2, -1, step).max(axis=2)
            self.left.extend(bars[0].tolist())
            self.right.extend(bars[1].tolist())
        self.carry = data[:, whole:]

    def result(self) -> dict[str, Any]:
        if self.carry is not None and self.carry.shape[1]:
            tail = np.abs(self.carry).max(axis=1)
            self.left.append(float(tail[0]))
            self.right.append(float(tail[1]))
        return {
            "duration_s": round(self.samples / self.rate, 3) if self.rate else 0.0,
            "sample_rate": self.rate,
            "peaks_per_s": PEAKS_PER_S,
            "left": [round(min(1.0, v), 3) for v in self.left],
            "right": [round(min(1.0, v), 3) for v in self.right],
        }


def compute_peaks(source: str | IO[bytes]) -> dict[str, Any]:
    """The waveform of both channels: ``{"duration_s", "sample_rate", "peaks_per_s",
    "left": [0..1], "right": [0..1]}`` (left: caller, right: agent)."""
    acc = _PeakAccumulator()
    for block, rate in decoded_blocks(source):
        acc.add(block, rate)
    return acc.result()


def recording_peaks(call: Call) -> dict[str, Any]:
    """The call's waveform, computed once by decoding and cached next to the file."""
    storage = recordings_storage()
    cache = peaks_name(call.recording.name)
    if storage.exists(cache):
        with storage.open(cache, "rb") as fh:
            return json.loads(fh.read())
    with storage.open(call.recording.name, "rb") as fh:
        peaks = compute_peaks(fh)
    try:
        # Two first-time requests both decode; whichever saves second must not leave a
        # second file: the storage would save it under another name (``…_AbCd123.json``)
        # that nothing points at and that a deletion never removes.
        if not storage.exists(cache):
            body = ContentFile(json.dumps(peaks, separators=(",", ":")).encode())
            saved = storage.save(cache, body)
            if saved != cache:  # the other one saved between the check and our save
                storage.delete(saved)
    except Exception:  # noqa: BLE001 - a cache that cannot be written is recomputed next time
        logger.warning("could not cache the waveform of call %s", call.pk, exc_info=True)
    return peaks


# --- serving byte ranges ------------------------------------------------------------------

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
# The most one 206 answers. Under ASGI Django reads a sync StreamingHttpResponse body
# into a list before sending it, so an open-ended ``bytes=0-`` (what a player asks first)
# would hold the rest of the file in memory; a shorter 206 is valid, and the player asks
# again from where it ends.
MAX_RANGE_BYTES = 1024 * 1024


def byte_range(header: str, size: int, *, limit: int | None = None) -> tuple[int, int] | None:
    """``(first, last)`` (inclusive) of a single-range ``Range`` header, at most ``limit``
    bytes; None for none, or one we do not serve or that is invalid (several ranges, or
    ``bytes=5-3``: RFC 9110 says to ignore it, and the whole file is the answer). Raises
    ``ValueError`` when the range cannot be satisfied (416)."""
    limit = MAX_RANGE_BYTES if limit is None else limit
    match = _RANGE.match(header.strip()) if header else None
    if match is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # the last N bytes
        length = int(last)
        if length == 0:
            raise ValueError("empty suffix range")
        start = max(0, size - length)
        if start >= size:  # an empty file has no last N bytes
            raise ValueError(f"range {header} of an empty file")
        return start, min(size - 1, start + limit - 1)
    start = int(first)
    if last and int(last) < start:  # invalid, not unsatisfiable: ignored
        return None
    if start >= size:
        raise ValueError(f"range {header} outside 0-{size - 1}")
    end = min(int(last), size - 1) if last else size - 1
    return start, min(end, start + limit - 1)


def read_range(fh: IO[bytes], first: int, last: int, block: int = 64 * 1024) -> Iterator[bytes]:
    """The bytes ``first..last`` of an open file, in blocks; closes it at the end."""
    try:
        fh.seek(first)
        remaining = last - first + 1
        while remaining > 0:
            data = fh.read(min(block, remaining))
            if not data:
                break
            remaining -= len(data)
            yield data
    finally:
        fh.close()
