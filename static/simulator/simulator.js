// Call simulator page: microphone -> WebSocket -> agent, agent audio -> speakers.
//
// Protocol (simulator/consumers.py):
//   client -> server  {"event":"start","profile","channel","audio":"binary"}, binary PCM16 16 kHz
//                     frames (20 ms), {"event":"stop"}
//   server -> client  binary PCM16 at the "started" sample_rate, and JSON messages typed
//                     started, transcript, state, metrics, overlap, clear, ended, error.
// Test hooks: window.simulatorStats (see `stats` below).

const config = JSON.parse(document.getElementById("simulator-config").textContent);

const CAPTURE_RATE = 16000;
const STOP_GRACE_MS = 5000; // after "stop", close the socket ourselves if the server has not

const CLOSE_CODES = {
  4400: "The server rejected the start message.",
  4401: "You are not logged in (or your session expired). Log in to the admin and reload.",
  4403: "Staff access is required to use the simulator.",
  4404: "The selected profile does not exist or is not active.",
  4408: "The call did not start in time. Try again.",
  4413: "An audio frame was too large.",
  4429: "Audio was sent much faster than real time; the call was cut off.",
  4500: "The call failed with an engine error.",
  4503: "Calls are unavailable: globally stopped after repeated errors (an operator must reset them in the admin), or the server is busy.",
};

const END_REASONS = {
  caller_hangup: "You ended the call.",
  agent_hangup: "The agent ended the call.",
  idle_timeout: "The call ended after a long silence (idle timeout).",
  max_duration: "The call reached its maximum duration.",
  error: "The call ended because of an error.",
  global_stop: "The call was ended by a global stop of all calls.",
  server_shutdown: "The server is restarting; the call was ended.",
  not_connected: "The call could not be connected.",
  busy: "All lines were busy (the server is at capacity).",
  transferred: "The agent transferred the call to a person (a phone call would now ring them).",
  voicemail: "An answering machine took the call.",
};

const AGENT_STATES = new Set(["listening", "thinking", "speaking"]);

const $ = (id) => document.getElementById(id);
const ui = {
  profile: $("profile"),
  channel: $("channel"),
  start: $("start"),
  stop: $("stop"),
  mute: $("mute"),
  callStatus: $("call-status"),
  agentState: $("agent-state"),
  micLevel: $("mic-level"),
  message: $("message"),
  callLink: $("call-link"),
  transcript: $("transcript"),
  overlaps: $("overlap-counts"),
};

// Read by the browser test; updated as things happen.
const stats = {
  status: "idle", // idle | connecting | live | ending | ended
  callId: null,
  sampleRate: null,
  sentFrames: 0,
  receivedAudioFrames: 0,
  playedSamples: 0, // context-rate samples the playback worklet actually output
  agentState: "idle",
  transcript: [], // {role, text, final, interrupted}
  metrics: [], // every metrics message, in order
  overlaps: [], // every overlap message, in order: {outcome, text, quiet_ms}
  tools: [], // every tool message: {name, arguments, status, result, latency_ms}
  transfers: [], // destinations the agent transferred the call to
  backchannels: 0, // overlaps the agent resumed after
  interruptions: 0, // overlaps that cut the agent off
  endedReason: null,
  errors: [], // error messages from the server and the page
  closeCode: null,
};
window.simulatorStats = stats;

let call = null; // the current call's resources (see startCall)

// ---------------------------------------------------------------------------------------------
// UI helpers

function showMessage(text, kind = "info") {
  ui.message.textContent = text;
  ui.message.className = `notice notice-${kind}`;
  ui.message.hidden = !text;
}

function setStatus(status, label) {
  const previous = stats.status;
  stats.status = status;
  ui.callStatus.textContent = label;
  const active = status === "connecting" || status === "live" || status === "ending";
  ui.start.disabled = active || config.callsStopped || ui.profile.options.length === 0;
  ui.stop.disabled = !(status === "connecting" || status === "live");
  ui.mute.disabled = status !== "live";
  ui.profile.disabled = active;
  ui.channel.disabled = active;
  document.body.dataset.callStatus = status;
  if (status !== previous) keepFocus(); // not on page load: nothing was pressed yet
}

// Keyboard users: pressing Start disables it, which would drop focus to the page. During
// a call focus sits on Stop (Enter or Space ends the call; so does Esc, anywhere); after
// it, back on Start. Focus the user put elsewhere (Mute, a link) is left alone.
function keepFocus() {
  const focused = document.activeElement;
  const lost = !focused || focused === document.body || focused.disabled;
  if (!ui.stop.disabled && (lost || focused === ui.start)) ui.stop.focus();
  else if (ui.stop.disabled && !ui.start.disabled && (lost || focused === ui.stop)) ui.start.focus();
}

function setAgentState(state) {
  stats.agentState = state;
  ui.agentState.textContent = state;
  ui.agentState.className = `state state-${state}`;
}

function setMicLevel(level) {
  // Speech RMS is ~0.01-0.3: show it on a log-ish scale.
  const pct = level > 0 ? Math.max(0, Math.min(100, (Math.log10(level) + 3) * 40)) : 0;
  ui.micLevel.style.width = `${pct}%`;
}

function callUrl(callId) {
  return config.callUrlTemplate.replace(config.callIdPlaceholder, callId);
}

function showCallLink(callId) {
  ui.callLink.replaceChildren();
  if (!callId) {
    ui.callLink.hidden = true;
    return;
  }
  const a = document.createElement("a");
  a.href = callUrl(callId);
  a.id = "call-admin-link";
  a.textContent = "Open the stored call in the admin →";
  ui.callLink.append(a);
  ui.callLink.hidden = false;
}

// ---------------------------------------------------------------------------------------------
// Transcript: one bubble per turn. Partials update the open bubble of their role; a final
// closes it. Interrupted assistant turns are marked.

const bubbles = []; // {entry, el, textEl, metricsEl}

function clearTranscript() {
  bubbles.length = 0;
  stats.transcript = [];
  stats.metrics = [];
  stats.overlaps = [];
  stats.backchannels = 0;
  stats.interruptions = 0;
  ui.transcript.replaceChildren();
  renderOverlapCounts();
}

function openBubble(role) {
  for (let i = bubbles.length - 1; i >= 0; i--) {
    const b = bubbles[i];
    if (b.entry.role === role && !b.entry.final) return b;
  }
  return null;
}

function lastBubble(role) {
  for (let i = bubbles.length - 1; i >= 0; i--) if (bubbles[i].entry.role === role) return bubbles[i];
  return null;
}

function addBubble(role, text, final) {
  const empty = ui.transcript.querySelector(".empty");
  if (empty) empty.remove();
  const entry = { role, text, final, interrupted: false };
  const el = document.createElement("li");
  el.className = `bubble bubble-${role}`;
  const who = document.createElement("span");
  who.className = "who";
  who.textContent = role === "user" ? "You" : role === "assistant" ? "Agent" : role;
  const textEl = document.createElement("p");
  textEl.className = "text";
  el.append(who, textEl);
  ui.transcript.append(el);
  const bubble = { entry, el, textEl, metricsEl: null };
  bubbles.push(bubble);
  stats.transcript.push(entry);
  renderBubble(bubble);
  return bubble;
}

function renderBubble(b) {
  b.textEl.textContent = b.entry.text || "…";
  b.el.classList.toggle("partial", !b.entry.final);
  b.el.classList.toggle("interrupted", b.entry.interrupted);
  b.el.title = b.entry.interrupted ? "Interrupted by the caller" : "";
  ui.transcript.scrollTop = ui.transcript.scrollHeight;
}

function onTranscript(msg) {
  const role = msg.role || "assistant";
  const text = typeof msg.text === "string" ? msg.text : "";
  // Finals by default; partials say final:false (or is_final:false / partial:true).
  const final = msg.final ?? msg.is_final ?? (msg.partial === undefined ? true : !msg.partial);
  let b = openBubble(role);
  if (!b) {
    if (!text && !msg.interrupted) return;
    b = addBubble(role, text, final);
  } else {
    // A final is the whole turn (an interrupted one keeps only what was heard); a partial
    // without text keeps what the bubble shows.
    b.entry.text = final ? text : text || b.entry.text;
    b.entry.final = final;
  }
  if (msg.interrupted) b.entry.interrupted = true;
  renderBubble(b);
}

function forgetBubble(b) { // its element is replaced or removed by the caller
  bubbles.splice(bubbles.indexOf(b), 1);
  stats.transcript.splice(stats.transcript.indexOf(b.entry), 1);
}

function markInterrupted() {
  const b = lastBubble("assistant");
  if (!b || b.entry.interrupted) return;
  b.entry.interrupted = true;
  renderBubble(b);
}

// ---------------------------------------------------------------------------------------------
// Overlaps: the caller spoke over the agent, which paused at once. A backchannel ("mm-hmm")
// lets it resume and stores no turn, so the caller's in-progress bubble gives way to a note;
// an interruption cuts the agent off and the caller's words become their next turn.

function overlapNote(msg) {
  const li = document.createElement("li");
  li.className = `overlap-note overlap-${msg.outcome}`;
  const heard = typeof msg.text === "string" ? msg.text.trim() : "";
  let text = msg.outcome === "backchannel"
    ? `↺ backchannel${heard ? ` “${heard}”` : ""} — agent resumed`
    : "✂ interrupted — agent stopped";
  const quiet = Number(msg.quiet_ms);
  if (msg.quiet_ms !== null && msg.quiet_ms !== undefined && Number.isFinite(quiet)) {
    text += ` · quiet in ${Math.round(quiet)} ms`;
  }
  li.textContent = text;
  li.title = msg.outcome === "backchannel"
    ? "You spoke over the agent with an acknowledgement: it paused, then carried on where it stopped. No turn is stored."
    : "You spoke over the agent: its reply was cancelled and what you said is your next turn.";
  return li;
}

function onOverlap(msg) {
  if (msg.outcome !== "backchannel" && msg.outcome !== "interruption") return;
  stats.overlaps.push({ outcome: msg.outcome, text: msg.text ?? "", quiet_ms: msg.quiet_ms ?? null });
  const note = overlapNote(msg);
  const open = openBubble("user"); // the caller's words over the agent, still in progress
  if (msg.outcome === "backchannel") {
    stats.backchannels += 1;
    if (open) {
      open.el.replaceWith(note);
      forgetBubble(open);
    } else {
      ui.transcript.append(note);
    }
  } else {
    stats.interruptions += 1;
    markInterrupted();
    if (open) open.el.before(note);
    else ui.transcript.append(note);
  }
  const empty = ui.transcript.querySelector(".empty");
  if (empty) empty.remove();
  renderOverlapCounts();
  ui.transcript.scrollTop = ui.transcript.scrollHeight;
}

function appendNote(text, className) {
  const note = document.createElement("div");
  note.className = `overlap-note ${className}`;
  note.textContent = text;
  ui.transcript.querySelector(".empty")?.remove();
  ui.transcript.append(note);
  ui.transcript.scrollTop = ui.transcript.scrollHeight;
  return note;
}

// A tool the agent called: name, arguments, status and latency; the result on demand.
function onTool(msg) {
  const entry = {
    name: msg.name || "?",
    arguments: msg.arguments ?? {},
    status: msg.status || "",
    result: msg.result ?? "",
    latency_ms: msg.latency_ms ?? null,
  };
  stats.tools.push(entry);
  const args = typeof entry.arguments === "string"
    ? entry.arguments
    : Object.entries(entry.arguments).map(([k, v]) => `${k}: ${JSON.stringify(v)}`).join(", ");
  const card = document.createElement("details");
  card.className = `tool-call tool-${entry.status}`;
  const summary = document.createElement("summary");
  const latency = entry.latency_ms == null ? "" : ` · ${Math.round(entry.latency_ms)} ms`;
  summary.textContent = `Tool ${entry.name}(${args}) · ${entry.status}${latency}`;
  const result = document.createElement("pre");
  result.textContent = entry.result;
  card.append(summary, result);
  ui.transcript.querySelector(".empty")?.remove();
  // The reply that called it may already be speaking ("Let me check."): the call goes
  // before it, as in the stored transcript (caller, tool, agent).
  const speaking = openBubble("assistant");
  if (speaking) speaking.el.before(card);
  else ui.transcript.append(card);
  ui.transcript.scrollTop = ui.transcript.scrollHeight;
}

function renderOverlapCounts() {
  const b = stats.backchannels;
  const i = stats.interruptions;
  ui.overlaps.textContent = `${b} backchannel${b === 1 ? "" : "s"} · ${i} interruption${i === 1 ? "" : "s"}`;
}

// Why the caller's turn was taken as finished (eot_reason in a metrics message).
const EOT_REASONS = {
  model: "model",
  words: "words",
  transcript: "finished words",
  max_silence: "longest wait",
  silence_timer: "silence timer",
  no_model: "no model",
  dtmf: "keypad",
};

function endOfTurnChip(msg) {
  const reason = msg.eot_reason;
  const score = msg.eot_score;
  const wait = msg.eot_wait_ms;
  const has = (v) => v !== null && v !== undefined;
  if (!has(reason) && !has(score) && !has(wait)) return null;
  const parts = [];
  const label = EOT_REASONS[reason] ?? (has(reason) ? String(reason) : "");
  if (!has(score)) parts.push(label);
  else if (reason === "model") parts.push(`${label} ${Number(score).toFixed(2)}`);
  else parts.push(`${label} (model ${Number(score).toFixed(2)})`.trim());
  if (has(wait)) parts.push(`${Math.round(Number(wait))} ms`);
  const chip = document.createElement("span");
  chip.className = "chip chip-eot";
  chip.textContent = `End of turn: ${parts.filter(Boolean).join(" · ")}`;
  chip.title = "What decided you were done (turn model, your last words, the longest wait, "
    + "the silence timer or a keypad digit), the turn model's score, and how long after "
    + "you stopped speaking.";
  return chip;
}

const METRIC_LABELS = [
  ["stt_ms", "STT"],
  ["llm_ttft_ms", "LLM first token"],
  ["tts_ttfb_ms", "TTS first byte"],
  ["voice_to_voice_ms", "Voice-to-voice"],
];

function onMetrics(msg) {
  stats.metrics.push(msg);
  const chips = document.createElement("div");
  chips.className = "chips";
  const eot = endOfTurnChip(msg);
  if (eot) chips.append(eot);
  for (const [key, label] of METRIC_LABELS) {
    const value = msg[key];
    if (value === null || value === undefined) continue;
    const chip = document.createElement("span");
    chip.className = `chip chip-${key.replace(/_ms$/, "").replaceAll("_", "-")}`;
    chip.textContent = `${label} ${Math.round(Number(value))} ms`;
    chips.append(chip);
  }
  if (!chips.childElementCount) return;
  // Attach to the agent turn the figures belong to; a new line when it already has some.
  const b = lastBubble("assistant");
  if (b && !b.metricsEl) {
    b.metricsEl = chips;
    b.el.append(chips);
  } else {
    const li = document.createElement("li");
    li.className = "metrics-row";
    li.append(chips);
    ui.transcript.append(li);
  }
  ui.transcript.scrollTop = ui.transcript.scrollHeight;
}

// ---------------------------------------------------------------------------------------------
// Audio

class UserError extends Error {} // a failure whose message is meant for the user as is

function micErrorMessage(err) {
  switch (err && err.name) {
    case "NotAllowedError":
    case "SecurityError":
      return "Microphone permission denied. Allow the microphone for this site (padlock icon in the address bar) and try again.";
    case "NotFoundError":
    case "OverconstrainedError":
      return "No microphone found. Connect one and try again.";
    case "NotReadableError":
    case "AbortError":
      return "The microphone is busy or unavailable (another application may be using it).";
    default:
      return `Could not open the microphone: ${err && err.message ? err.message : err}`;
  }
}

async function openAudio() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    throw new UserError("This page needs a secure context (HTTPS or localhost) to use the microphone.");
  }
  if (typeof AudioWorkletNode === "undefined") {
    throw new UserError("This browser does not support AudioWorklet; use a current Chrome, Edge or Firefox.");
  }
  // Created in the click handler (a user gesture), so it may start; default device rate.
  const ctx = new AudioContext({ latencyHint: "interactive" });
  let stream;
  try {
    await ctx.audioWorklet.addModule(config.worklets);
    try {
      stream = await navigator.mediaDevices.getUserMedia({
        audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true, autoGainControl: true },
      });
    } catch (err) {
      throw new UserError(micErrorMessage(err));
    }
    await ctx.resume();
    const source = ctx.createMediaStreamSource(stream);
    const capture = new AudioWorkletNode(ctx, "pcm16-capture", {
      numberOfInputs: 1,
      numberOfOutputs: 1,
      outputChannelCount: [1],
      channelCount: 1,
      channelCountMode: "explicit",
      processorOptions: { targetRate: CAPTURE_RATE, frameMs: 20 },
    });
    source.connect(capture);
    // Its output is silence; connecting it keeps it pulled by the graph in every browser.
    capture.connect(ctx.destination);
    const playback = new AudioWorkletNode(ctx, "pcm16-playback", {
      numberOfInputs: 0,
      numberOfOutputs: 1,
      outputChannelCount: [1],
      processorOptions: { sourceRate: CAPTURE_RATE, prebufferMs: 60 },
    });
    playback.connect(ctx.destination);
    return { ctx, stream, source, capture, playback };
  } catch (err) {
    if (stream) stream.getTracks().forEach((t) => t.stop());
    ctx.close().catch(() => {});
    throw err;
  }
}

// ---------------------------------------------------------------------------------------------
// Call lifecycle

async function startCall() {
  if (call) return;
  showMessage("");
  showCallLink(null);
  Object.assign(stats, {
    callId: null, sampleRate: null, endedReason: null, closeCode: null,
    sentFrames: 0, receivedAudioFrames: 0, playedSamples: 0,
  });
  stats.errors.length = 0;
  clearTranscript();
  ui.mute.textContent = "Mute";
  ui.mute.setAttribute("aria-pressed", "false");
  ui.mute.classList.remove("active");
  setStatus("connecting", "Opening the microphone…");
  const current = {
    audio: null, ws: null, started: false, userStopped: false, muted: false,
    lastError: null, endedReason: null, stopTimer: null, closed: false,
  };
  call = current;
  try {
    current.audio = await openAudio();
  } catch (err) {
    const text = err instanceof UserError ? err.message : `Audio setup failed: ${err.message || err}`;
    stats.errors.push(text);
    call = null;
    setStatus("idle", "Not started");
    showMessage(text, "error");
    return;
  }
  if (call !== current) { // stopped while the permission prompt was open
    teardownAudio(current);
    return;
  }
  const { capture, playback } = current.audio;

  capture.port.onmessage = ({ data }) => {
    setMicLevel(current.muted ? 0 : data.level);
    const ws = current.ws;
    if (!current.started || !ws || ws.readyState !== WebSocket.OPEN) return;
    ws.send(data.pcm);
    stats.sentFrames += 1;
  };
  playback.port.onmessage = ({ data }) => {
    if (data.type === "stats") {
      stats.playedSamples = data.played;
    } else if (data.type === "cleared") {
      stats.playedSamples = data.played;
      // A server "clear" may only pause the agent (the caller spoke over it): the overlap
      // message or the final transcript says whether it was cut off. Stop always cuts it.
      if (data.dropped > 0 && current.userStopped) markInterrupted();
    }
  };

  setStatus("connecting", "Connecting…");
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${scheme}://${location.host}${config.wsPath}`);
  ws.binaryType = "arraybuffer";
  current.ws = ws;
  ws.onopen = () => {
    ws.send(JSON.stringify({
      event: "start", profile: ui.profile.value, channel: ui.channel.value, audio: "binary",
    }));
  };
  ws.onmessage = (event) => onSocketMessage(current, event);
  ws.onclose = (event) => onSocketClose(current, event);
}

function onSocketMessage(current, event) {
  if (event.data instanceof ArrayBuffer) {
    stats.receivedAudioFrames += 1;
    current.audio.playback.port.postMessage({ type: "audio", pcm: event.data }, [event.data]);
    return;
  }
  let msg;
  try {
    msg = JSON.parse(event.data);
  } catch {
    console.warn("simulator: ignoring a non-JSON text frame", event.data);
    return;
  }
  switch (msg.type) {
    case "started":
      current.started = true;
      stats.callId = msg.call_id;
      stats.sampleRate = msg.sample_rate;
      current.audio.playback.port.postMessage({ type: "rate", rate: msg.sample_rate || CAPTURE_RATE });
      setStatus("live", `Live · ${msg.profile} · ${msg.channel} (${(msg.sample_rate || CAPTURE_RATE) / 1000} kHz)`);
      setAgentState("listening");
      break;
    case "audio": // base64 audio, for servers that ignore "audio":"binary"
      if (typeof msg.data === "string") {
        const bytes = Uint8Array.from(atob(msg.data), (c) => c.charCodeAt(0));
        stats.receivedAudioFrames += 1;
        current.audio.playback.port.postMessage({ type: "audio", pcm: bytes.buffer }, [bytes.buffer]);
      }
      break;
    case "transcript":
      onTranscript(msg);
      break;
    case "state": {
      const state = msg.state ?? msg.value;
      if (AGENT_STATES.has(state)) setAgentState(state);
      break;
    }
    case "metrics":
      onMetrics(msg);
      break;
    case "overlap":
      onOverlap(msg);
      break;
    case "tool":
      onTool(msg);
      break;
    case "transfer":
      stats.transfers.push(msg.destination || "");
      appendNote(`Transferring the call to ${msg.destination || "a person"}…`, "tool-note");
      break;
    case "clear":
      current.audio.playback.port.postMessage({ type: "clear" });
      break;
    case "ended":
      current.endedReason = msg.reason || "";
      stats.endedReason = current.endedReason;
      if (msg.call_id) stats.callId = msg.call_id;
      setStatus("ending", "Ending…");
      break;
    case "error":
      current.lastError = msg.message || "unknown error";
      stats.errors.push(current.lastError);
      showMessage(`Server error: ${current.lastError}`, "error");
      break;
    default:
      break; // newer servers may send more; ignore what this page does not know
  }
}

function onSocketClose(current, event) {
  if (current.closed) return;
  current.closed = true;
  stats.closeCode = event.code;
  clearTimeout(current.stopTimer);
  teardownAudio(current);
  if (call === current) call = null;
  setAgentState("idle");

  const reason = current.endedReason;
  let text;
  let kind = "info";
  if (reason) {
    text = END_REASONS[reason] || `The call ended (${reason}).`;
    if (reason === "error" && current.lastError) text += ` ${current.lastError}`;
    if (reason !== "caller_hangup") kind = reason === "error" || reason === "global_stop" ? "error" : "warning";
    if (current.userStopped && reason === "caller_hangup") kind = "info";
  } else if (CLOSE_CODES[event.code]) {
    text = CLOSE_CODES[event.code];
    const detail = current.lastError || event.reason;
    if (detail && event.code !== 4503) text += ` (${detail})`;
    kind = "error";
  } else if (current.userStopped) {
    text = "Call stopped.";
  } else {
    text = `The connection to the server closed (code ${event.code}${event.reason ? `: ${event.reason}` : ""}).`;
    if (current.lastError) text += ` ${current.lastError}`;
    kind = "error";
  }
  if (kind !== "info") stats.errors.push(text);
  showMessage(text, kind);
  setStatus("ended", current.started ? `Ended${reason ? ` · ${reason}` : ""}` : "Not started");
  showCallLink(stats.callId);
}

function teardownAudio(current) {
  const audio = current.audio;
  if (!audio) return;
  current.audio = null;
  audio.stream.getTracks().forEach((t) => t.stop());
  audio.capture.port.onmessage = null;
  audio.source.disconnect();
  audio.capture.disconnect();
  audio.playback.disconnect();
  audio.ctx.close().catch(() => {});
  setMicLevel(0);
  // playedSamples keeps its last value for the test and the user.
}

function stopCall() {
  const current = call;
  if (!current) return;
  current.userStopped = true;
  const ws = current.ws;
  if (!ws) {
    // Still opening the microphone: forget this attempt.
    call = null;
    setStatus("idle", "Not started");
    return;
  }
  setStatus("ending", "Ending…");
  if (current.audio) {
    current.audio.playback.port.postMessage({ type: "clear" });
    current.audio.stream.getTracks().forEach((t) => { t.enabled = false; });
  }
  if (ws.readyState === WebSocket.OPEN) {
    ws.send(JSON.stringify({ event: "stop" }));
    current.stopTimer = setTimeout(() => ws.close(1000, "client stop"), STOP_GRACE_MS);
  } else {
    ws.close();
  }
}

function toggleMute() {
  const current = call;
  if (!current || !current.audio) return;
  current.muted = !current.muted;
  // A disabled track delivers silence, so the server keeps receiving paced frames.
  current.audio.stream.getAudioTracks().forEach((t) => { t.enabled = !current.muted; });
  ui.mute.textContent = current.muted ? "Unmute" : "Mute";
  ui.mute.setAttribute("aria-pressed", String(current.muted));
  ui.mute.classList.toggle("active", current.muted);
}

ui.start.addEventListener("click", startCall);
ui.stop.addEventListener("click", stopCall);
ui.mute.addEventListener("click", toggleMute);
document.addEventListener("keydown", (event) => {
  if (event.key === "Escape" && !ui.stop.disabled) {
    event.preventDefault();
    stopCall();
  }
});
window.addEventListener("pagehide", () => {
  if (call && call.ws && call.ws.readyState === WebSocket.OPEN) call.ws.send(JSON.stringify({ event: "stop" }));
});

setStatus("idle", "Not started");
if (config.callsStopped) stats.errors.push("calls are disabled");
