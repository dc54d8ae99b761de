"""The config machinery that knows nothing of prorl's sections: typed construction of nested
dataclasses from a plain tree (wrong types and unknown keys named, with the nearest valid key),
dotted overrides parsed as YAML, and YAML files read with one-line errors."""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A config key, value or combination is invalid."""


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp`` (ints are accepted for floats)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__} {value!r}")
        return from_tree(tp, value, key)
    if origin in (list, tuple):
        (item_tp,) = typing.get_args(tp)[:1] or (Any,)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list of {_type_name(item_tp)}, got {value!r}")
        return [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        k_tp, v_tp = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return {_coerce(k, k_tp, key): _coerce(v, v_tp, f"{key}.{k}") for k, v in value.items()}
    if origin in (typing.Union, types.UnionType):
        if type(None) in typing.get_args(tp) and (value is None or str(value).strip().lower() in ("none", "null")):
            return None  # YAML null, or none typed on the command line (YAML reads it as a string)
        for arg in typing.get_args(tp):
            try:
                return _coerce(value, arg, key)
            except ConfigError:
                pass
        raise ConfigError(f"{key}: {value!r} is not a {_type_name(tp)}")
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):  # PyYAML reads "1e-3" (no dot) as a string
        try:
            return float(value)
        except ValueError:
            raise ConfigError(f"{key}: expected float, got str {value!r}") from None
    if tp is bool and not isinstance(value, bool):
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if tp in (int, float) and isinstance(value, bool):
        raise ConfigError(f"{key}: expected {tp.__name__}, got boolean {value!r}")
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"{key}: expected {tp.__name__}, got {type(value).__name__} {value!r}")
    return value


def _unknown_key(cls: type, key: str, prefix: str) -> ConfigError:
    names = [fl.name for fl in dataclasses.fields(cls)]
    near = difflib.get_close_matches(key, names, n=1, cutoff=0.5)
    full = f"{prefix}.{key}" if prefix else key
    hint = f"; did you mean '{(prefix + '.') if prefix else ''}{near[0]}'?" if near else ""
    return ConfigError(f"unknown config key '{full}'{hint} (valid: {', '.join(names)})")


def from_tree(cls: type, data: dict, prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    fields_by_name = {fl.name: fl for fl in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in (data or {}).items():
        if key not in fields_by_name:
            raise _unknown_key(cls, str(key), prefix)
        full = f"{prefix}.{key}" if prefix else key
        v = _coerce(value, hints[key], full)
        choices = fields_by_name[key].metadata.get("choices")
        if choices and v not in choices:
            raise ConfigError(f"{full}: {v!r} is not one of {', '.join(map(str, choices))}")
        kwargs[key] = v
    return cls(**kwargs)


# --------------------------------------------------------------------------- overrides and files

def _yaml_error(e: yaml.YAMLError, text: str) -> str:
    """One line for a YAML error in ``text``: 1-based line and column, the problem, its context."""
    mark = getattr(e, "problem_mark", None)
    if isinstance(e, yaml.reader.ReaderError):  # a character YAML does not allow (no mark)
        before = text[:e.position]
        line, column = before.count("\n"), e.position - (before.rfind("\n") + 1)
        char = f"U+{e.character:04X}" if isinstance(e.character, int) else repr(e.character)
        return f"line {line + 1}, column {column + 1}: {e.reason} ({char})"
    if mark is None:
        return " ".join(str(e).split())
    problem = getattr(e, "problem", None) or "invalid YAML"
    context, ctx_mark = getattr(e, "context", None), getattr(e, "context_mark", None)
    extra = ""
    if context:
        extra = f" ({context}" + (f" started at line {ctx_mark.line + 1}, column {ctx_mark.column + 1}" if ctx_mark else "") + ")"
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}{extra}"


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"algo.eps_high=0.28"`` -> (["algo", "eps_high"], 0.28); values are parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"override {text!r}: the value is not valid YAML ({_yaml_error(e, raw)}); "
                          f"quote it if it is a string") from None
    return key.strip().split("."), value


def set_dotted(tree: dict, path: list[str], value: Any) -> None:
    node = tree
    for part in path[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[path[-1]] = value


def merge_trees(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = merge_trees(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def read_yaml(p: Path) -> Any:
    """The parsed YAML file ``p``; unreadable files and syntax errors become one-line ConfigErrors."""
    try:
        data = p.read_bytes()
    except OSError as e:
        raise ConfigError(f"{p}: cannot read the config file ({e.strerror or e})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise ConfigError(f"{p}: line {line} is not UTF-8 text ({e.reason})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: YAML syntax error at {_yaml_error(e, text)}") from None
