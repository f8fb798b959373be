"""End to end in a real browser: Chromium's fake microphone plays espeak-ng speech into the
simulator page, served by a real daphne with the demo profile's offline engines.

Needs Debian's chromium (``apt-get install chromium``; ``PLAYWRIGHT_CHROMIUM`` overrides the
path), espeak-ng and sox. Timeouts are bounds so a broken engine fails the test instead of
hanging it; nothing asserts on speed.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.simulator.fake_socket import FAKE_SOCKET
from tests.speech import have_speech_tools, speech_wav

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = os.environ.get("PLAYWRIGHT_CHROMIUM", "/usr/bin/chromium")
SENTENCE = "Hello, I would like to book a table for two people tomorrow evening."
USERNAME, PASSWORD = "sim-e2e-admin", "sim-e2e-password-1"

# Bounds (seconds), generous for two shared CPU cores and cold model loads.
SERVER_START_S = 90
CALL_START_S = 120
USER_WORDS_S = 120
ASSISTANT_REPLY_S = 90
PLAYBACK_S = 60
CALL_END_S = 30

if not Path(CHROMIUM).exists():
    pytest.skip(f"{CHROMIUM} is missing: apt-get install -y chromium", allow_module_level=True)
if not have_speech_tools():
    pytest.skip("espeak-ng and sox are needed for the fake microphone", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")


@dataclass(slots=True)
class Server:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def log_tail(self, chars: int = 6000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def microphone_wav(directory: Path) -> Path:
    """The sentence then 6 s of silence, 48 kHz mono (Chromium loops the file)."""
    speech = speech_wav(SENTENCE, rate=48000)
    out = directory / "microphone.wav"
    with wave.open(str(speech), "rb") as src:
        frames = src.readframes(src.getnframes())
        params = src.getparams()
    with wave.open(str(out), "wb") as dst:
        dst.setparams(params)
        dst.writeframes(frames + b"\x00\x00" * params.framerate * 6)
    return out


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """daphne on a free port with a freshly migrated and seeded SQLite database."""
    workdir = tmp_path_factory.mktemp("simulator-e2e")
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "CELERY_BROKER_URL")}
    env.update(
        DJANGO_SETTINGS_MODULE="voiceapp.settings",
        DATABASE_URL=f"sqlite:///{workdir / 'e2e.sqlite3'}",
        DEBUG="true",
        DEMO_ADMIN_USERNAME=USERNAME,
        DEMO_ADMIN_PASSWORD=PASSWORD,
        SHUTDOWN_GRACE_SECONDS="2",
        PYTHONUNBUFFERED="1",
    )
    for command in (["migrate", "--noinput"], ["seed_demo"]):
        subprocess.run(
            [sys.executable, "manage.py", *command], cwd=ROOT, env=env, check=True,
            capture_output=True, timeout=300,
        )  # fmt: skip
    port = free_port()
    log = workdir / "daphne.log"
    daphne = shutil.which("daphne", path=str(Path(sys.executable).parent)) or "daphne"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [daphne, "-b", "127.0.0.1", "-p", str(port), "voiceapp.asgi:application"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    server = Server(url=f"http://127.0.0.1:{port}", process=process, log=log)
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"daphne exited with {process.returncode}:\n{server.log_tail()}")
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"{server.url}/health/", timeout=2) as response:
                    if response.status == 200:
                        break
            if time.monotonic() > deadline:
                pytest.fail(
                    f"daphne did not answer /health/ in {SERVER_START_S}s:\n{server.log_tail()}"
                )
            time.sleep(0.3)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@dataclass(slots=True)
class Tab:
    page: sync_api.Page
    console: list[str]


@contextlib.contextmanager
def open_tab(tmp_path: Path, *, grant_microphone: bool = True) -> Iterator[Tab]:
    """A fresh headless Chromium whose fake microphone plays the test sentence in a loop.

    Without ``grant_microphone`` the permission prompt is not auto-accepted, and headless
    Chromium answers it with a denial.
    """
    args = [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={microphone_wav(tmp_path)}",
    ]
    if grant_microphone:
        args.append("--use-fake-ui-for-media-stream")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=args, headless=True)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 860})
            context.set_default_timeout(30_000)
            tab = Tab(page=context.new_page(), console=[])
            tab.page.on("console", lambda m: tab.console.append(f"{m.type}: {m.text}"))
            tab.page.on("pageerror", lambda e: tab.console.append(f"pageerror: {e}"))
            yield tab
        finally:
            browser.close()


@pytest.fixture
def tab(tmp_path: Path) -> Iterator[Tab]:
    with open_tab(tmp_path) as tab:
        yield tab


def log_in_to_simulator(tab: Tab, server: Server) -> None:
    page = tab.page
    page.goto(f"{server.url}/simulator/")
    assert "/admin/login/" in page.url, "anonymous users are sent to the admin login"
    page.fill("#id_username", USERNAME)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(re.compile(r"/simulator/$"))


def wait_for(tab: Tab, server: Server, what: str, expression: str, timeout_s: int) -> None:
    """Wait for a JS predicate; on timeout fail with everything needed to see why."""
    page = tab.page
    try:
        page.wait_for_function(expression, timeout=timeout_s * 1000, polling=250)
    except sync_api.TimeoutError:
        stats = page.evaluate("JSON.stringify(window.simulatorStats, null, 1)")
        notice = page.locator("#message")
        message = notice.inner_text() if notice.is_visible() else ""
        console = "\n".join(tab.console[-30:])
        pytest.fail(
            f"timed out after {timeout_s}s waiting for {what}\n"
            f"page message: {message!r}\nsimulatorStats: {stats}\nconsole:\n{console}\n"
            f"daphne log tail:\n{server.log_tail()}"
        )


def test_a_call_from_the_browser_is_heard_answered_and_stored(server: Server, tab: Tab) -> None:
    page = tab.page
    log_in_to_simulator(tab, server)
    assert page.locator("#profile").input_value() == "demo"
    assert page.locator("#channel").input_value() == "browser"

    page.click("#start")
    started = "window.simulatorStats.callId !== null"
    wait_for(tab, server, "the call to start", started, CALL_START_S)
    call_id = page.evaluate("window.simulatorStats.callId")

    # The user's sentence comes back as a final transcript (Whisper may garble a word or two).
    user_said = """() => window.simulatorStats.transcript.some(t => t.role === 'user' && t.final
        && /table/i.test(t.text) && /(book|two|people|tomorrow|evening)/i.test(t.text))"""
    wait_for(tab, server, "the user's words in the transcript", user_said, USER_WORDS_S)

    # Then the agent answers it (the greeting comes before the user's turn and does not count).
    answered = """() => {
        const t = window.simulatorStats.transcript;
        const u = t.findIndex(e => e.role === 'user' && /table/i.test(e.text));
        return u >= 0
            && t.slice(u + 1).some(e => e.role === 'assistant' && e.text.trim().length > 0);
    }"""
    wait_for(tab, server, "an assistant reply after the user's turn", answered, ASSISTANT_REPLY_S)
    played = "window.simulatorStats.playedSamples > 0"
    wait_for(tab, server, "agent audio to be played", played, PLAYBACK_S)

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "simulator-mid-call.png"), full_page=True)
    stats = page.evaluate("window.simulatorStats")
    assert stats["sentFrames"] > 0 and stats["receivedAudioFrames"] > 0
    assert stats["sampleRate"] == 16000
    assert page.locator(".bubble-user").count() >= 1
    assert page.locator(".bubble-assistant").count() >= 1

    page.click("#stop")
    wait_for(tab, server, "the call to end", "window.simulatorStats.status === 'ended'", CALL_END_S)
    assert page.evaluate("window.simulatorStats.endedReason") == "caller_hangup"
    link = page.locator("#call-admin-link")
    assert link.get_attribute("href") == f"/admin/calls/call/{call_id}/change/"

    page.goto(f"{server.url}/admin/calls/call/")
    assert f"/admin/calls/call/{call_id}/change/" in page.content(), "the call is in the admin list"
    link_page = page.goto(f"{server.url}/admin/calls/call/{call_id}/change/")
    assert link_page is not None and link_page.status == 200
    assert re.search(r"table", page.content(), re.IGNORECASE), "the stored transcript has the turn"


def test_it_explains_a_denied_microphone(server: Server, tmp_path: Path) -> None:
    with open_tab(tmp_path, grant_microphone=False) as tab:
        log_in_to_simulator(tab, server)
        tab.page.click("#start")
        wait_for(tab, server, "the permission error", "window.simulatorStats.errors.length > 0", 30)
        assert "Microphone permission denied" in tab.page.locator("#message").inner_text()
        assert tab.page.evaluate("window.simulatorStats.status") == "idle"
        assert tab.page.locator("#start").is_enabled(), "the user can try again"


def test_it_explains_why_the_server_closed_the_socket(server: Server, tab: Tab) -> None:
    log_in_to_simulator(tab, server)
    # A profile deleted after the page was loaded: the server closes with 4404.
    tab.page.evaluate(
        """() => { const o = new Option("Gone", "gone-profile", true, true);
                   document.getElementById("profile").append(o); }"""
    )
    tab.page.click("#start")
    wait_for(tab, server, "the socket to close", "window.simulatorStats.status === 'ended'", 60)
    assert tab.page.evaluate("window.simulatorStats.closeCode") == 4404
    message = tab.page.locator("#message").inner_text()
    assert "profile does not exist" in message and "gone-profile" in message


# Runs static/simulator/worklets.js in Chromium's JS engine with the worklet globals stubbed,
# on known tones: what the ear and the STT get must be the input, at the right rate.
WORKLET_HARNESS = """
([source, ctxRate, sourceRate]) => {
  const load = () => {
    const procs = {};
    class Processor {
      constructor() { this.port = { posted: [], postMessage(m) { this.posted.push(m); } }; }
    }
    new Function("AudioWorkletProcessor", "registerProcessor", "sampleRate", source)(
      Processor, (name, cls) => { procs[name] = cls; }, ctxRate);
    return procs;
  };
  const tone = (f, rate, n) =>
    Float32Array.from({ length: n }, (_, i) => 0.5 * Math.sin(2 * Math.PI * f * i / rate));
  const amplitude = (x, f, rate) => {  // one DFT bin, skipping the filters' settling
    let re = 0, im = 0; const s = Math.floor(x.length / 10);
    for (let i = s; i < x.length; i++) {
      re += x[i] * Math.cos(2 * Math.PI * f * i / rate);
      im += x[i] * Math.sin(2 * Math.PI * f * i / rate);
    }
    return 2 * Math.hypot(re, im) / (x.length - s);
  };
  const capture = (f) => {
    const options = { processorOptions: { targetRate: 16000, frameMs: 20 } };
    const p = new (load()["pcm16-capture"])(options);
    const input = tone(f, ctxRate, ctxRate);  // one second
    for (let i = 0; i < input.length; i += 128) p.process([[input.subarray(i, i + 128)]]);
    const frames = p.port.posted.map((m) => new Int16Array(m.pcm));
    const x = Float32Array.from(frames.flatMap((a) => Array.from(a)), (v) => v / 32768);
    return { frameSizes: [...new Set(frames.map((a) => a.length))], samples: x.length, x };
  };
  const speech = capture(1000), above = capture(12000);
  const p = new (load()["pcm16-playback"])({ processorOptions: { sourceRate, prebufferMs: 60 } });
  const agent = tone(1000, sourceRate, sourceRate);  // one second, sent as 20 ms frames
  for (let i = 0; i < agent.length; i += sourceRate / 50) {
    const frame = agent.subarray(i, i + sourceRate / 50);
    const pcm = Int16Array.from(frame, (v) => Math.round(v * 32767));
    p.onMessage({ type: "audio", pcm: pcm.buffer });
  }
  const out = [];
  for (let k = 0; k < Math.ceil(1.2 * ctxRate / 128); k++) {
    const o = [new Float32Array(128)]; p.process([], [o]); out.push(...o[0]);
  }
  p.onMessage({ type: "audio", pcm: new Int16Array(sourceRate / 10).fill(1000).buffer });
  p.onMessage({ type: "clear" });
  return {
    captureFrameSizes: speech.frameSizes, captureSamples: speech.samples,
    capture1k: amplitude(speech.x, 1000, 16000), alias12k: amplitude(above.x, 4000, 16000),
    played: p.played,
    playback1k: amplitude(Float32Array.from(out).subarray(0, ctxRate), 1000, ctxRate),
    cleared: p.port.posted.at(-1),
  };
}
"""


@pytest.mark.parametrize(("ctx_rate", "source_rate"), [(48000, 16000), (44100, 8000)])
def test_the_worklets_resample_without_loss_or_aliasing(
    tmp_path: Path, ctx_rate: int, source_rate: int
) -> None:
    source = (ROOT / "static" / "simulator" / "worklets.js").read_text()
    with open_tab(tmp_path) as tab:
        r = tab.page.evaluate(WORKLET_HARNESS, [source, ctx_rate, source_rate])
    assert r["captureFrameSizes"] == [320], "20 ms frames of 16 kHz"
    assert r["captureSamples"] == 16000, "one second in, one second out"
    assert r["capture1k"] == pytest.approx(0.5, abs=0.02)
    assert r["alias12k"] < 0.05, "a 12 kHz tone must not fold back into the speech band"
    assert r["played"] == pytest.approx(ctx_rate, abs=8), "every agent sample is played"
    assert r["playback1k"] == pytest.approx(0.5, abs=0.04)
    assert r["cleared"] == {"type": "cleared", "dropped": ctx_rate // 10, "played": r["played"]}




def test_the_page_shows_partials_overlaps_and_the_end_of_turn_decision(
    server: Server, tab: Tab
) -> None:
    page = tab.page
    page.add_init_script(FAKE_SOCKET)
    log_in_to_simulator(tab, server)
    page.click("#start")
    wait_for(tab, server, "the start message", "window.__sockets[0]?.sent.length > 0", 30)

    def push(message: dict) -> None:
        page.evaluate("(m) => window.__sockets[0].push(m)", message)

    push({"type": "started", "call_id": "c-1", "profile": "demo", "channel": "browser",
          "sample_rate": 16000})  # fmt: skip
    push({"type": "transcript", "role": "assistant", "text": "Hello, this is Casa Lola.",
          "final": False})  # fmt: skip

    # The caller's words in progress: a greyed bubble, replaced by the final one.
    push({"type": "transcript", "role": "user", "text": "Mm", "final": False})
    assert page.locator(".bubble-user.partial").inner_text().endswith("Mm")
    # ... which turn out to be a backchannel: the agent resumes, no user turn is kept.
    push({"type": "clear"})
    push({"type": "overlap", "outcome": "backchannel", "text": "mm-hmm", "quiet_ms": 180.4})
    note = page.locator(".overlap-backchannel")
    assert note.inner_text() == "↺ backchannel “mm-hmm” — agent resumed · quiet in 180 ms"
    assert page.locator(".bubble-user").count() == 0
    assert page.locator(".bubble-assistant.interrupted").count() == 0

    push({"type": "transcript", "role": "assistant", "text": "Hello, this is Casa Lola. How "
          "can I help you?", "final": True})  # fmt: skip
    push({"type": "transcript", "role": "assistant", "text": "For how many people?",
          "final": False})  # fmt: skip
    push({"type": "transcript", "role": "user", "text": "Wait, actually", "final": False})
    push({"type": "clear"})
    push({"type": "overlap", "outcome": "interruption", "text": "Wait, actually",
          "quiet_ms": None})  # fmt: skip
    push({"type": "transcript", "role": "assistant", "text": "For how", "final": True,
          "interrupted": True})  # fmt: skip
    push({"type": "transcript", "role": "user", "text": "Wait, actually I need a table for four.",
          "final": True})  # fmt: skip
    push({"type": "transcript", "role": "assistant", "text": "A table for four, sure.",
          "final": True})  # fmt: skip
    push({"type": "metrics", "eot_reason": "model", "eot_score": 0.934, "eot_wait_ms": 270.4,
          "stt_ms": 120, "voice_to_voice_ms": 980})  # fmt: skip

    assert page.locator(".overlap-interruption").inner_text() == "✂ interrupted — agent stopped"
    user = page.locator(".bubble-user")
    assert user.count() == 1 and "partial" not in (user.get_attribute("class") or "")
    assert user.inner_text().endswith("Wait, actually I need a table for four.")
    assert page.locator(".bubble-assistant.interrupted").inner_text().count("For how") == 1
    reply = page.locator(".bubble-assistant").last
    assert reply.locator(".chip-eot").inner_text() == "End of turn: model 0.93 · 270 ms"
    assert page.locator("#overlap-counts").inner_text() == "1 backchannel · 1 interruption"
    stats = page.evaluate("window.simulatorStats")
    assert [o["outcome"] for o in stats["overlaps"]] == ["backchannel", "interruption"]
    assert [t["role"] for t in stats["transcript"]] == ["assistant", "assistant", "user",
                                                        "assistant"]  # fmt: skip
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "simulator-overlaps.png"), full_page=True)


def test_the_page_shows_tool_calls_and_a_transfer(server: Server, tab: Tab) -> None:
    page = tab.page
    page.add_init_script(FAKE_SOCKET)
    log_in_to_simulator(tab, server)
    page.click("#start")
    wait_for(tab, server, "the start message", "window.__sockets[0]?.sent.length > 0", 30)

    def push(message: dict) -> None:
        page.evaluate("(m) => window.__sockets[0].push(m)", message)

    push({"type": "started", "call_id": "c-2", "profile": "demo", "channel": "browser",
          "sample_rate": 16000})  # fmt: skip
    push({"type": "transcript", "role": "user", "text": "A table for four on Friday.",
          "final": True})  # fmt: skip
    # The reply says "Let me check." while its tool runs: the card goes before it.
    push({"type": "transcript", "role": "assistant", "text": "Let me check.", "final": False})
    push({"type": "tool", "name": "book_table", "arguments": {"party_size": 4, "day": "Friday"},
          "status": "ok", "result": '{"booked":true,"ref":"A12"}',
          "latency_ms": 312.4})  # fmt: skip
    push({"type": "tool", "name": "check_menu", "arguments": {}, "status": "timeout",
          "result": "The tool did not answer within 5 s.", "latency_ms": 5003})  # fmt: skip
    push({"type": "transfer", "destination": "+34910000000"})

    cards = page.locator(".tool-call")
    assert cards.count() == 2
    order = page.evaluate(
        "[...document.querySelectorAll('#transcript > *')].map((e) => e.className)"
    )
    last = [c.split()[0] for c in order[-4:]]
    assert last == ["tool-call", "tool-call", "bubble", "overlap-note"]
    first = cards.nth(0)
    assert first.locator("summary").inner_text() == (
        'Tool book_table(party_size: 4, day: "Friday") · ok · 312 ms'
    )
    assert not first.locator("pre").is_visible()  # the result opens on demand
    first.locator("summary").click()
    assert first.locator("pre").inner_text() == '{"booked":true,"ref":"A12"}'
    assert "tool-timeout" in (cards.nth(1).get_attribute("class") or "")
    assert page.locator(".tool-note").inner_text() == "Transferring the call to +34910000000…"
    stats = page.evaluate("window.simulatorStats")
    assert [t["name"] for t in stats["tools"]] == ["book_table", "check_menu"]
    assert stats["transfers"] == ["+34910000000"]
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "simulator-tools.png"), full_page=True)
