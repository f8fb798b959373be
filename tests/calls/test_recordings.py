"""Call recordings on the Django side: storing, serving to staff (byte ranges, waveform),
retention, deletion with the call, and what a crashed process left in the spool."""

from __future__ import annotations

import os
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from django.urls import reverse
from django.utils import timezone

from calls import recordings, services
from calls.models import Call, CallStatus
from calls.tasks import sweep_orphaned_calls
from orchestrator.recording import OggOpusWriter

pytest.importorskip("av")
pytestmark = pytest.mark.django_db

RATE = 16000


@pytest.fixture(autouse=True)
def recording_dirs(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.RECORDINGS_SPOOL_DIR = tmp_path / "spool"
    settings.RECORDING_RETENTION_DAYS = 0
    return settings


def spool_recording(call_id: object, *, seconds: float = 2.0, close: bool = True) -> Path:
    """A recording as the session leaves it: caller tone in the first half (left), agent
    tone in the second (right)."""
    path = recordings.spool_path(call_id)
    writer = OggOpusWriter(path)
    n = round(seconds * RATE)
    t = np.arange(n) / RATE
    stereo = np.zeros((n, 2), np.int16)
    stereo[: n // 2, 0] = (np.sin(2 * np.pi * 300 * t[: n // 2]) * 8000).astype(np.int16)
    stereo[n // 2 :, 1] = (np.sin(2 * np.pi * 500 * t[n // 2 :]) * 8000).astype(np.int16)
    for start in range(0, n, RATE):
        writer.write(stereo[start : start + RATE])
    if close:
        writer.close()
    return path


def ended_call(profile, **fields) -> Call:
    call = services.call_start(profile=profile, channel="twilio", **fields)
    services.call_end(call_id=call.pk, reason="caller_hangup")
    return Call.objects.get(pk=call.pk)


@pytest.fixture
def recorded_call(profile) -> Call:
    call = ended_call(profile)
    path = spool_recording(call.pk)
    assert services.call_recording_store(call_id=call.pk, spool_path=path, duration_s=2.0)
    return Call.objects.get(pk=call.pk)


def test_a_finished_recording_is_stored_under_its_day_and_leaves_the_spool(recorded_call):
    call = recorded_call
    assert call.recording.name == f"recordings/{call.started_at:%Y/%m/%d}/{call.pk}.ogg"
    assert call.recording_duration_s == 2.0
    assert call.recording_bytes == call.recording.storage.size(call.recording.name) > 0
    assert not recordings.spool_path(call.pk).exists()
    # Storing again (the sweeper after the runtime) keeps the first one.
    again = spool_recording(call.pk)
    assert not services.call_recording_store(call_id=call.pk, spool_path=again)
    assert not again.exists()


def test_staff_get_the_recording_with_byte_ranges_for_seeking(staff_client, recorded_call):
    url = reverse("calls:recording", args=[recorded_call.pk])
    assert url == f"/calls/{recorded_call.pk}/recording/"
    whole = staff_client.get(url)
    assert whole.status_code == 200 and whole["Content-Type"] == "audio/ogg"
    assert whole["Accept-Ranges"] == "bytes"
    data = b"".join(whole.streaming_content)
    assert data[:4] == b"OggS" and len(data) == recorded_call.recording_bytes

    part = staff_client.get(url, HTTP_RANGE="bytes=100-1099")
    assert part.status_code == 206
    assert part["Content-Range"] == f"bytes 100-1099/{len(data)}"
    assert part["Content-Length"] == "1000"
    assert b"".join(part.streaming_content) == data[100:1100]

    tail = staff_client.get(url, HTTP_RANGE="bytes=-10")
    assert tail.status_code == 206 and b"".join(tail.streaming_content) == data[-10:]
    assert staff_client.get(url, HTTP_RANGE=f"bytes={len(data)}-").status_code == 416


def test_only_staff_allowed_to_view_calls_get_a_recording(client, django_user_model, recorded_call):
    urls = [
        reverse(name, args=[recorded_call.pk])
        for name in ("calls:recording", "calls:recording_peaks")
    ]
    for url in urls:
        anonymous = client.get(url)
        assert anonymous.status_code == 302 and "/admin/login/" in anonymous["Location"]

    client.force_login(django_user_model.objects.create_user(username="caller", password="x"))
    for url in urls:
        assert client.get(url).status_code == 302  # not staff: to the admin's login

    clerk = django_user_model.objects.create_user(username="clerk", password="x", is_staff=True)
    client.force_login(clerk)
    for url in urls:
        assert client.get(url).status_code == 403  # staff, but not allowed to view calls


def test_a_call_without_recording_answers_404(staff_client, profile):
    call = ended_call(profile)
    assert staff_client.get(reverse("calls:recording", args=[call.pk])).status_code == 404


def test_peaks_json_has_both_channels_and_is_cached_next_to_the_file(staff_client, recorded_call):
    url = reverse("calls:recording_peaks", args=[recorded_call.pk])
    assert url == f"/calls/{recorded_call.pk}/recording/peaks.json"
    peaks = staff_client.get(url).json()
    assert peaks["peaks_per_s"] == recordings.PEAKS_PER_S
    assert peaks["duration_s"] == pytest.approx(2.0, abs=0.05)
    assert peaks["sample_rate"] > 0
    left, right = peaks["left"], peaks["right"]
    assert len(left) == len(right) == pytest.approx(2.0 * recordings.PEAKS_PER_S, abs=2)
    assert all(0.0 <= v <= 1.0 for v in left + right)
    half = len(left) // 2
    # The caller (left) in the first second, the agent (right) in the second.
    assert min(left[5 : half - 5]) > 0.1 and max(left[half + 5 :]) < 0.02
    assert min(right[half + 5 : -5]) > 0.1 and max(right[5 : half - 5]) < 0.02

    storage = recorded_call.recording.storage
    assert storage.exists(recordings.peaks_name(recorded_call.recording.name))
    assert staff_client.get(url).json() == peaks


def test_retention_deletes_recordings_older_than_the_setting(settings, profile):
    settings.RECORDING_RETENTION_DAYS = 7
    old, recent = ended_call(profile), ended_call(profile)
    Call.objects.filter(pk=old.pk).update(started_at=timezone.now() - timedelta(days=8))
    for call in (old, recent):
        call.refresh_from_db()
        services.call_recording_store(call_id=call.pk, spool_path=spool_recording(call.pk))
    old.refresh_from_db()
    recent.refresh_from_db()
    storage = old.recording.storage
    old_name = old.recording.name

    sweep_orphaned_calls()

    old.refresh_from_db()
    recent.refresh_from_db()
    assert not old.recording and old.recording_bytes is None
    assert not storage.exists(old_name)
    assert recent.recording and storage.exists(recent.recording.name)


def test_recordings_are_kept_when_retention_is_off(settings, recorded_call):
    Call.objects.filter(pk=recorded_call.pk).update(
        started_at=timezone.now() - timedelta(days=4000)
    )
    sweep_orphaned_calls()
    recorded_call.refresh_from_db()
    assert recorded_call.recording


def test_deleting_calls_deletes_their_recordings(
    staff_client, recorded_call, django_capture_on_commit_callbacks
):
    storage = recorded_call.recording.storage
    name = recorded_call.recording.name
    staff_client.get(reverse("calls:recording_peaks", args=[recorded_call.pk]))
    assert storage.exists(recordings.peaks_name(name))
    with django_capture_on_commit_callbacks(execute=True):
        Call.objects.filter(pk=recorded_call.pk).delete()  # as the admin's bulk delete does
    assert not storage.exists(name)
    assert not storage.exists(recordings.peaks_name(name))


def test_the_sweeper_stores_what_a_crashed_process_left_in_the_spool(settings, profile):
    settings.ORPHAN_AFTER_SECONDS = 90
    call = services.call_start(profile=profile, channel="twilio")
    stale = timezone.now() - timedelta(minutes=5)
    Call.objects.filter(pk=call.pk).update(started_at=stale, last_heartbeat_at=stale)
    path = spool_recording(call.pk, seconds=3.0, close=False)  # the process died mid-call
    old = time.time() - 300
    os.utime(path, (old, old))
    being_written = spool_recording(services.call_start(profile=profile, channel="twilio").pk)

    assert sweep_orphaned_calls() == [str(call.pk)]

    call.refresh_from_db()
    assert call.status == CallStatus.ENDED and call.recording
    assert 1.5 <= call.recording_duration_s <= 3.0  # up to the last page that reached disk
    assert not path.exists()
    assert being_written.exists()  # a live call's file (fresh, call open) is left alone


def test_retention_keeps_the_fields_of_a_recording_it_could_not_delete(
    settings, profile, monkeypatch, caplog
):
    settings.RECORDING_RETENTION_DAYS = 7
    call = ended_call(profile)
    Call.objects.filter(pk=call.pk).update(started_at=timezone.now() - timedelta(days=8))
    services.call_recording_store(call_id=call.pk, spool_path=spool_recording(call.pk))
    call.refresh_from_db()
    name = call.recording.name
    storage = call.recording.storage
    storage_class = type(storage)
    real_delete = storage_class.delete

    def failing_delete(self, path: str) -> None:
        raise OSError("storage unavailable")

    monkeypatch.setattr(storage_class, "delete", failing_delete)
    assert services.recordings_delete_expired(older_than=timedelta(days=7)) == 0
    call.refresh_from_db()
    assert call.recording.name == name  # still known: the next sweep retries
    assert any(r.levelname == "ERROR" and name in r.getMessage() for r in caplog.records)

    monkeypatch.setattr(storage_class, "delete", real_delete)
    assert services.recordings_delete_expired(older_than=timedelta(days=7)) == 1
    call.refresh_from_db()
    assert not call.recording and not storage.exists(name)


def test_the_sweeper_removes_a_spool_file_that_is_not_a_recording(profile):
    call = ended_call(profile)
    path = recordings.spool_path(call.pk)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")  # the process died before the first page reached disk
    assert not services.call_recording_store(call_id=call.pk, spool_path=path)
    assert not path.exists()


def test_the_sweeper_leaves_a_spool_file_it_could_not_read(profile, monkeypatch, caplog):
    call = ended_call(profile)
    path = spool_recording(call.pk, close=False)

    def broken_probe(path: Path) -> float:
        raise OSError(5, "Input/output error")  # the disk, not the file

    monkeypatch.setattr(recordings, "probe_duration", broken_probe)
    assert not services.call_recording_store(call_id=call.pk, spool_path=path)
    assert path.exists()
    assert any(r.levelname == "ERROR" for r in caplog.records)
    call.refresh_from_db()
    assert not call.recording

    monkeypatch.undo()  # the disk is back: the next sweep stores it
    assert services.call_recording_store(call_id=call.pk, spool_path=path)
    assert not path.exists()


@pytest.mark.parametrize(
    ("header", "span"),
    [
        ("", None),
        ("bytes=5-3", None),  # invalid: ignored, the whole file (RFC 9110)
        ("bytes=0-1,5-9", None),  # several ranges: not served, the whole file
        ("bytes=0-99", (0, 99)),
        ("bytes=10-", (10, 999)),
        ("bytes=-10", (990, 999)),
        ("bytes=900-5000", (900, 999)),
    ],
)
def test_byte_range_answers(header, span):
    assert recordings.byte_range(header, 1000) == span


@pytest.mark.parametrize("header", ["bytes=1000-", "bytes=1000-1200", "bytes=-0"])
def test_byte_range_outside_the_file_cannot_be_satisfied(header):
    with pytest.raises(ValueError):
        recordings.byte_range(header, 1000)


def test_byte_range_answers_at_most_the_limit_per_response():
    """An open-ended seek gets one bounded part (Django's ASGI handler holds a 206's body
    in memory); the player asks again from its end."""
    assert recordings.byte_range("bytes=0-", 10_000_000) == (0, recordings.MAX_RANGE_BYTES - 1)
    assert recordings.byte_range("bytes=-5000000", 10_000_000) == (
        5_000_000,
        5_000_000 + recordings.MAX_RANGE_BYTES - 1,
    )
    assert recordings.byte_range("bytes=100-", 1000, limit=300) == (100, 399)


def test_an_invalid_range_gets_the_whole_recording(staff_client, recorded_call):
    url = reverse("calls:recording", args=[recorded_call.pk])
    response = staff_client.get(url, HTTP_RANGE="bytes=5-3")
    assert response.status_code == 200
    assert len(b"".join(response.streaming_content)) == recorded_call.recording_bytes


def test_an_open_ended_range_is_answered_in_bounded_parts(
    staff_client, recorded_call, monkeypatch
):
    monkeypatch.setattr(recordings, "MAX_RANGE_BYTES", 1000)
    url = reverse("calls:recording", args=[recorded_call.pk])
    size = recorded_call.recording_bytes
    part = staff_client.get(url, HTTP_RANGE="bytes=0-")
    assert part.status_code == 206
    assert part["Content-Range"] == f"bytes 0-999/{size}" and part["Content-Length"] == "1000"
    assert len(b"".join(part.streaming_content)) == 1000


@pytest.mark.parametrize("blind_looks", [1, 2])
def test_two_first_waveform_requests_leave_one_cache_file(
    recorded_call, monkeypatch, blind_looks
):
    """The other request saved the cache after this one looked for it (once: before
    decoding; twice: also just before saving, the race inside the save): no second copy
    is left under another name."""
    storage = recorded_call.recording.storage
    cache = recordings.peaks_name(recorded_call.recording.name)
    first = recordings.recording_peaks(recorded_call)  # the other request, done
    assert storage.exists(cache)
    real_exists = type(storage).exists
    looked = 0

    def exists_before_the_other_saved(self, name: str) -> bool:
        nonlocal looked
        if name == cache and looked < blind_looks:  # this request's looks: not there yet
            looked += 1
            return False
        return real_exists(self, name)

    monkeypatch.setattr(type(storage), "exists", exists_before_the_other_saved)
    assert recordings.recording_peaks(recorded_call) == first
    folder = Path(storage.path(cache)).parent
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [Path(cache).name, Path(recorded_call.recording.name).name]
    )
