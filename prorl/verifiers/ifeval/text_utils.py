"""Text helpers for the IFEval checkers: word counts, sentence splitting, tokens, language.

The reference IFEval implementation leans on nltk (a regex word tokenizer, the punkt
sentence splitter and the Treebank word tokenizer) and on ``langdetect``. nltk's punkt model
must be downloaded at run time, which fails offline, so this module re-implements:

* ``count_words``: the ``\\w+`` regex tokenizer (exactly what the reference counts);
* ``split_sentences``: an approximation of punkt's English splitter (same candidate
  boundaries and token rules, a hand-written abbreviation list instead of the learned one);
* ``word_tokenize``: a Treebank-style tokenizer, enough to count all-capital words;
* ``detect_language``: ``langdetect`` with a fixed seed, so scores are reproducible.
"""

from __future__ import annotations

import re
from functools import lru_cache

# ISO 639-1 codes used by IFEval's ``language:response_language`` (code -> English name).
LANGUAGE_CODES: dict[str, str] = {
    "en": "English", "es": "Spanish", "pt": "Portuguese", "ar": "Arabic", "hi": "Hindi",
    "fr": "French", "ru": "Russian", "de": "German", "ja": "Japanese", "it": "Italian",
    "bn": "Bengali", "uk": "Ukrainian", "th": "Thai", "ur": "Urdu", "ta": "Tamil",
    "te": "Telugu", "bg": "Bulgarian", "ko": "Korean", "pl": "Polish", "he": "Hebrew",
    "fa": "Persian", "vi": "Vietnamese", "ne": "Nepali", "sw": "Swahili", "kn": "Kannada",
    "mr": "Marathi", "gu": "Gujarati", "pa": "Punjabi", "ml": "Malayalam", "fi": "Finnish",
}

_WORD_RE = re.compile(r"\w+")


def count_words(text: str) -> int:
    """Number of ``\\w+`` runs (Unicode-aware), the reference's definition of a word."""
    return len(_WORD_RE.findall(text))


# --------------------------------------------------------------------------------------------
# Sentence splitting (punkt approximation)
# --------------------------------------------------------------------------------------------

# Characters that may directly follow a sentence-final character and still mark a candidate
# boundary (closing brackets/quotes, markdown stars, colons, ...).
_AFTER_PUNCT = "?!)\";}\\]*:@'({\\["
_CANDIDATE_RE = re.compile(rf"[.?!](?=(?P<after>[{_AFTER_PUNCT}]|\s+(?P<next>\S+)))")
# Word tokens as punkt sees them: runs of dots/dashes, words (a trailing period stays attached)
# and single punctuation characters.
_MULTI_PUNCT = r"(?:-{2,}|\.{2,}|(?:\.\s){2,}\.)"
_WORD_START = r"[^(\"`{\[:;&#*@)}\]\-,]"
_TOKEN_RE = re.compile(
    rf"{_MULTI_PUNCT}"
    rf"|(?={_WORD_START})\S+?(?=\s|$|[{_AFTER_PUNCT}]|{_MULTI_PUNCT}|,(?=$|\s|[{_AFTER_PUNCT}]|{_MULTI_PUNCT}))"
    r"|\S"
)
_NUMBER_RE = re.compile(r"^-?[.,]?\d[\d,.\-]*\.?$")
_INITIAL_RE = re.compile(r"^[^\W\d]\.$")
_REALIGN_RE = re.compile(r"[\"')\]}]+?(?:\s+|(?=--)|$)")

# Lower-cased abbreviations (without their final period) after which a period does not end
# a sentence unless the next word clearly starts one. Written for this project.
ABBREVIATIONS: frozenset[str] = frozenset(
    """
    mr mrs ms dr prof sr jr st mt ft rev gen col lt sgt capt cmdr adm gov sen rep pres
    inc ltd co corp llc bros dept univ assn est approx vs v etc al cf viz e.g i.e a.m p.m
    u.s u.k u.n u.s.a e.u d.c n.y l.a jan feb mar apr jun jul aug sep sept oct nov dec
    mon tue tues wed thu thur thurs fri sat sun no nos vol vols fig figs pp ed eds
    ph.d m.d b.a m.a b.s m.s d.d.s ave blvd rd hwy sq mins hrs oz lb lbs
    """.split()
)
# Capitalised words that usually open a sentence (punkt's "frequent sentence starters").
SENTENCE_STARTERS: frozenset[str] = frozenset(
    """
    the a an i it he she we they you this that these those there here in on at for but and
    or so if as when while after before however also then thus therefore moreover
    furthermore meanwhile yet our my his her their its your what why how who where which
    one some many most all each every no not do does did is are was were be has have had
    """.split()
)


def _token_type(tok: str) -> str:
    """Lower-case type of a token, with numbers collapsed to ``##number##``."""
    return _NUMBER_RE.sub("##number##", tok.lower())


def _is_abbreviation(tok: str) -> bool:
    base = tok[:-1].lower()
    return base in ABBREVIATIONS or base.split("-")[-1] in ABBREVIATIONS


def _starts_sentence(tok: str) -> str | bool:
    """Guess whether ``tok`` opens a sentence: True, False or ``"unknown"``."""
    if tok in (";", ":", ",", ".", "!", "?"):
        return False
    if tok[:1].islower():
        return False
    if tok[:1].isupper() and tok.lower().rstrip(".") in SENTENCE_STARTERS:
        return True
    return "unknown"


def _first_pass_kind(tok: str) -> str:
    """"end" (a lone . ? !), "ellipsis", "abbr", "word" (ends in a period) or "other"."""
    if tok in (".", "?", "!"):
        return "end"
    if re.fullmatch(r"\.\.+", tok):
        return "ellipsis"
    if tok.endswith(".") and not tok.endswith(".."):
        return "abbr" if _is_abbreviation(tok) else "word"
    return "other"


def _annotate(tokens: list[str], before: str = "") -> list[bool]:
    """Sentence-break flags for ``tokens`` (punkt's two annotation passes, approximated).

    ``before`` is the word preceding the tokens; it tells an initial inside a name
    ("John F. Kennedy") from a one-letter word ending a sentence ("in o. Please").
    """
    kinds = [_first_pass_kind(tok) for tok in tokens]  # first pass: the token alone
    breaks = [k in ("end", "word") for k in kinds]
    for i in range(len(tokens) - 1):  # second pass: look at the following token
        tok, nxt = tokens[i], tokens[i + 1]
        if not tok.endswith("."):
            continue
        typ = _token_type(tok)
        typ = typ[:-1] if typ.endswith(".") and len(typ) > 1 else typ
        initial = bool(_INITIAL_RE.match(tok))
        starter = _starts_sentence(nxt)
        if kinds[i] in ("abbr", "ellipsis") and not initial:
            breaks[i] = starter is True
        elif initial:
            prev = tokens[i - 1] if i > 0 else before
            in_name = nxt[:1].isupper() and (
                not prev or prev[:1].isupper() or bool(_INITIAL_RE.match(nxt)))
            breaks[i] = starter is True or (starter == "unknown" and not in_name)
        elif typ == "##number##" and starter is False:
            breaks[i] = False
    return breaks


def _contains_break(context: str, before: str = "") -> bool:
    """True when a token other than the last one in ``context`` ends a sentence."""
    tokens = _TOKEN_RE.findall(context)
    flags = _annotate(tokens, before)
    return any(flags[:-1])


def _candidate_contexts(text: str) -> list[tuple[re.Match, str, str]]:
    """Candidate sentence ends with their context (the word before, the mark, what follows).

    Of several candidates inside one whitespace-free run (``"Why?!"``), only the last is kept.
    """
    out: list[tuple[re.Match, int]] = []
    prev: tuple[re.Match, int] | None = None
    prev_start, prev_stop = 0, 0
    for m in _CANDIDATE_RE.finditer(text):
        ws = _last_space(text, prev_stop, m.start())
        start = ws + 1 if ws > prev_stop else prev_start
        if prev is not None and prev_stop <= start:
            out.append(prev)
        prev = (m, start)
        prev_start, prev_stop = start, m.start()
    if prev is not None:
        out.append(prev)
    return [(m, text[start:m.start()] + m.group(0) + m.group("after"), _word_before(text, start))
            for m, start in out]


def _last_space(text: str, lo: int, hi: int) -> int:
    """Index of the last whitespace character in ``text[lo:hi]``, or -1."""
    for i in range(hi - 1, lo - 1, -1):
        if text[i].isspace():
            return i
    return -1


def _word_before(text: str, pos: int) -> str:
    """The last whitespace-separated word of ``text[:pos]`` (empty if none)."""
    words = text[max(0, pos - 200):pos].split()
    return words[-1] if words else ""


def split_sentences(text: str) -> list[str]:
    """Split ``text`` into sentences the way nltk's English punkt model would (approximately).

    Newlines alone never end a sentence; ``.``, ``?`` and ``!`` do when followed by space or a
    closing mark, except after known abbreviations, initials and list numbers before a
    lower-case word, or an ellipsis that is not followed by a likely sentence opener.
    """
    spans: list[tuple[int, int]] = []
    last_break = 0
    for m, context, before in _candidate_contexts(text):
        if _contains_break(context, before):
            spans.append((last_break, m.end()))
            last_break = m.start("next") if m.group("next") else m.end()
    spans.append((last_break, len(text.rstrip())))

    # Closing quotes/brackets that open a sentence belong to the previous one.
    sentences: list[str] = []
    shift = 0
    for i, (a, b) in enumerate(spans):
        a += shift
        m = _REALIGN_RE.match(text, spans[i + 1][0], spans[i + 1][1]) if i + 1 < len(spans) else None
        if m:
            sentences.append(text[a:spans[i + 1][0] + len(m.group(0).rstrip())])
            shift = m.end() - spans[i + 1][0]
        else:
            shift = 0
            if text[a:b]:
                sentences.append(text[a:b])
    return sentences


def count_sentences(text: str) -> int:
    """Number of sentences in ``text`` (see :func:`split_sentences`)."""
    return len(split_sentences(text))


# --------------------------------------------------------------------------------------------
# Treebank-style word tokens (for counting all-capital words)
# --------------------------------------------------------------------------------------------

_WORDISH_RE = re.compile(r"\w(?:[\w\-./+'\u2019]*\w)?|[^\w\s]")
_CONTRACTION_RE = re.compile(r"(?i)^(\w+?)(n['\u2019]t|['\u2019](?:s|m|d|ll|re|ve))$")
_FUSED_RE = re.compile(r"(?i)^(can)(not)$|^(gon|wan)(na)$|^(got)(ta)$|^(gim|lem)(me)$")


def word_tokenize(text: str) -> list[str]:
    """Split ``text`` into Treebank-like tokens: punctuation marks stand alone, clitics such
    as ``n't``/``'s``/``'m`` are separated (``DON'T`` -> ``DO``, ``N'T``), and hyphenated or
    dotted words (``COVID-19``, ``U.S``) stay whole."""
    out: list[str] = []
    for piece in _WORDISH_RE.findall(text):
        m = _CONTRACTION_RE.match(piece) or _FUSED_RE.match(piece)
        if m:
            out.extend(g for g in m.groups() if g)
        else:
            out.append(piece)
    return out


# --------------------------------------------------------------------------------------------
# Language detection
# --------------------------------------------------------------------------------------------


class LanguageDetectionError(Exception):
    """The language of a text cannot be determined (e.g. it has no letters)."""


@lru_cache(maxsize=1)
def _langdetect_factory():
    try:
        from langdetect import detector_factory
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "IFEval language checks need the 'langdetect' package: pip install langdetect"
        ) from e
    detector_factory.init_factory()
    return detector_factory._factory


def detect_language(text: str, seed: int = 0) -> str:
    """ISO 639-1 code of ``text`` by ``langdetect``, seeded so results are reproducible.

    Raises :class:`LanguageDetectionError` where langdetect gives up (no usable features).
    """
    from langdetect.lang_detect_exception import LangDetectException

    detector = _langdetect_factory().create()
    detector.seed = seed
    try:
        detector.append(text)
        return detector.detect()
    except LangDetectException as e:
        raise LanguageDetectionError(str(e)) from e
