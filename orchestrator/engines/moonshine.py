"""Moonshine tiny-en: the local English speech-to-text, run straight from its ONNX files.

The weights ship inside the ``moonshine-voice==0.0.73`` wheel (MIT, Moonshine AI) as
``moonshine_voice/assets/tiny-en/{encoder_model.ort, decoder_model_merged.ort,
tokenizer.bin}`` (the same three files in its Linux x86-64/aarch64, macOS and Windows
wheels; sha256 below, checked at load). The wheel is installed only to carry them
(``requirements-turn.txt``: ``--no-deps --require-hashes``): its Python package is never
imported (its import pulls ``sounddevice`` and its model API downloads other models), the
files are found with ``importlib.util.find_spec``, which does not import it. They run
here with onnxruntime + numpy:

- encoder: 16 kHz float audio -> hidden states (288 wide, ~41 frames per second);
- merged decoder: greedy decoding from ``<s>``; the first step fills the self- and
  cross-attention KV caches (``use_cache_branch`` false), each next step feeds one token
  and the self-attention cache (the cross-attention one from the first step is reused);
- ``tokenizer.bin``: the vocabulary as 32,768 length-prefixed byte strings (one length
  byte, then the piece), ids in file order; SentencePiece pieces (``▁`` = space) with
  byte fallback (ids 3-258 are the single bytes 0x00-0xFF).

English only, no prompt (``transcribe``'s ``prompt`` is ignored). Decoding stops at
``</s>`` or after ``TOKENS_PER_SECOND`` tokens per second of audio: a model that loops on
noise cannot run on. Measured on the 2-core development machine (``bench/stt_wer.py``):
see ``docs/engines.md``.

Blocking and CPU-bound: :class:`MoonshineTinyEn` is loaded once per process and run on
the single thread of its entry in ``orchestrator.engines.local.MODELS`` (the bounded queue
of the other local models), never on the event loop.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
from pathlib import Path
from typing import Any

import numpy as np

RATE = 16000
WHEEL = "moonshine-voice==0.0.73"
IN_PACKAGE = Path("assets") / "tiny-en"
FILES_SHA256 = {
    "encoder_model.ort": "94e90a4654fc45cdfedb77c4c08e1739f48862998e58fada384b25118134f221",
    "decoder_model_merged.ort": "cf524c4862d36e9e5ab032eddc73637efd822d70e868ac575cf1a46e1e4708a0",
    "tokenizer.bin": "6884b35fd6377d4c4d32336a0bc152f36b64d1e45b6503683cdc238250a8472d",
}
VOCAB_SIZE = 32768
BOS, EOS = 1, 2  # <s>, </s>
# Speech runs at 2-4 tokens per second; Moonshine's own reference code caps decoding at
# 6 per second of audio. A little more here, and at least a few for a one-word answer.
TOKENS_PER_SECOND = 6.5
MIN_TOKENS = 6
# Below this there is no word to hear (and the encoder needs >= 895 samples for a frame):
# answer "" at once instead of decoding noise.
MIN_SAMPLES = RATE // 10  # 0.1 s
# Quieter than this (RMS re full scale) is silence: Moonshine hears "You" in digital
# silence, so it is not decoded. Phone speech is around -20 to -30 dBFS.
SILENCE_DBFS = -55.0


class ModelFilesError(RuntimeError):
    """The Moonshine files are missing or are not the ones we pinned."""


def model_dir() -> Path:
    """The installed wheel's ``assets/tiny-en`` folder (the package is not imported)."""
    try:
        spec = importlib.util.find_spec("moonshine_voice")
    except (ImportError, ValueError):
        spec = None
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / IN_PACKAGE
        if all((candidate / name).is_file() for name in FILES_SHA256):
            return candidate
    raise ModelFilesError(
        f"Moonshine tiny-en not found: install it with "
        f"`pip install --no-deps --require-hashes -r requirements-turn.txt` ({WHEEL})"
    )


def available() -> bool:
    try:
        model_dir()
    except ModelFilesError:
        return False
    return True


class Tokenizer:
    """Decoder for ``tokenizer.bin``: the vocabulary's pieces as raw bytes, by id."""

    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = pieces
        # <unk>, <s>, </s> and the unused "<<ST_n>>" slots at the end print as nothing.
        self._skip = {0, BOS, EOS} | {i for i, p in enumerate(pieces) if p.startswith(b"<<ST_")}

    @classmethod
    def from_bytes(cls, data: bytes) -> Tokenizer:
        pieces: list[bytes] = []
        at = 0
        while at < len(data):
            length = data[at]
            pieces.append(data[at + 1 : at + 1 + length])
            at += 1 + length
        if at != len(data) or len(pieces) != VOCAB_SIZE:
            raise ModelFilesError(
                f"tokenizer.bin: read {len(pieces)} pieces in {at} of {len(data)} bytes, "
                f"expected {VOCAB_SIZE}"
            )
        return cls(pieces)

    def decode(self, ids: list[int]) -> str:
        raw = b"".join(self.pieces[i] for i in ids if i not in self._skip)
        # Byte-fallback pieces may split a character: join the bytes first, then decode.
        return " ".join(raw.decode("utf-8", errors="replace").replace("\u2581", " ").split())


class MoonshineTinyEn:
    """Encoder + merged decoder sessions and the tokenizer; :meth:`transcribe` blocks."""

    def __init__(self, directory: Path | None = None, *, threads: int = 1) -> None:
        import onnxruntime as ort

        directory = directory or model_dir()
        for name, expected in FILES_SHA256.items():
            with (directory / name).open("rb") as f:
                actual = hashlib.file_digest(f, "sha256").hexdigest()
            if actual != expected:
                raise ModelFilesError(
                    f"{directory / name} has sha256 {actual}, expected {expected} "
                    f"(Moonshine tiny-en from {WHEEL}); refusing to load it"
                )
        options = ort.SessionOptions()
        # One thread: a 4-5 s utterance takes ~0.15-0.25 s on it, and the other core stays
        # free for the LLM and TTS of the same or another call.
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL

        def session(name: str) -> Any:
            return ort.InferenceSession(
                str(directory / name), sess_options=options, providers=["CPUExecutionProvider"]
            )

        self.encoder = session("encoder_model.ort")
        self.decoder = session("decoder_model_merged.ort")
        self.tokenizer = Tokenizer.from_bytes((directory / "tokenizer.bin").read_bytes())
        self._past = [i for i in self.decoder.get_inputs() if i.name.startswith("past_key_values.")]
        self._outputs = [o.name for o in self.decoder.get_outputs()]  # logits, present.*
        # The first run of an ONNX session pays one-off set-up costs: pay them here, at
        # load (a second of noise is not silence, so it is decoded: a few tokens).
        noise = np.random.default_rng(0).normal(0.0, 0.05, RATE).astype(np.float32)
        self.transcribe(noise)

    def transcribe(self, audio: np.ndarray) -> str:
        """Text of mono 16 kHz float audio in [-1, 1]; "" for under 0.1 s or silence."""
        if audio.size < MIN_SAMPLES or _rms_dbfs(audio) < SILENCE_DBFS:
            return ""
        samples = np.ascontiguousarray(audio, dtype=np.float32)[None, :]
        (hidden,) = self.encoder.run(
            ["last_hidden_state"],
            {"input_values": samples, "attention_mask": np.ones(samples.shape, np.int64)},
        )
        limit = max(MIN_TOKENS, math.ceil(audio.size / RATE * TOKENS_PER_SECOND))
        return self.tokenizer.decode(self._greedy(hidden, limit))

    def _greedy(self, hidden: np.ndarray, limit: int) -> list[int]:
        fixed = {
            "encoder_hidden_states": hidden,
            "encoder_attention_mask": np.ones(hidden.shape[:2], np.int64),
        }
        # First step: empty caches (batch 1, heads, 0 positions, head size); the decoder
        # computes the cross-attention cache from the encoder states and returns it.
        past = {
            i.name: np.zeros((1, i.shape[1], 0, i.shape[3]), np.float32) for i in self._past
        }
        tokens: list[int] = []
        token = BOS
        for step in range(limit):
            outputs = self.decoder.run(
                self._outputs,
                {
                    **fixed,
                    **past,
                    "input_ids": np.array([[token]], np.int64),
                    "use_cache_branch": np.array([step > 0]),
                },
            )
            token = int(np.argmax(outputs[0][0, -1]))
            if token == EOS:
                break
            tokens.append(token)
            for name, value in zip(self._outputs[1:], outputs[1:], strict=True):
                key = name.replace("present.", "past_key_values.", 1)
                if step == 0 or ".decoder." in key:  # the cross-attention cache is fixed
                    past[key] = value
        return tokens


def _rms_dbfs(audio: np.ndarray) -> float:
    rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))
    return 20 * math.log10(rms) if rms > 0 else -math.inf


def load() -> MoonshineTinyEn:
    return MoonshineTinyEn()


def transcribe(model: MoonshineTinyEn, pcm16: bytes, sample_rate: int, prompt: str = "") -> str:
    """``local.LocalSTT``'s job for Moonshine: PCM16 at ``sample_rate`` -> text. Moonshine
    has no prompt: ``prompt`` (Whisper's spelling hint) is ignored."""
    import soxr

    audio = np.frombuffer(pcm16[: len(pcm16) // 2 * 2], dtype="<i2").astype(np.float32) / 32768.0
    if sample_rate != RATE and audio.size:
        audio = soxr.resample(audio, sample_rate, RATE)
    return model.transcribe(audio)
