"""YAML documents validated against field specs, every error naming file, line and field.

Generic machinery, shared by scenario and sweep files: `Doc` remembers the line of every key, `fields` checks a
mapping against a spec of ``name: (types, required, default, check)`` where ``check(value)`` returns an error
message or None. Imports nothing else of the testbed, so fault and check modules can declare their fields with it.
"""

from __future__ import annotations

import math

import yaml

from ..errors import ScenarioError

NUM = (int, float)


def positive(v):
    return None if v > 0 else "must be > 0"


def non_negative(v):
    return None if v >= 0 else "must be >= 0"


def probability(v):
    return None if 0 <= v <= 1 else "must be between 0 and 1"


def one_of(*choices):
    return lambda v: None if v in choices else f"must be one of {', '.join(map(str, choices))}"


def in_range(lo, hi):
    return lambda v: None if lo <= v <= hi else f"must be {lo:,}..{hi:,}"


class Doc:
    """A YAML document converted to plain values, remembering the line of every key."""

    def __init__(self, file: str, text: str) -> None:
        self.file = file
        self.lines: dict[tuple, int] = {}
        try:
            node = yaml.compose(text)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            raise ScenarioError(file, mark.line + 1 if mark else None, "yaml",
                                f"not valid YAML: {getattr(e, 'problem', e)}") from None
        if node is None:
            raise ScenarioError(file, 1, "scenario", "the file is empty")
        self.value = self._convert(node, ())

    def _convert(self, node, path):
        self.lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            out = {}
            for k, v in node.value:
                if not isinstance(k, yaml.ScalarNode):  # `{{at: 2}}`: a mapping (or list) used as a key
                    raise ScenarioError(self.file, k.start_mark.line + 1, _field(path),
                                        "a key must be a plain name, not a mapping or a list (doubled braces?)")
                key = k.value
                if key in out:
                    raise ScenarioError(self.file, k.start_mark.line + 1, ".".join(map(str, path + (key,))),
                                        "duplicate key")
                self.lines[path + (key,)] = k.start_mark.line + 1
                out[key] = self._convert(v, path + (key,))
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self._convert(v, path + (i,)) for i, v in enumerate(node.value)]
        return yaml.safe_load(yaml.serialize(node))

    def line(self, path: tuple) -> int | None:
        for n in range(len(path), -1, -1):
            if path[:n] in self.lines:
                return self.lines[path[:n]]
        return None

    def error(self, path: tuple, message: str) -> ScenarioError:
        return ScenarioError(self.file, self.line(path), _field(path), message)


def _field(path: tuple) -> str:
    """A path as the field it names: ``timeline[3].node``."""
    return "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i else p) for i, p in enumerate(path)) or "scenario"


def type_name(types) -> str:
    types = types if isinstance(types, tuple) else (types,)
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false", list: "a list",
             dict: "a mapping"}
    return " or ".join(dict.fromkeys(names[t] for t in types))


def fields(doc: Doc, value, path: tuple, spec: dict) -> dict:
    """Validate mapping VALUE at PATH against SPEC; returns it with defaults filled in."""
    if not isinstance(value, dict):
        raise doc.error(path, "must be a mapping")
    unknown = [k for k in value if k not in spec]
    if unknown:
        raise doc.error(path + (unknown[0],), f"unknown key (allowed: {', '.join(spec)})")
    out = {}
    for name, (types, required, default, check) in spec.items():
        if name not in value:
            if required:
                raise doc.error(path, f"missing required key '{name}'")
            if default is not None:
                out[name] = default
            continue
        v = value[name]
        ok = isinstance(v, types) and not (isinstance(v, bool) and bool not in (
            types if isinstance(types, tuple) else (types,)))
        if not ok or (isinstance(v, float) and not math.isfinite(v)):
            raise doc.error(path + (name,), f"must be {type_name(types)}, got {v!r}")
        problem = check(v) if check else None
        if problem:
            raise doc.error(path + (name,), f"{problem}, got {v!r}")
        out[name] = v
    return out
