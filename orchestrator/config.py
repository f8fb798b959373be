"""Per-call configuration, built by ``calls/`` from a profile and its channel overlay."""

from __future__ import annotations

from dataclasses import dataclass, field

from orchestrator.flows.spec import Flow
from orchestrator.tools import ToolSpec

DEFAULT_APOLOGY = "Lo sentimos, hemos tenido un problema. La llamada terminará."
DEFAULT_BUSY = "Lo sentimos, todas nuestras líneas están ocupadas. Por favor, llame más tarde."


@dataclass(slots=True, kw_only=True, frozen=True)
class EngineSpec:
    """One engine for one role. ``engine`` is a registry name: groq, openai, azure, local."""

    engine: str
    model: str = ""
    voice: str = ""
    # For OpenAI-compatible servers (vLLM, Ollama, llama.cpp server); empty = vendor default.
    base_url: str = ""


@dataclass(slots=True, kw_only=True, frozen=True)
class EngineCredentials:
    """Vendor keys, read from the environment by the Django settings and passed in.

    The orchestrator never reads ``os.environ`` for secrets itself, so tests and the
    benchmark can build sessions with explicit credentials.
    """

    groq_api_key: str = ""
    groq_base_url: str = ""  # empty = https://api.groq.com; tests point it at a local fake
    openai_api_key: str = ""
    openai_base_url: str = ""
    azure_speech_key: str = ""
    azure_speech_region: str = ""
    azure_speech_endpoint: str = ""


@dataclass(slots=True, kw_only=True, frozen=True)
class CallConfig:
    """Everything a :class:`CallSession` needs to know about one call. Never an ORM object."""

    call_id: str = ""
    channel: str = "browser"  # browser | twilio | telnyx
    # PCM rate the call's transport plays (16000 browser, 8000 phone); the runtime sets it
    # from the transport, so engines never infer a rate from a channel name.
    output_rate: int = 16000
    profile_slug: str = ""
    language: str = "es-ES"  # BCP-47
    system_prompt: str = "You are a helpful voice assistant. Answer briefly."
    greeting: str = ""
    # Ordered fallback chains: the first engine serves, the next one takes over on a
    # connection error, timeout or 5xx before any audio of the turn was played.
    stt: tuple[EngineSpec, ...] = (EngineSpec(engine="local"),)
    llm: tuple[EngineSpec, ...] = (EngineSpec(engine="local"),)
    tts: tuple[EngineSpec, ...] = (EngineSpec(engine="local"),)
    temperature: float = 0.6
    max_tokens: int = 200
    voice_pacing_ms: int = 0  # pause inserted between synthesized sentences
    # End of turn (orchestrator/end_of_turn.py). "smart": a short VAD pause (vad_stop_ms)
    # asks the Smart Turn model and the words whether the caller is done; an incomplete
    # turn waits up to max_turn_silence_ms of silence. "silence": a fixed silence timer
    # (silence_timeout_ms), as before the model.
    turn_detection: str = "smart"  # smart | silence
    vad_stop_ms: int = 250
    max_turn_silence_ms: int = 2500
    turn_threshold: float = 0.5  # Smart Turn probability at or above which a turn is complete
    silence_timeout_ms: int = 700  # end of turn after this much non-speech ("silence" mode)
    min_speech_ms: int = 120  # shorter bursts (clicks, coughs) do not start a turn
    # Transcribe while the caller speaks: partial transcripts every this much new speech
    # (0 = off); the transcript at end of turn is then started at the pause.
    stt_partial_interval_ms: int = 1000
    # Inbound clean-up (orchestrator/noise.py): WebRTC noise suppression + high-pass.
    noise_suppression: bool = True
    preroll_ms: int = 300  # audio kept before speech start so the first syllable is not cut
    idle_timeout_s: float = 15.0
    idle_reprompt: str = "¿Sigue ahí?"
    max_call_seconds: int = 600
    goodbye_message: str = "Gracias por llamar. Hasta luego."
    apology_message: str = DEFAULT_APOLOGY
    busy_message: str = DEFAULT_BUSY  # said when we are overloaded (then the call ends)
    # Overlaps (orchestrator/overlap.py): caller speech over the agent pauses its audio at
    # once; a backchannel ("mm-hmm", "sí") resumes it where it stopped, a real
    # interruption (words beyond the backchannel list, or barge_in_min_ms of speech)
    # cancels the reply.
    barge_in_enabled: bool = True
    barge_in_min_ms: int = 900  # speech over the agent that interrupts whatever its words
    # Extra backchannel words/phrases (lower case) on top of the language's list.
    backchannel_words: tuple[str, ...] = ()
    playout_lead_ms: int = 160  # agent audio queued ahead of real time at the carrier
    engine_timeout_s: float = 10.0  # per engine call (STT request, LLM first token, TTS first byte)
    recorder_retry_s: float = (
        120.0  # retry turn writes this long after the call when the DB is away
    )
    # Tools (orchestrator/tools/): what the agent can do besides talking.
    tools: tuple[ToolSpec, ...] = ()  # HTTP tools defined in the admin
    end_call_enabled: bool = True  # the agent may hang up after its goodbye
    # Transfer allow-list: (label, destination) pairs; destination is E.164 or a SIP URI.
    # Empty: transfer_call is not offered.
    transfer_targets: tuple[tuple[str, str], ...] = ()
    transfer_message: str = "Le paso con una persona. Un momento, por favor."
    transfer_failed_message: str = "Lo siento, no he podido pasarle la llamada."
    # Said when a tool takes longer than tool_filler_after_ms (never dead air); lines
    # separated by "|" are said in turn while it keeps running (reply.py).
    tool_filler: str = "Un momento, lo compruebo.|Sigo comprobándolo, gracias por esperar."
    tool_filler_after_ms: int = 1000
    # Conversation flow (orchestrator/flows/): the nodes the agent walks through, each with
    # its own task prompt, tools and transitions. None: one prompt for the whole call.
    flow: Flow | None = None
    # Outbound answering-machine detection: the session waits (silent) for the carrier's
    # verdict before greeting; a machine gets voicemail_action.
    await_answer: bool = False
    answer_wait_s: float = 30.0  # no verdict by then: treated as a person
    voicemail_action: str = "hang_up"  # hang_up | leave_message
    voicemail_message: str = ""
    # Call recording (recording.py): both sides of the call kept as a two-channel file;
    # the consent line is said before the greeting of a recorded call.
    record_calls: bool = False
    recording_consent_line: str = ""
    extra: dict[str, str] = field(default_factory=dict)
