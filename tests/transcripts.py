"""Checks on model output that hold on any CPU.

Whisper's decoding depends on the machine: CTranslate2 picks its kernels by instruction
set (SSE/AVX/AVX2/AVX-512), and int8 rounding differs between them, so one sentence of
espeak-ng speech comes back as "una cita para el lunes" on one CPU, "una tita" or "para
el rume" on others. A test of a transcript therefore never compares exact text: it bounds
the word error rate against what was said and asserts the few words that carry the
behaviour (e.g. Spanish function words prove the multilingual model decoded Spanish).
To see the spread on one machine: ``CT2_FORCE_CPU_ISA=GENERIC|AVX|AVX2 pytest ...``.
"""

from __future__ import annotations

import re


def words(text: str) -> list[str]:
    """Lower-case words (letters and digits, accents kept), punctuation dropped."""
    return re.findall(r"\w+", text.lower())


def word_error_rate(said: str, heard: str) -> float:
    """(substitutions + deletions + insertions) / words said: word-level Levenshtein."""
    ref, hyp = words(said), words(heard)
    if not ref:
        return float(bool(hyp))
    previous = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, start=1):
        current = [i]
        for j, h in enumerate(hyp, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (r != h)))
        previous = current
    return previous[-1] / len(ref)


def assert_heard(
    heard: str, said: str, *, max_wer: float, at_least: int = 0, of: frozenset[str] = frozenset()
) -> None:
    """``heard`` is ``said`` within ``max_wer``, and holds ``at_least`` of the words ``of``."""
    wer = word_error_rate(said, heard)
    assert wer <= max_wer, f"WER {wer:.2f} > {max_wer:.2f}: said {said!r}, heard {heard!r}"
    found = of & set(words(heard))
    assert len(found) >= at_least, f"heard {heard!r}: only {sorted(found)} of {sorted(of)}"
