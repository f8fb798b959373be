"""What the caller's words say about turn-taking: backchannels and unfinished sentences.

Two small per-language word lists, used with the audio signals (VAD, Smart Turn):

- a **backchannel** is speech said over the agent that only acknowledges it ("mm-hmm",
  "yeah", "sí", "vale"): the agent resumes instead of stopping;
- a transcript that **ends in a conjunction, preposition, article or filler** ("…a table
  for", "y", "um") is an unfinished turn, whatever the prosody model thinks: the agent
  keeps listening.

Lists are lower case, matched on words with punctuation stripped; a profile can add its
own backchannels (``CallConfig.backchannel_words``). Unknown languages use English.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

BACKCHANNELS: dict[str, frozenset[str]] = {
    "en": frozenset(
        """mm mmm mhm mm-hmm mmhmm hmm hm uh-huh uhhuh uh huh oh-oh uh-oh wow yeah yep yup yes ya yah okay ok
        kay right alright all-right sure cool great fine good i see got it gotcha ah oh aha
        really wow nice totally exactly indeed true absolutely of course""".split()
    ),
    "es": frozenset(
        """mm mmm mhm ajá aja ah ajam sí si vale claro ya bueno ok okey vale vale entiendo
        perfecto exacto cierto venga eh oh uh hum umm de acuerdo correcto genial""".split()
    ),
    "fr": frozenset("mm mhm oui ouais d'accord ok okay ah oh bon bien voilà exactement".split()),
    "de": frozenset("mm mhm ja jo genau okay ok ach aha stimmt richtig gut klar".split()),
    "it": frozenset("mm mhm sì si certo ok okay ah eh esatto giusto va bene bene".split()),
    "pt": frozenset("mm mhm sim é ok okay ah hum certo claro exato tá ta beleza".split()),
}

# Words a finished sentence does not end with: conjunctions, prepositions, articles,
# possessives and fillers. Kept short and unambiguous ("to" is in, "up" is not).
INCOMPLETE_ENDINGS: dict[str, frozenset[str]] = {
    "en": frozenset(
        """and or but so because if then than that which who whose where when while
        for to of in on at by with from into about as like the a an my your our their
        his her its this these those some any um uh er erm ah eh""".split()
    ),
    "es": frozenset(
        """y e o u ni pero que porque si pues entonces cuando donde como para por de del
        en con sin a al sobre hasta desde el la los las un una unos unas mi mis tu tus su
        sus nuestro nuestra este esta ese esa eh em este mmm""".split()
    ),
    "fr": frozenset(
        "et ou mais donc parce que si pour de du des à au aux en avec sans le la les un une "
        "mon ma mes ton ta son sa euh".split()
    ),
    "de": frozenset(
        "und oder aber weil wenn dass für zu von mit bei nach aus in an auf der die das ein "
        "eine mein meine äh ähm".split()
    ),
    "it": frozenset(
        "e o ma perché se che per di da in con su a al il lo la i gli le un una mio mia eh ehm".split()
    ),
    "pt": frozenset(
        "e ou mas porque se que para por de do da em com sem a o os as um uma meu minha é "
        "ahn hum".split()
    ),
}

# Whisper's prompt when transcribing speech over the agent: it primes murmurs to be
# spelled as backchannels instead of hallucinated words ("mm-hmm" -> "in a month").
BACKCHANNEL_PROMPTS: dict[str, str] = {
    "en": "Mm-hmm. Uh-huh. Yeah. Okay. Right.",
    "es": "Mm. Ajá. Sí. Vale. Claro.",
    "fr": "Mm. Oui. D'accord. Ouais.",
    "de": "Mhm. Ja. Genau. Okay.",
    "it": "Mm. Sì. Certo. Va bene.",
    "pt": "Hum. Sim. Tá. Certo.",
}

_WORD = re.compile(r"[\w'-]+", re.UNICODE)


def _lang(language: str) -> str:
    code = language.split("-")[0].lower()
    return code if code in BACKCHANNELS else "en"


def words_of(text: str) -> list[str]:
    """Lower-case words, punctuation stripped; hyphenated forms kept ("mm-hmm")."""
    return [w.strip("-'") for w in _WORD.findall(unicodedata.normalize("NFC", text.lower()))]


def backchannel_prompt(language: str) -> str:
    return BACKCHANNEL_PROMPTS[_lang(language)]


def is_backchannel(text: str, language: str, extra: Iterable[str] = ()) -> bool:
    """Only acknowledgements (or nothing intelligible): the agent should go on.

    Multi-word entries ("i see", "de acuerdo") match as phrases; every word of the
    transcript must be an acknowledgement or a filler/function word ("and then,
    mm-hmm" is how a short murmur often comes back from STT; a real interruption
    carries a word of its own: "no", "wait", "two", "Friday"). Empty text counts: a
    cough or a breath the STT heard as nothing is no reason to stop the agent.
    """
    lang = _lang(language)
    acks = BACKCHANNELS[lang] | {e.strip().lower() for e in extra if e.strip()}
    words = [w for w in words_of(text) if w]
    if not words:
        return True
    phrase = " ".join(words)
    matched_phrase = False
    for entry in sorted((e for e in acks if " " in e), key=len, reverse=True):
        if entry in phrase:
            matched_phrase = True
            phrase = phrase.replace(entry, " ")
    singles = {e for e in acks if " " not in e}
    function = INCOMPLETE_ENDINGS[lang]
    rest = phrase.split()
    # Function words pass only beside an acknowledgement ("and then, mm-hmm"): alone,
    # "But…", "To." or "When?" are the caller starting to say something.
    has_ack = matched_phrase or any(_known_word(w, singles) for w in rest)
    return has_ack and all(_known_word(w, singles) or w in function for w in rest)


def _known_word(word: str, singles: set[str] | frozenset[str]) -> bool:
    # STT spells murmurs freely: "mm-hm", "uh huh", "uhhuh", "mmmm", "Mhmm".
    forms = {word, word.replace("-", ""), re.sub(r"(.)\1{2,}", r"\1\1", word),
             re.sub(r"(.)\1+", r"\1", word)}  # fmt: skip
    if forms & singles:
        return True
    parts = [p for p in word.split("-") if p]
    return len(parts) > 1 and all(_known_word(p, singles) for p in parts)


def ends_incomplete(text: str, language: str) -> bool:
    """The transcript stops mid-sentence ("…a table for", "y", "um")."""
    words = [w for w in words_of(text) if w]
    if not words:
        return False
    stripped = text.rstrip()
    if stripped.endswith(("?", "!")):
        return False  # a question or exclamation is a whole thought, even "…for?"
    return words[-1] in INCOMPLETE_ENDINGS[_lang(language)]


# Farewells that end a call when the agent says them last (an LLM that cannot call the
# end_call tool still hangs up: session.py). Phrases, matched on whole words.
FAREWELLS: dict[str, tuple[str, ...]] = {
    "en": ("goodbye", "good bye", "bye", "bye-bye", "bye bye", "have a nice day",
           "have a great day", "have a good day", "have a good evening",
           "have a great evening", "have a nice evening", "take care"),
    "es": ("adiós", "adios", "hasta luego", "hasta pronto", "hasta la próxima",
           "que tenga un buen día", "que pase un buen día", "que tenga buen día",
           "que tenga una buena tarde", "que tenga una buena noche"),
    "fr": ("au revoir", "bonne journée", "bonne soirée", "à bientôt"),
    "de": ("auf wiederhören", "auf wiedersehen", "tschüss", "schönen tag noch"),
    "it": ("arrivederci", "buona giornata", "buona serata", "a presto"),
    "pt": ("tchau", "adeus", "até logo", "até breve", "tenha um bom dia"),
}  # fmt: skip
_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+")


def says_goodbye(text: str, language: str) -> bool:
    """The reply ends by taking leave ("Thank you for calling. Goodbye!", "…see you
    Friday, bye!", "Goodbye, John."): its last sentence is not a question and ends with a
    farewell, or with one followed by at most two words (a name). A farewell inside a
    sentence that goes on ("we will take care of it", "before we say goodbye?") is not."""
    sentences = [s for s in _SENTENCE_END.split(text.strip()) if words_of(s)]
    if not sentences or sentences[-1].rstrip().endswith("?"):
        return False
    words = words_of(sentences[-1])
    farewells = FAREWELLS.get(_lang(language), FAREWELLS["en"])
    for farewell in farewells:
        size = len(farewell.split())
        for tail in range(3):  # the farewell, then up to two more words
            end = len(words) - tail
            if end >= size and " ".join(words[end - size : end]) == farewell:
                return True
    return False
