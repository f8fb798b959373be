"""The review page, the overview and the small things in a real Chromium (Playwright),
served by pytest-django's live server: the transcript chat with offsets and a tool card,
the recording playing and a turn's time seeking it, a live call refreshing itself, the
overview's numbers, `/`, the favicon, and Esc stopping a simulator call.

Screenshots go to ``test-artifacts/`` at the repository root (ignored by git); each test
prints the path of the ones it saved. Needs Debian's chromium (``PLAYWRIGHT_CHROMIUM``
overrides the path)."""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from calls import services
from tests.calls.review_calls import review_call
from tests.simulator.fake_socket import FAKE_SOCKET

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = os.environ.get("PLAYWRIGHT_CHROMIUM", "/usr/bin/chromium")
USERNAME, PASSWORD = "review-admin", "pw-review-12345"

if not Path(CHROMIUM).exists():
    pytest.skip(f"{CHROMIUM} is missing: apt-get install -y chromium", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")


@contextlib.contextmanager
def chromium(live_server, *, log_in: bool = True) -> Iterator[sync_api.Page]:
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--autoplay-policy=no-user-gesture-required",
                # The simulator page opens a microphone to start a call: a fake one, granted.
                "--use-fake-device-for-media-stream",
                "--use-fake-ui-for-media-stream",
            ],  # fmt: skip
        )
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(20_000)
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            if log_in:
                page.goto(f"{live_server.url}/admin/login/")
                page.fill("#id_username", USERNAME)
                page.fill("#id_password", PASSWORD)
                page.click("input[type=submit]")
                page.wait_for_url(f"{live_server.url}/admin/")
            yield page
            assert not errors, f"JavaScript errors: {errors}"
        finally:
            browser.close()


def off_the_loop(function: Callable[..., object], **kwargs: object) -> None:
    """Run a database write while Playwright's sync API holds this thread's event loop
    (Django refuses the ORM there): on a thread of its own, with its own connection."""

    def run() -> None:
        try:
            function(**kwargs)
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(run).result(timeout=30)


def screenshot(page: sync_api.Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")


@pytest.fixture
def admin_user(django_user_model):
    return django_user_model.objects.create_superuser(USERNAME, "", PASSWORD)


def test_the_call_page_shows_the_transcript_chat_with_offsets_and_a_tool_card(
    live_server, admin_user, profile
):
    call = review_call(profile)
    with chromium(live_server) as page:
        page.goto(live_server.url + reverse("admin:calls_call_change", args=[call.pk]))
        page.wait_for_selector("#transcript li.turn")
        screenshot(page, "call-review.png")
        times = page.locator("#transcript .turn-time").all_inner_texts()
        assert times == ["0:00", "0:03", "0:06", "0:06", "1:05", "1:07"]
        assert page.locator(".turn-user .bubble").first.inner_text().startswith("I would like")
        card = page.locator(".tool-card")
        assert card.count() == 1 and "book_table(" in card.inner_text()
        assert "212 ms" in card.inner_text()
        assert page.locator(".turn-interrupted .tag-interrupted").count() == 1
        widths = page.evaluate(
            """() => [...document.querySelectorAll('.waterfall')]
                .map(w => w.getBoundingClientRect().width)"""
        )
        assert len(widths) == 2 and widths[0] > widths[1] > 0, "one scale: 1300 ms > 1200 ms"
        # The transcript column and the figures beside it fit 1,280 px.
        assert page.evaluate("document.documentElement.scrollWidth") <= 1280
        page.emulate_media(color_scheme="dark")  # the admin's dark mode, its own colours
        screenshot(page, "call-review-dark.png")


def test_a_live_call_page_refreshes_its_transcript_until_the_call_ends(
    live_server, admin_user, profile
):
    call = review_call(profile, external_id="CA-live", end=False)
    with chromium(live_server) as page:
        page.goto(live_server.url + reverse("admin:calls_call_change", args=[call.pk]))
        assert page.locator(".live-dot").count() == 1
        at = timezone.now()
        off_the_loop(services.turn_record, call_id=call.pk, role="user",
                     text="One more thing, parking?", started_at=at, ended_at=at)  # fmt: skip
        page.wait_for_function(
            "document.getElementById('transcript').innerText.includes('parking?')",
            timeout=10_000, polling=250,
        )  # fmt: skip
        off_the_loop(services.call_end, call_id=call.pk, reason="caller_hangup")
        # The page loads once more for the final figures, then stops polling.
        page.wait_for_function(
            "document.querySelector('.review').dataset.live === '0'", timeout=10_000, polling=250
        )
        assert page.locator(".live-dot").count() == 0
        screenshot(page, "call-review-after-live.png")


@pytest.mark.parametrize(
    ("status", "content_type", "body"),
    [(403, "text/html", "<h1>403 Forbidden</h1>"), (200, "text/html", "<form>Log in</form>")],
)  # fmt: skip
def test_a_live_call_page_stops_polling_on_an_error_or_a_page_that_is_not_json(
    live_server, admin_user, profile, status, content_type, body
):
    """A 403/404 or a login page will not get better: one request, then no more (and no
    overlapping requests: the next is only scheduled once one is answered)."""
    call = review_call(profile, external_id=f"CA-stop-{status}", end=False)
    live_url = reverse("admin:calls_call_live", args=[call.pk])
    hits: list[str] = []

    def answer(route) -> None:  # type: ignore[no-untyped-def]
        hits.append(route.request.url)
        route.fulfill(status=status, content_type=content_type, body=body)

    with chromium(live_server) as page:
        page.route(f"**{live_url}*", answer)
        page.goto(live_server.url + reverse("admin:calls_call_change", args=[call.pk]))
        page.wait_for_function("window.reviewLiveTimer === null", timeout=10_000, polling=250)
        page.wait_for_timeout(4_500)  # two more 2 s ticks, were it still polling
        assert len(hits) == 1
        assert page.locator(".live-dot").count() == 1  # the page stays as it was


def _two_channel_opus(seconds: float, caller: list[float], agent: list[float]) -> bytes:
    """Ogg/Opus, 48 kHz stereo: a 300 Hz tone on the left from each ``caller`` offset and a
    600 Hz one on the right from each ``agent`` offset, 1.5 s each, silence between."""
    av = pytest.importorskip("av")
    np = pytest.importorskip("numpy")
    rate, frame = 48000, 960
    t = np.arange(int(seconds * rate)) / rate
    left = np.zeros_like(t)
    right = np.zeros_like(t)
    for start in caller:
        span = (t >= start) & (t < start + 1.5)
        left[span] = 0.4 * np.sin(2 * np.pi * 300 * t[span])
    for start in agent:
        span = (t >= start) & (t < start + 1.5)
        right[span] = 0.4 * np.sin(2 * np.pi * 600 * t[span])
    pcm = (np.stack([left, right], axis=1) * 32767).astype(np.int16)
    out = io.BytesIO()
    with av.open(out, "w", format="ogg") as container:
        stream = container.add_stream("libopus", rate=rate, layout="stereo")
        for i in range(0, len(pcm) - frame + 1, frame):
            chunk = av.AudioFrame.from_ndarray(pcm[i : i + frame].reshape(1, -1), format="s16",
                                               layout="stereo")  # fmt: skip
            chunk.sample_rate = rate
            chunk.pts = i
            for packet in stream.encode(chunk):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return out.getvalue()


def test_the_recording_plays_and_clicking_a_turn_seeks_there(
    live_server, admin_user, profile, tmp_path
):
    call = review_call(profile, external_id="CA-recorded")
    turns = list(call.turns.order_by("sequence"))
    offsets = {t.sequence: (t.started_at - call.started_at).total_seconds() for t in turns}
    audio = _two_channel_opus(
        75.0,
        caller=[offsets[t.sequence] for t in turns if t.role == "user"],
        agent=[offsets[t.sequence] for t in turns if t.role == "assistant"],
    )
    # Stored the way a call's own recording is: its spool file moved into the storage.
    spool = tmp_path / "spool.ogg"
    spool.write_bytes(audio)
    assert services.call_recording_store(call_id=call.pk, spool_path=spool)
    with chromium(live_server) as page:
        page.goto(live_server.url + reverse("admin:calls_call_change", args=[call.pk]))
        player = page.locator("audio.review-audio")
        assert player.count() == 1
        page.wait_for_function(
            "document.querySelector('audio.review-audio').readyState >= 1", timeout=15_000
        )
        assert "1:15" in page.locator(".review-summary").inner_text()  # the recording's length
        duration = page.evaluate("document.querySelector('audio.review-audio').duration")
        assert duration == pytest.approx(75.0, abs=0.5)
        # The caller's second turn, at 1:05: the player jumps there and plays.
        page.locator("#turn-5 .turn-time").click()
        page.wait_for_function(
            "document.querySelector('audio.review-audio').currentTime >= 65.0", timeout=10_000
        )
        now = page.evaluate("document.querySelector('audio.review-audio').currentTime")
        assert 65.0 <= now < 70.0
        page.wait_for_selector("#turn-5.playing")
        # The waveform was drawn from the peaks: the canvas is not blank.
        inked = page.evaluate(
            """() => { const c = document.querySelector('canvas.waveform');
                       const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                       let n = 0;
                       for (let i = 3; i < d.length; i += 4) if (d[i]) n++;
                       return n; }"""
        )
        assert inked > 1000
        screenshot(page, "call-review-playing.png")


def test_the_overview_renders_numbers_for_seeded_calls(live_server, admin_user, profile):
    review_call(profile, external_id="CA-one")
    failed = services.call_start(profile=profile, channel="browser")
    services.call_end(call_id=failed.pk, reason="error", error="llm down")
    with chromium(live_server) as page:
        page.goto(f"{live_server.url}/admin/")
        page.click("text=Calls overview")
        page.wait_for_selector("#kpi-calls")
        screenshot(page, "calls-overview.png")
        assert page.locator("#kpi-calls").inner_text() == "2"
        assert page.locator("#kpi-errors").inner_text() == "50.0 %"
        latency = page.locator("#latency").inner_text()
        assert "Demo receptionist" in latency and "twilio" in latency and "1300 ms" in latency
        assert "book table" in page.locator("#intents").inner_text()
        bars = page.locator("#calls-per-day .bar")
        assert bars.count() == 14
        assert page.evaluate("document.documentElement.scrollWidth") <= 1280


def test_the_root_redirects_to_the_admin_and_the_favicon_answers(live_server, admin_user):
    with chromium(live_server, log_in=False) as page:
        page.goto(f"{live_server.url}/")
        assert page.url.startswith(f"{live_server.url}/admin/login/")
        icon = page.request.get(f"{live_server.url}/favicon.ico")
        assert icon.ok and icon.body()[:4] == b"\x00\x00\x01\x00", "an .ico file"
        link = page.locator("link[rel=icon]").get_attribute("href")
        assert page.request.get(live_server.url + link).ok


def test_esc_stops_the_simulator_call_and_focus_stays_on_stop(live_server, admin_user, profile):
    with chromium(live_server) as page:
        page.add_init_script(FAKE_SOCKET)
        page.goto(f"{live_server.url}/simulator/")
        page.focus("#start")
        page.keyboard.press("Enter")
        page.wait_for_function("window.__sockets && window.__sockets[0]?.sent.length > 0")
        page.evaluate(
            """() => window.__sockets[0].push({type: "started", call_id: "c-1",
                 profile: "demo", channel: "browser", sample_rate: 16000})"""
        )
        page.wait_for_function("window.simulatorStats.status === 'live'")
        assert page.evaluate("document.activeElement.id") == "stop"
        page.keyboard.press("Escape")
        page.wait_for_function(
            "window.__sockets[0].sent.some(m => m && m.event === 'stop')", timeout=5_000
        )
        assert page.evaluate("window.simulatorStats.status") in ("ending", "ended")
        screenshot(page, "simulator-esc.png")


def test_clearing_the_global_stop_asks_first(live_server, admin_user):
    from calls import global_stop

    for _ in range(3):
        global_stop.report_critical_error(reason="tts down", channel="twilio")
    asked: list[str] = []
    with chromium(live_server) as page:
        page.goto(f"{live_server.url}/admin/global-stop/")
        screenshot(page, "global-stop.png")
        page.once("dialog", lambda dialog: (asked.append(dialog.message), dialog.dismiss()))
        page.click("#global-stop-reset input[type=submit]")
        assert "globally stopped" in page.content(), "dismissed: nothing happened"
        page.once("dialog", lambda dialog: (asked.append(dialog.message), dialog.accept()))
        page.click("#global-stop-reset input[type=submit]")
        page.wait_for_selector("text=Calls resumed.")
    assert asked == ["Resume calls? New calls will be accepted again on every server."] * 2
    assert global_stop.calls_allowed()
