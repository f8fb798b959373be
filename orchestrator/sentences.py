"""Cut a streamed LLM reply into sentences/clauses, each sent to TTS as soon as complete.

Rules, chosen so TTS gets natural units early without reading fragments:
- ``.``, ``?``, ``!``, ``…`` end a sentence only once followed by whitespace (or an
  opening ``¿``/``¡``), so "3.5", "example.com" and "..." are never cut mid-way;
  closing quotes/brackets after the mark stay with the sentence.
- a ``.`` after a known abbreviation ("Dr.", "Sra.", "e.g.", "EE.UU.") or a single
  initial ("J.") does not end a sentence.
- ``,``/``;``/``:`` and newlines cut a clause only when the piece is already long
  (``clause_min_chars``): this bounds the wait for the first audio of a long sentence.
- pieces shorter than ``min_chars`` ("Sí.", "¡Hola!") are joined to the next one.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

ABBREVIATIONS = frozenset(
    {
        # English
        "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "vs", "etc", "inc", "ltd", "co",
        "no", "approx", "dept", "est", "fig", "min", "max", "mt", "ave", "jan", "feb", "mar",
        "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec",
        # Spanish
        "sra", "srta", "dra", "lic", "ing", "arq", "ud", "uds", "vd", "vds", "av", "avda",
        "aprox", "núm", "num", "pág", "pag", "tel", "ej", "cía", "dña", "dño", "d", "dª",
        "admón", "depto", "art", "atte", "c", "p", "pza", "pl", "vol", "cap",
    }
)  # fmt: skip

_SENTENCE_END = ".?!…"
_CLAUSE_END = ",;:"
_CLOSERS = "\"'”’»)]"
_OPENERS = "¿¡"
# "e.g", "i.e", "a.m", "EE.UU": tokens with inner dots are abbreviations.
_DOTTED = re.compile(r"^(?:\w{1,3}\.)+\w{1,3}$")
_MARKUP = re.compile(r"[*#`]+")


def clean_for_speech(text: str) -> str:
    """Drop markdown emphasis/heading marks that TTS would read aloud."""
    return _MARKUP.sub("", text)


class SentenceSplitter:
    def __init__(self, *, min_chars: int = 12, clause_min_chars: int = 60) -> None:
        self._min_chars = min_chars
        self._clause_min_chars = clause_min_chars
        self._buf = ""
        self._scan = 0  # buffer index up to which no boundary can be found any more

    def push(self, delta: str) -> list[str]:
        """Add a text delta; return the sentences it completed (possibly none)."""
        self._buf += delta
        out: list[str] = []
        while (cut := self._find_cut()) is not None:
            piece = self._buf[:cut].strip()
            self._buf = self._buf[cut:]
            self._scan = 0
            if piece:
                out.append(clean_for_speech(piece))
        return [p for p in out if p.strip()]

    def flush(self) -> str | None:
        """End of the stream: whatever is left, or None."""
        piece = clean_for_speech(self._buf.strip()).strip()
        self._buf = ""
        self._scan = 0
        return piece or None

    def _find_cut(self) -> int | None:
        buf = self._buf
        i = self._scan
        while i < len(buf):
            ch = buf[i]
            if ch in _SENTENCE_END or ch in _CLAUSE_END or ch == "\n":
                end = i + 1
                # Keep runs like "?!", "..." and closing quotes with the mark.
                while end < len(buf) and (buf[end] in _SENTENCE_END or buf[end] in _CLOSERS):
                    end += 1
                if end >= len(buf):
                    # Cannot tell yet ("3." may become "3.5"): wait for the next delta.
                    self._scan = i
                    return None
                nxt = buf[end]
                if (nxt.isspace() or nxt in _OPENERS) and self._is_boundary(buf, i, end):
                    return end
                i = end
                continue
            i += 1
        self._scan = len(buf)
        return None

    def _is_boundary(self, buf: str, i: int, end: int) -> bool:
        ch = buf[i]
        piece_len = len(buf[:end].strip())
        if ch == "\n":
            return piece_len >= self._min_chars
        if ch in _CLAUSE_END:
            return piece_len >= self._clause_min_chars
        if piece_len < self._min_chars:
            return False
        if ch == "." and buf[i:end].rstrip(_CLOSERS) == ".":
            word = buf[:i].rsplit(None, 1)[-1] if buf[:i].strip() else ""
            word = word.lstrip("\"'“‘«([¿¡")
            if word.lower() in ABBREVIATIONS or _DOTTED.match(word):
                return False
            if len(word) == 1 and word.isalpha() and word.isupper():
                return False  # an initial: "J. K. Rowling"
        return True


async def sentences_of(text: str) -> AsyncIterator[str]:
    """Fixed text (a greeting, a filler, a flow's line) as the sentences TTS is given."""
    splitter = SentenceSplitter()
    for sentence in splitter.push(text):
        yield sentence
    if (tail := splitter.flush()) is not None:
        yield tail
