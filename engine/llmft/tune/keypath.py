"""Config keys by path: `finetuning_config.peft_conf.peft_kwargs.r`, `...datasets[0].sampling_weight`.

A search-space parameter names the key it sets by this path, the same spelling as `helm --set`. The
path is checked against the engine's config schema (so a typo fails before any trial starts, with
"did you mean"), and a trial's config is the base config with the sampled values set at their paths.
"""

from __future__ import annotations

import copy
import difflib
import itertools
import re
from typing import Any

_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def parse(path: str) -> tuple[str | int, ...]:
    """`a.b[0].c` -> ("a", "b", 0, "c"); ValueError when the spelling is not a key path."""
    parts: list[str | int] = []
    position = 0
    text = path.strip()
    while position < len(text):
        if parts and text[position] == ".":
            position += 1
        match = _PART.match(text, position)
        if not match:
            raise ValueError(f"not a key path (keys joined by dots, list items as [n]): {path!r}")
        parts.append(match.group(1) if match.group(1) is not None else int(match.group(2)))
        position = match.end()
    if not parts or isinstance(parts[0], int):
        raise ValueError(f"not a key path (keys joined by dots, list items as [n]): {path!r}")
    return tuple(parts)


def unknown_part(schema: dict, parts: tuple) -> str | None:
    """Why `parts` is not a leaf key of `schema` (a self-contained JSON Schema), or None when it is."""
    node = schema
    for depth, part in enumerate(parts):
        here = ".".join(str(p) for p in parts[:depth]) or "the config"
        options = [node] + [o for o in node.get("anyOf", []) if isinstance(o, dict)]
        if isinstance(part, int):
            arrays = [o for o in options if o.get("type") == "array"]
            if not arrays:
                return f"{here} is not a list, so [{part}] does not exist"
            node = arrays[0].get("items", {})
            continue
        mappings = [o for o in options if o.get("properties")]
        for option in mappings:
            if part in option["properties"]:
                node = option["properties"][part]
                break
        else:
            allowed = [key for option in mappings for key in option["properties"]]
            if not allowed:
                return f"{here} has no keys below it, so {part!r} does not exist"
            close = difflib.get_close_matches(part, allowed, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]}? " if close else ""
            return f"{part!r} is not a key of {here} ({hint}allowed keys: {', '.join(allowed)})"
    if any(o.get("properties") for o in [node] + node.get("anyOf", [])):
        return "names a whole section; search one of its keys"
    return None


def get(data: Any, parts: tuple, default: Any = None) -> Any:
    for part in parts:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return default
    return data


def with_values(data: dict, values: dict[tuple, Any]) -> dict:
    """A deep copy of `data` with each path set (missing mappings created; list items must exist)."""
    result = copy.deepcopy(data)
    for parts, value in values.items():
        node = result
        for part, following in itertools.pairwise(parts):
            if isinstance(part, int):
                node = node[part]
                continue
            if not isinstance(node.get(part), (dict, list)):
                node[part] = [] if isinstance(following, int) else {}
            node = node[part]
        node[parts[-1]] = value
    return result


def leaf_pattern(schemas: list[dict], prefix: str) -> str:
    """A regular expression matching every leaf key path of the schemas (list items as `[n]`), after `prefix`.

    The llm-tune chart's values.schema.json uses it so an unknown key path fails at `helm template` too.
    """
    found: set[str] = set()

    def walk(node: dict, path: str) -> None:
        options = [node] + [o for o in node.get("anyOf", []) if isinstance(o, dict)]
        children = [(key, child) for option in options for key, child in option.get("properties", {}).items()]
        arrays = [option.get("items", {}) for option in options if option.get("type") == "array"]
        leaf = not children
        for key, child in children:
            walk(child, f"{path}\\.{re.escape(key)}")
        for items in arrays:
            if any(o.get("properties") for o in [items] + items.get("anyOf", [])):
                walk(items, f"{path}\\[[0-9]+\\]")
        if leaf:
            found.add(path)

    for schema in schemas:
        walk(schema, re.escape(prefix))
    return "^(" + "|".join(sorted(found)) + ")$"
