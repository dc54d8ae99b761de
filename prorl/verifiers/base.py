"""The verdict type and the verifier registry.

A verifier is a plain module-level function ``fn(response, ground_truth, extra_info) -> Verdict``
so that it can be looked up by name inside worker processes (no import-time registration).
The registry maps a *domain* (``math``, ``code``, ``stem``, ``logic``, ``ifeval``, ``builtin``)
to ``"module:function"``; a row's ``data_source`` is resolved to a domain by exact alias,
then by its prefix before ``/``, then by the row's ``ability``.
"""

from __future__ import annotations

import difflib
import enum
import importlib
from dataclasses import dataclass
from typing import Any, Callable

VerifierFn = Callable[[str, Any, dict], "Verdict"]


class Status(str, enum.Enum):
    """Why a response got its score."""

    CORRECT = "correct"
    WRONG = "wrong"
    NO_ANSWER = "no_answer"
    ERROR = "error"
    TIMEOUT = "timeout"
    # not a judgement of the response: our infrastructure failed to score it (a verifier worker
    # died on every retry, the pool closed, every reward replica unreachable). The trainer
    # excludes such samples from the loss and the score metrics and counts them apart.
    INFRA_ERROR = "infra_error"


@dataclass(frozen=True)
class Verdict:
    """A verifier's judgement: ``score`` in [0, 1], a ``status`` and a human-readable ``reason``."""

    score: float
    status: Status
    reason: str = ""

    def __post_init__(self) -> None:
        if not 0.0 <= float(self.score) <= 1.0:
            raise ValueError(f"Verdict score must be in [0, 1], got {self.score}")
        object.__setattr__(self, "status", Status(self.status))

    def to_dict(self) -> dict:
        return {"score": float(self.score), "status": self.status.value, "reason": self.reason}

    @classmethod
    def from_dict(cls, d: dict) -> "Verdict":
        return cls(float(d["score"]), Status(d["status"]), str(d.get("reason", "")))


# domain -> "module:function"
_DOMAINS: dict[str, str] = {
    "builtin": "prorl.verifiers.builtin:verify_builtin",
    "math": "prorl.verifiers.math:verify_math",
    "code": "prorl.verifiers.code:verify_code",
    "stem": "prorl.verifiers.stem:verify_stem",
    "logic": "prorl.verifiers.logic:verify_logic",
    "ifeval": "prorl.verifiers.ifeval:verify_ifeval",
}

# data_source (exact, case-insensitive) -> domain. Prefixes before '/' are tried too.
_SOURCE_ALIASES: dict[str, str] = {
    "builtin": "builtin",
    # math
    "simplelr_qwen": "math", "lighteval/math": "math", "digitallearninggmbh/math-lighteval": "math",
    "openai/gsm8k": "math", "gsm8k": "math", "math": "math", "math500": "math", "aime24": "math",
    "aime25": "math", "aime": "math", "amc23": "math", "amc": "math", "deepscaler": "math",
    # code
    "humaneval": "code", "openai_humaneval": "code", "mbpp": "code", "apps": "code", "taco": "code",
    "codecontests": "code", "livecodebench": "code", "eurus": "code", "code": "code",
    # stem
    "gpqa": "stem", "stem": "stem", "scp": "stem",
    # logic puzzles
    "reasoning_gym": "logic", "reasoning-gym": "logic", "hitori": "logic", "logic": "logic",
    # instruction following
    "ifeval": "ifeval", "google/ifeval": "ifeval",
}

_CACHE: dict[str, VerifierFn] = {}

OUT_OF_MEMORY = "MemoryError"  # how a verdict's reason starts when verification ran out of memory


def register(domain: str, target: str | VerifierFn, *, aliases: tuple[str, ...] = ()) -> None:
    """Register (or replace) a domain's verifier, given as ``"module:function"`` or a function."""
    if callable(target):
        _CACHE[domain] = target
        _DOMAINS[domain] = f"{target.__module__}:{target.__qualname__}"
    else:
        _DOMAINS[domain] = target
        _CACHE.pop(domain, None)
    for a in (domain, *aliases):
        _SOURCE_ALIASES[a.lower()] = domain


def known_domains() -> list[str]:
    return sorted(_DOMAINS)


def resolve_domain(data_source: str | None, ability: str | None = None) -> str:
    """Map a row's ``data_source`` (falling back to ``ability``) to a registered domain."""
    candidates: list[str] = []
    if data_source:
        ds = data_source.lower()
        candidates += [ds, ds.split("/", 1)[0], ds.rsplit("/", 1)[-1]]
    if ability:
        candidates.append(ability.lower())
    for c in candidates:
        if c in _SOURCE_ALIASES:
            return _SOURCE_ALIASES[c]
        if c in _DOMAINS:
            return c
    names = sorted(set(_SOURCE_ALIASES) | set(_DOMAINS))
    near = difflib.get_close_matches((data_source or ability or "").lower(), names, n=1)
    hint = f" (nearest known: {near[0]!r})" if near else ""
    raise KeyError(
        f"no verifier for data_source={data_source!r}, ability={ability!r}{hint}; "
        f"known domains: {', '.join(known_domains())}"
    )


def get_verifier(domain: str) -> VerifierFn:
    """Import (once per process) and return the verifier function of ``domain``."""
    fn = _CACHE.get(domain)
    if fn is None:
        if domain not in _DOMAINS:
            raise KeyError(f"unknown verifier domain {domain!r}; known: {', '.join(known_domains())}")
        mod_name, fn_name = _DOMAINS[domain].split(":")
        fn = getattr(importlib.import_module(mod_name), fn_name)
        _CACHE[domain] = fn
    return fn


def strip_thinking(response: str) -> str:
    """Return the text after the last ``</think>`` (reasoning models), or the response unchanged."""
    idx = response.rfind("</think>")
    return response[idx + len("</think>"):] if idx >= 0 else response


def malformed_reason(data_source: Any, ability: Any, response: Any, extra_info: Any) -> str | None:
    """Why an item cannot be verified (wrong field types), or None: one clear line, not a traceback.

    ``ground_truth`` may legitimately be None (some Reasoning Gym tasks check via metadata)."""
    if not isinstance(response, str):
        return f"malformed item: 'response' must be a string, got {type(response).__name__}"
    if extra_info is not None and not isinstance(extra_info, dict):
        return f"malformed item: 'extra_info' must be an object, got {type(extra_info).__name__}"
    for name, v in (("data_source", data_source), ("ability", ability)):
        if v is not None and not isinstance(v, str):
            return f"malformed item: '{name}' must be a string, got {type(v).__name__}"
    if not data_source and not ability:
        return "malformed item: neither 'data_source' nor 'ability' is given"
    return None


def verify_one(
    data_source: str | None,
    ability: str | None,
    response: str,
    ground_truth: Any,
    extra_info: dict | None = None,
    *,
    strip_think: bool = True,
) -> Verdict:
    """Score one response in this process. Exceptions become an ``error`` verdict, never a crash."""
    bad = malformed_reason(data_source, ability, response, extra_info)
    if bad is not None:
        return Verdict(0.0, Status.ERROR, bad)
    try:
        fn = get_verifier(resolve_domain(data_source, ability))
        text = strip_thinking(response) if strip_think else response
        return fn(text, ground_truth, dict(extra_info or {}, data_source=data_source))
    except MemoryError:  # the worker's memory cap (RLIMIT_AS) was hit; the pool names the cap
        return Verdict(0.0, Status.ERROR, f"{OUT_OF_MEMORY}: the verifier ran out of memory on this response")
    except Exception as e:  # a broken verifier must never stall or crash the trainer
        return Verdict(0.0, Status.ERROR, f"{type(e).__name__}: {e}"[:500])
