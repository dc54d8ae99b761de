"""STEM verifier: GPQA-style multiple choice, plus an optional LLM judge for free-form answers.

Multiple choice: the chosen letter is taken from the *last* answer-like statement in the response:
``<answer>X</answer>``, ``\\boxed{X}``, "Answer: X", "the (final/correct) answer is (X)", "the correct
option is X", or a response that is only the letter. A statement naming several options ("A and C",
``\\boxed{A, B}``) scores 0 (``wrong``); nothing found gives ``no_answer``. The letter set is A-D by
default; ``extra_info["letters"]`` (e.g. ``"ABCDEFGHIJ"``), ``extra_info["options"]``/``["choices"]``
(list or letter->text dict) or ``extra_info["num_choices"]`` change it. The ground truth may be a
letter (``"B"``, ``"(B)"``), a 0-based option index, or the text of one of the options.

LLM judge (off by default): rows with ``extra_info["answer_type"] == "free_form"`` (or whose ground
truth is no option letter and that list no options; every row when the judge's ``mode`` is ``"all"``) are sent to an OpenAI-compatible ``/v1/chat/completions`` endpoint over
stdlib ``urllib`` with a timeout and retries. Configure it with ``extra_info["judge"]`` (a dict of
:class:`JudgeConfig` fields), :func:`configure_judge` (this process only), or the environment
(``PRORL_STEM_JUDGE_URL``, ``_MODEL``, ``_API_KEY_ENV``, ``_TIMEOUT``, ``_RETRIES``, ``_MODE``), which
worker processes inherit. Any judge failure gives an ``error`` verdict with the reason. Without a
judge a free-form answer is only accepted on a normalised exact match; otherwise ``error``.
"""

from __future__ import annotations

import json
import os
import re
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, fields
from typing import Any

from prorl.verifiers.base import Status, Verdict

DEFAULT_LETTERS = "ABCD"
_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


# --------------------------------------------------------------------------------------------
# option letters and ground truth
# --------------------------------------------------------------------------------------------
def _options(extra_info: dict) -> dict[str, str]:
    """letter -> option text, from ``extra_info["options"]`` or ``["choices"]`` (list or dict)."""
    opts = extra_info.get("options")
    if opts is None:
        opts = extra_info.get("choices")
    if opts is None:
        return {}
    if isinstance(opts, dict):
        return {str(k).strip().strip("()").upper(): str(v) for k, v in opts.items()}
    return {_ALPHABET[i]: str(v) for i, v in enumerate(list(opts)[:26])}


def _letters(ground_truth: Any, extra_info: dict, options: dict[str, str]) -> str:
    given = extra_info.get("letters")
    if given:
        return "".join(str(x).strip().upper() for x in given)
    if options:
        return "".join(sorted(options))
    if extra_info.get("num_choices"):
        return _ALPHABET[: int(extra_info["num_choices"])]
    letters = DEFAULT_LETTERS
    if isinstance(ground_truth, str):  # a gold letter beyond D widens the default set (A-J style)
        m = re.fullmatch(r"\s*\(?([A-Z])\)?[.:]?\s*", ground_truth)
        if m and m.group(1) not in letters:
            letters = _ALPHABET[: _ALPHABET.index(m.group(1)) + 1]
    return letters


def _norm_text(s: str) -> str:
    s = re.sub(r"\\(?:text|textbf|mathrm|mathbf)\{([^{}]*)\}", r"\1", s)
    s = s.replace("$", "").replace("**", "")
    return re.sub(r"\s+", " ", s).strip().strip(".").strip().casefold()


def gold_letter(ground_truth: Any, letters: str, options: dict[str, str]) -> str | None:
    """The correct letter from a letter, a 0-based index, or an option's text; None if unknown."""
    if isinstance(ground_truth, bool):
        return None
    if isinstance(ground_truth, int):
        return letters[ground_truth] if 0 <= ground_truth < len(letters) else None
    if isinstance(ground_truth, (list, tuple)) and len(ground_truth) == 1:
        return gold_letter(ground_truth[0], letters, options)
    if not isinstance(ground_truth, str):
        return None
    got = parse_choice(ground_truth, letters, options)
    if got and len(got) == 1:
        return next(iter(got))
    return None


# --------------------------------------------------------------------------------------------
# extraction
# --------------------------------------------------------------------------------------------
_UNWRAP = re.compile(r"\\(?:text|textbf|textit|mathrm|mathbf|mbox)\s*\{([^{}]*)\}")
_LEADING_WORDS = re.compile(r"^(?:(?:both|options?|choices?|letters?|answers?|is|are|:)\s*)+", re.I)


def _clean(content: str) -> str:
    c = content
    for _ in range(3):
        c = _UNWRAP.sub(r"\1", c)
    c = c.replace("\\(", "").replace("\\)", "").replace("$", "").replace("**", "").replace("__", "")
    c = c.strip().lstrip(":").strip()
    c = _LEADING_WORDS.sub("", c).strip()
    return c


def parse_choice(content: str, letters: str, options: dict[str, str] | None = None) -> set[str] | None:
    """The option letter(s) a final-answer statement names, or None if it names none."""
    c = _clean(content)
    if not c:
        return None
    m = re.fullmatch(r"[(\[]?([A-Za-z])[)\]]?[.:;!]?", c)
    if m and m.group(1).upper() in letters:
        return {m.group(1).upper()}
    item = r"[(\[]?([" + re.escape(letters) + r"])[)\]]?"
    sep = r"\s*(?:,\s*(?:and|or)?|;|\band\b|\bor\b|&|/|\+)\s*"
    multi = re.match(rf"{item}(?:{sep}{item})+\s*(?:[.;)]|$|\s+are\b)", c)
    if multi:
        found = set(re.findall(r"[" + re.escape(letters) + r"]", re.sub(r"\b(?:and|or)\b", " ", multi.group(0))))
        if found:
            return found
    lead = re.match(r"[(\[]?([" + re.escape(letters) + r"])(?:[)\]]|[.:,;]|\s|$)", c)
    if lead:
        return {lead.group(1)}
    if options:
        target = _norm_text(c)
        hits = {k for k, v in options.items() if _norm_text(v) == target and k in letters}
        if len(hits) == 1:
            return hits
    return None


def _boxed_spans(text: str) -> list[tuple[int, str]]:
    out = []
    for m in re.finditer(r"\\(?:boxed|fbox)\s*\{", text):
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth == 0:
            out.append((m.end(), text[m.end(): i - 1]))
    return out


_KEYWORD = re.compile(
    r"(?:\b(?:final|correct|best|right)\s+)?\b(?:answer|option|choice)s?\b\**\s*"
    r"(?:is|are|would\s+be|should\s+be|must\s+be|:|=)\s*\**\s*:?\s*(?P<c>[^\n]{0,120})",
    re.I,
)


def extract_choice(text: str, letters: str, options: dict[str, str] | None = None) -> set[str] | None:
    """Letters named by the last answer-like statement of ``text`` that names any option."""
    cands: list[tuple[int, str]] = []
    for m in re.finditer(r"<answer>(.*?)</answer>", text, re.S | re.I):
        cands.append((m.start(1), m.group(1)))
    cands += _boxed_spans(text)
    for m in _KEYWORD.finditer(text):
        cands.append((m.start("c"), m.group("c")))
    for _, content in sorted(cands, key=lambda x: x[0], reverse=True):
        got = parse_choice(content, letters, options)
        if got:
            return got
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    if lines:  # a response (or its last line) that is only a letter
        m = re.fullmatch(r"[(\[]?([A-Z])[)\]]?\.?", _clean(lines[-1]))
        if m and m.group(1) in letters:
            return {m.group(1)}
    return None


# --------------------------------------------------------------------------------------------
# LLM judge
# --------------------------------------------------------------------------------------------
@dataclass
class JudgeConfig:
    """An OpenAI-compatible chat endpoint used as a judge. ``url`` is the base (``.../v1``) or full URL."""

    url: str
    model: str
    api_key_env: str | None = None
    timeout: float = 30.0
    retries: int = 2
    backoff: float = 0.5
    mode: str = "free_form"  # "free_form": only free-form rows; "all": every row, multiple choice too
    max_tokens: int = 16

    @classmethod
    def from_dict(cls, d: dict) -> "JudgeConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def endpoint(self) -> str:
        u = self.url.rstrip("/")
        return u if u.endswith("/chat/completions") else u + "/chat/completions"


_JUDGE: JudgeConfig | None = None


def configure_judge(cfg: JudgeConfig | dict | None) -> None:
    """Set (or with None clear) this process's judge; workers should use env vars or extra_info."""
    global _JUDGE
    _JUDGE = JudgeConfig.from_dict(cfg) if isinstance(cfg, dict) else cfg


def judge_config(extra_info: dict) -> JudgeConfig | None:
    """The judge for a row: ``extra_info["judge"]``, else :func:`configure_judge`'s, else env, else None."""
    if isinstance(extra_info.get("judge"), dict):
        return JudgeConfig.from_dict(extra_info["judge"])
    if _JUDGE is not None:
        return _JUDGE
    url, model = os.environ.get("PRORL_STEM_JUDGE_URL"), os.environ.get("PRORL_STEM_JUDGE_MODEL")
    if not url or not model:
        return None
    env = os.environ
    return JudgeConfig(
        url=url, model=model, api_key_env=env.get("PRORL_STEM_JUDGE_API_KEY_ENV") or None,
        timeout=float(env.get("PRORL_STEM_JUDGE_TIMEOUT", 30)), retries=int(env.get("PRORL_STEM_JUDGE_RETRIES", 2)),
        mode=env.get("PRORL_STEM_JUDGE_MODE", "free_form"),
    )


_JUDGE_SYSTEM = (
    "You grade answers to science questions. Compare the response's final answer with the reference "
    "answer. Reply with exactly one word: CORRECT if they are equivalent, otherwise INCORRECT."
)


def _retryable(e: Exception) -> bool:
    if isinstance(e, urllib.error.HTTPError):
        return e.code in (408, 409, 425, 429) or e.code >= 500
    return isinstance(e, (urllib.error.URLError, TimeoutError, ConnectionError, OSError, ValueError))


def ask_judge(cfg: JudgeConfig, question: str, reference: str, response: str) -> Verdict:
    """One judged verdict; every failure (network, HTTP, timeout, unparseable reply) is ``error``."""
    endpoint = cfg.endpoint()
    if not endpoint.startswith(("http://", "https://")):
        return Verdict(0.0, Status.ERROR, f"judge url must be http(s): {cfg.url!r}")
    user = (f"Question:\n{question.strip()}\n\n" if question else "") + (
        f"Reference answer:\n{reference.strip()}\n\nResponse (final part):\n{response.strip()[-4000:]}"
    )
    body = json.dumps({
        "model": cfg.model,
        "messages": [{"role": "system", "content": _JUDGE_SYSTEM}, {"role": "user", "content": user}],
        "temperature": 0,
        "max_tokens": cfg.max_tokens,
    }).encode()
    headers = {"Content-Type": "application/json"}
    if cfg.api_key_env:
        key = os.environ.get(cfg.api_key_env)
        if not key:
            return Verdict(0.0, Status.ERROR, f"judge api key variable {cfg.api_key_env} is not set")
        headers["Authorization"] = f"Bearer {key}"
    last = ""
    attempts = 1 + max(0, int(cfg.retries))
    for attempt in range(attempts):
        if attempt:
            time.sleep(min(8.0, cfg.backoff * 2 ** (attempt - 1)))
        try:
            req = urllib.request.Request(endpoint, data=body, headers=headers, method="POST")
            with urllib.request.urlopen(req, timeout=cfg.timeout) as resp:
                data = json.loads(resp.read().decode("utf-8", "replace"))
            reply = str(data["choices"][0]["message"]["content"] or "")
        except Exception as e:  # noqa: BLE001 - every failure becomes a reason
            last = f"{type(e).__name__}: {e}"
            if isinstance(e, (KeyError, IndexError, TypeError)) or not _retryable(e):
                break
            continue
        word = reply.strip().upper()
        if re.search(r"\b(?:INCORRECT|NOT\s+CORRECT|WRONG)\b", word):
            return Verdict(0.0, Status.WRONG, "judge: INCORRECT")
        if re.search(r"\bCORRECT\b", word):
            return Verdict(1.0, Status.CORRECT, "judge: CORRECT")
        return Verdict(0.0, Status.ERROR, f"judge reply not understood: {reply[:200]!r}")
    return Verdict(0.0, Status.ERROR, f"LLM judge failed after {attempt + 1} attempt(s): {last}"[:500])


# --------------------------------------------------------------------------------------------
# verifier
# --------------------------------------------------------------------------------------------
def _question(extra_info: dict) -> str:
    q = extra_info.get("question")
    if isinstance(q, str):
        return q
    prompt = extra_info.get("prompt")
    if isinstance(prompt, str):
        return prompt
    return ""


def _free_form_final(response: str) -> str:
    tagged = re.findall(r"<answer>(.*?)</answer>", response, re.S | re.I)
    if tagged:
        return tagged[-1]
    boxed = _boxed_spans(response)
    if boxed:
        return boxed[-1][1]
    m = list(re.finditer(r"answer\s*(?:is|:)\s*([^\n]+)", response, re.I))
    return m[-1].group(1) if m else ""


def verify_stem(response: str, ground_truth: Any, extra_info: dict) -> Verdict:
    """Score a STEM response: multiple-choice letter match, or the LLM judge for free-form rows."""
    extra_info = dict(extra_info or {})
    options = _options(extra_info)
    letters = _letters(ground_truth, extra_info, options)
    answer_type = str(extra_info.get("answer_type") or "").lower().replace("-", "_")
    gold = None if answer_type == "free_form" else gold_letter(ground_truth, letters, options)
    cfg = judge_config(extra_info)
    free_form = (
        answer_type == "free_form"
        or (gold is None and not options and answer_type not in ("multiple_choice", "mc"))
        or (cfg is not None and cfg.mode == "all")
    )
    if free_form:
        reference = str(ground_truth)
        if gold is not None:
            reference = f"({gold}) {options[gold]}" if gold in options else f"option {gold}"
        if cfg is None:
            final = _free_form_final(response)
            if final and _norm_text(final) == _norm_text(reference):
                return Verdict(1.0, Status.CORRECT, "free-form answer matches the reference exactly")
            if not final.strip() and not response.strip():
                return Verdict(0.0, Status.NO_ANSWER, "empty response")
            return Verdict(0.0, Status.ERROR, "free-form answer needs the LLM judge, which is not configured")
        if not response.strip():
            return Verdict(0.0, Status.NO_ANSWER, "empty response")
        return ask_judge(cfg, _question(extra_info), reference, response)
    if gold is None:
        return Verdict(0.0, Status.ERROR, f"cannot read an option letter from ground truth {str(ground_truth)[:80]!r}")
    got = extract_choice(response, letters, options)
    if not got:
        return Verdict(0.0, Status.NO_ANSWER, f"no final option letter ({letters[0]}-{letters[-1]}) found")
    if len(got) > 1:
        return Verdict(0.0, Status.WRONG, f"answer names several options: {', '.join(sorted(got))}")
    letter = next(iter(got))
    if letter == gold:
        return Verdict(1.0, Status.CORRECT, f"chose {letter}")
    return Verdict(0.0, Status.WRONG, f"chose {letter}, expected {gold}")
