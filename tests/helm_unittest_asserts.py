"""helm-unittest's assertion types, on parsed documents: the validators of the runner in tests/helm_unittest.py.

Each validator follows the plugin's own (helm-unittest 1.1, pkg/unittest/validators) rules, quirks included, so
that a verdict here is the plugin's verdict:

- a validator runs on the documents selected in one template; with none selected it fails, or passes under
  `not` (antonyms such as `notEqual` are `equal` with `not: true`);
- a path that selects nothing fails, except under `not`, where it passes (`notExists`, `isNotNullOrEmpty`...);
- `equal` compares strings after removing spaces before line ends and leading newlines, values with Go's
  reflect.DeepEqual over YAML decoded as yaml.v3 does (1 and 1.0 differ; `on` is a string, `010` is 8; a key
  given twice is an error);
- patterns are Go's RE2: `$` ends the text (not a final line), and lookarounds or backreferences are refused;
- `greaterOrEqual` / `lessOrEqual` need the same type on both sides (int, float or string); the plugin's
  `notGreaterOrEqual` passes whenever the types match (a bug of the plugin, reproduced here);
- `isType` names Go's types: string, int, float64, bool, map[string]interface {}, []interface {};
- `matchSnapshot` compares with the suite's `__snapshot__/<suite file>.snap`; a snapshot not recorded yet passes
  (the plugin records it on that first run; this runner does not write files, and tests/test_chart_suites.py
  fails a chart suite whose snapshot is missing).

Paths use helm-unittest's JSONPath syntax (vmware-labs/yaml-jsonpath), the subset below: `a.b[0].c`,
`a["dotted.key"]`, `a[*]`, `a.*`, filters `[?(@.name == "x")]` / `!=` / `[?(@.name)]` (on a list: its matching
items; on a mapping: the mapping itself when it matches). Other syntax fails the suite loudly.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import yaml

RAW = "raw"  # the key under which a text template (NOTES.txt) or a failed template's message is stored


class SuiteError(Exception):
    """A suite this runner cannot run as written: malformed, or uses something it does not implement."""


# --------------------------------------------------------------------------------------------------
# YAML as Go's yaml.v3 reads it (the YAML 1.2 core schema): `on`/`yes` stay strings, dates stay strings.
# --------------------------------------------------------------------------------------------------


class Yaml12Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
    """PyYAML's safe loader (libyaml's parser when present) with YAML 1.2 core-schema scalars, as helm-unittest
    decodes suites and manifests."""


Yaml12Loader.yaml_implicit_resolvers = {}
for _tag, _pattern, _first in [
    ("tag:yaml.org,2002:bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
    ("tag:yaml.org,2002:int", r"^[-+]?(?:[0-9][0-9_]*|0[xX][0-9a-fA-F_]+|0[oO][0-7_]+|0[bB][01_]+)$", "-+0123456789"),
    (
        "tag:yaml.org,2002:float",
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
        "-+0123456789.",
    ),
    ("tag:yaml.org,2002:null", r"^(?:~|null|Null|NULL|)$", ["~", "n", "N", ""]),
    ("tag:yaml.org,2002:merge", r"^(?:<<)$", "<"),
]:
    Yaml12Loader.add_implicit_resolver(_tag, re.compile(_pattern), list(_first))


def _construct_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int | float:
    """As yaml.v3 (Go's strconv.ParseInt with base 0): underscores dropped, 0x/0o/0b prefixes, and a leading 0
    meaning octal; digits that are not octal after a leading 0 make it a float, as there."""
    text = loader.construct_scalar(node).replace("_", "")
    sign, body = (-1, text[1:]) if text.startswith("-") else (1, text.lstrip("+"))
    prefixes = {"0x": 16, "0o": 8, "0b": 2}
    if body[:2].lower() in prefixes:
        return sign * int(body[2:], prefixes[body[:2].lower()])
    if len(body) > 1 and body.startswith("0"):
        return sign * int(body, 8) if re.fullmatch(r"[0-7]+", body) else float(text)
    return sign * int(body)


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict:
    """yaml.v3 refuses a key given twice in one mapping (PyYAML would keep the last silently)."""
    loader.flatten_mapping(node)
    seen: dict = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"mapping key {key!r} already defined at line {seen[key] + 1}", key_node.start_mark
            )
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=True)


Yaml12Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)
Yaml12Loader.add_constructor("tag:yaml.org,2002:map", _construct_mapping)


def load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=Yaml12Loader)


def load_yaml_all(text: str) -> list[Any]:
    return list(yaml.load_all(text, Loader=Yaml12Loader))


def dump_yaml(value: Any) -> str:
    """Close to Go yaml.v3's encoding (sorted keys, indent 2, no document end marker after a scalar)."""
    text = yaml.safe_dump(value, default_flow_style=False, sort_keys=True, allow_unicode=True, indent=2)
    return text[: -len("...\n")] if text.endswith("\n...\n") else text


def go_regex(pattern: str) -> re.Pattern:
    """Compile a Go (RE2) pattern: outside multi-line mode Go's `$` matches only at the very end of the text,
    where Python's also matches before a final newline."""
    if not isinstance(pattern, str) or not pattern:
        raise SuiteError(f"pattern must be a non-empty string, got {pattern!r}")
    if re.search(r"\(\?<?[=!]|\\[1-9]", pattern):
        raise SuiteError(f"pattern {pattern!r}: lookarounds and backreferences are not Go (RE2) syntax")
    translated, in_class, i = [], False, 0
    multiline = re.match(r"^\(\?[a-zA-Z]*m", pattern) is not None
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            translated.append(r"\Z" if pattern[i : i + 2] == r"\z" else pattern[i : i + 2])
            i += 2
            continue
        if char == "[":
            in_class = True
        elif char == "]":
            in_class = False
        translated.append(r"\Z" if char == "$" and not in_class and not multiline else char)
        i += 1
    try:
        return re.compile("".join(translated))
    except re.error as error:
        raise SuiteError(f"pattern {pattern!r} is not a valid regular expression: {error}") from None


# --------------------------------------------------------------------------------------------------
# Values: Go's reflect.DeepEqual and type names over YAML-decoded data.
# --------------------------------------------------------------------------------------------------


def go_type(value: Any) -> str:
    """The name Go's reflect gives the decoded value ('' for null), as `isType` compares it."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float64"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict):
        return "map[string]interface {}"
    if isinstance(value, (list, tuple)):
        return "[]interface {}"
    return type(value).__name__


def deep_equal(a: Any, b: Any) -> bool:
    if go_type(a) != go_type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(deep_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(deep_equal(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def _is_subset(actual: dict, content: dict) -> bool:
    """validateSubset: every key of `content` deep-equals the same key of `actual` (a missing key is null)."""
    return all(deep_equal(actual.get(key), value) for key, value in content.items())


def uniform(value: Any) -> str:
    """The plugin's uniformContent: spaces before line ends removed, leading newlines dropped."""
    text = value if isinstance(value, str) else ("<nil>" if value is None else str(value))
    return re.sub(r"(?m)[ ]+\r?\n", "\n", text).lstrip("\n")


def strip_leading_newlines(value: Any) -> Any:
    """What the plugin does to every string before writing a snapshot."""
    if isinstance(value, str):
        return value.lstrip("\n")
    if isinstance(value, dict):
        return {k: strip_leading_newlines(v) for k, v in value.items()}
    if isinstance(value, list):
        return [strip_leading_newlines(v) for v in value]
    return value


# --------------------------------------------------------------------------------------------------
# Paths.
# --------------------------------------------------------------------------------------------------

_LITERAL = (
    r"""(?:"(?P<dq>(?:[^"\\]|\\.)*)"|'(?P<sq>(?:[^'\\]|\\.)*)'"""
    r"""|(?P<num>-?\d+(?:\.\d+)?)|(?P<bool>true|false)|(?P<null>null))"""
)
_FILTER = re.compile(r"\?\(\s*@(?P<sub>(?:\.[^\s=!)]+|\[[^\]]*\])*)\s*(?:(?P<op>==|!=)\s*" + _LITERAL + r")?\s*\)$")


def _literal(match: re.Match) -> Any:
    if match.group("dq") is not None:
        return bytes(match.group("dq"), "utf-8").decode("unicode_escape")
    if match.group("sq") is not None:
        return bytes(match.group("sq"), "utf-8").decode("unicode_escape")
    if match.group("num") is not None:
        text = match.group("num")
        return float(text) if "." in text else int(text)
    if match.group("bool") is not None:
        return match.group("bool") == "true"
    return None


def parse_path(path: str) -> list[tuple[str, Any]]:
    """Split a path into steps: ("key", name), ("index", n), ("all", None), ("filter", (subpath, op, value))."""
    steps: list[tuple[str, Any]] = []
    text = path.strip()
    text = text.removeprefix("$")
    i = 0
    expect_key = True  # at the start, a bare key may follow without a dot
    while i < len(text):
        char = text[i]
        if char == ".":
            if text[i + 1 : i + 2] == ".":
                raise SuiteError(f"path {path!r}: recursive descent '..' is not supported by this runner")
            i += 1
            expect_key = True
            continue
        if char == "[":
            end = _closing_bracket(text, i, path)
            steps.append(_bracket_step(text[i + 1 : end].strip(), path))
            i = end + 1
            expect_key = False
            continue
        if not expect_key:
            raise SuiteError(f"path {path!r}: expected '.' or '[' at position {i}")
        j = i
        while j < len(text) and text[j] not in ".[":
            j += 1
        name = text[i:j]
        steps.append(("all", None) if name == "*" else ("key", name))
        i = j
        expect_key = False
    return steps


def _closing_bracket(text: str, start: int, path: str) -> int:
    depth, quote = 0, None
    for k in range(start, len(text)):
        char = text[k]
        if quote:
            if char == quote:
                quote = None
        elif char in "\"'":
            quote = char
        elif char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
            if depth == 0:
                return k
    raise SuiteError(f"path {path!r}: unclosed '['")


def _bracket_step(inner: str, path: str) -> tuple[str, Any]:
    if inner == "*":
        return ("all", None)
    if re.fullmatch(r"\d+", inner):
        return ("index", int(inner))
    quoted = re.fullmatch(r"""(["'])(.*)\1""", inner)
    if quoted:
        return ("key", quoted.group(2))
    filt = _FILTER.match(inner)
    if filt:
        sub = parse_path(filt.group("sub").lstrip(".")) if filt.group("sub") else []
        op = filt.group("op")
        return ("filter", (sub, op, _literal(filt) if op else None))
    raise SuiteError(
        f"path {path!r}: '[{inner}]' is not supported by this runner "
        '(use [N], [*], ["key"] or [?(@.field == "value")])'
    )


def find(document: Any, path: str) -> list[Any]:
    """Every value `path` selects in `document` (empty when nothing matches); '' selects the document."""
    if path == "":
        return [document]
    return _walk([document], parse_path(path))


def _matches(item: Any, filt: tuple) -> bool:
    sub, op, literal = filt
    values = _walk([item], sub)
    if op is None:
        return bool(values)
    if op == "==":
        return any(deep_equal(v, literal) for v in values)
    return any(not deep_equal(v, literal) for v in values)


def _walk(nodes: list[Any], steps: list[tuple[str, Any]]) -> list[Any]:
    for kind, arg in steps:
        found: list[Any] = []
        for node in nodes:
            if kind == "key":
                if isinstance(node, dict) and arg in node:
                    found.append(node[arg])
            elif kind == "index":
                if isinstance(node, list) and arg < len(node):
                    found.append(node[arg])
            elif kind == "all":
                if isinstance(node, list):
                    found.extend(node)
                elif isinstance(node, dict):
                    found.extend(node.values())
            elif kind == "filter":
                if isinstance(node, list):
                    found.extend(item for item in node if _matches(item, arg))
                elif isinstance(node, dict) and _matches(node, arg):
                    found.append(node)
        nodes = found
    return nodes


# --------------------------------------------------------------------------------------------------
# Validators.
# --------------------------------------------------------------------------------------------------


@dataclass
class Snapshots:
    """The snapshot cache of one suite file for one test job: `compare` numbers the calls as the plugin does."""

    cached: dict
    test: str
    counter: int = 0
    new: int = 0
    fresh: dict = field(default_factory=dict)  # call number -> content of a snapshot not recorded yet

    def compare(self, content: Any, match: str = "", not_match: str = "") -> tuple[bool, str]:
        self.counter += 1
        content = strip_leading_newlines(content)
        recorded = (self.cached.get(self.test) or {}).get(self.counter)
        if match or not_match:
            text = dump_yaml(content)
            if match and not go_regex(match).search(text):
                return False, f"pattern {match!r} not found in snapshot"
            if not_match and go_regex(not_match).search(text):
                return False, f"pattern {not_match!r} should not be in snapshot"
            return True, ""
        if recorded is None:
            self.new += 1
            self.fresh[self.counter] = dump_yaml(content)
            return True, ""
        if deep_equal(load_yaml(recorded), content):
            return True, ""
        return False, f"expected to match snapshot {self.counter}:\n{recorded}\nactual:\n{dump_yaml(content)}"


@dataclass
class Context:
    docs: list[dict]  # every document the template rendered
    selected: list[dict]  # the documents selected by documentIndex / documentSelector
    negative: bool
    render_error: str | None  # an error not attributed to a template (schema, release name, values)
    snapshots: Snapshots | None = None


Result = tuple[bool, list[str]]
Validator = Callable[[dict, Context], Result]


def _each_document(params: dict, ctx: Context, check: Callable[[dict], Result]) -> Result:
    """All selected documents must pass `check`; with none selected: fail, or pass under `not`."""
    if not ctx.selected:
        return (True, []) if ctx.negative else (False, ["no manifest found"])
    passed, messages = True, []
    for index, document in enumerate(ctx.selected):
        ok, why = check(document)
        if not ok:
            passed = False
            messages.append(f"DocumentIndex {index}:")
            messages.extend(f"  {line}" for text in why for line in str(text).splitlines())
    return passed, messages


def _each_value(path: str, ctx: Context, check: Callable[[Any], Result]) -> Callable[[dict], Result]:
    """For one document: every value at `path` must pass; a path selecting nothing fails unless under `not`."""

    def run(document: dict) -> Result:
        actuals = find(document, path)
        if not actuals:
            return (True, []) if ctx.negative else (False, [f"unknown path {path}"])
        passed, messages = True, []
        for actual in actuals:
            ok, why = check(actual)
            passed, messages = passed and ok, messages + why
        return passed, messages

    return run


def _decode(text: str, params: dict) -> str:
    return base64.b64decode(text).decode() if params.get("decodeBase64") else text


def v_equal(params: dict, ctx: Context) -> Result:
    expected = params.get("value")

    def check(actual: Any) -> Result:
        if isinstance(actual, str):
            try:
                actual = uniform(_decode(actual, params))
            except ValueError:
                return False, [f"unable to decode base64 expected content {actual}"]
        if deep_equal(expected, actual) == ctx.negative:
            verb = "NOT to equal" if ctx.negative else "to equal"
            return False, [
                f"path {params.get('path', '')}: expected {verb}:",
                dump_yaml(expected),
                "actual:",
                dump_yaml(actual),
            ]
        return True, []

    return _each_document(params, ctx, _each_value(params.get("path", ""), ctx, check))


def v_exists(params: dict, ctx: Context) -> Result:
    path = params.get("path", "")

    def check(document: dict) -> Result:
        if bool(find(document, path)) == ctx.negative:
            return False, [f"path {path} expected to {'NOT ' if ctx.negative else ''}exist"]
        return True, []

    return _each_document(params, ctx, check)


def _is_empty(value: Any) -> bool:
    """Go's zero value: null, false, 0, "", and empty lists and maps."""
    if isinstance(value, (list, dict, str)):
        return len(value) == 0
    return value is None or value is False or (not isinstance(value, bool) and value == 0)


def v_null_or_empty(params: dict, ctx: Context) -> Result:
    def check(actual: Any) -> Result:
        if _is_empty(actual) == ctx.negative:
            return False, [f"expected {'NOT ' if ctx.negative else ''}to be null or empty, got:", dump_yaml(actual)]
        return True, []

    return _each_document(params, ctx, _each_value(params.get("path", ""), ctx, check))


def v_contains(params: dict, ctx: Context) -> Result:
    content, count, any_ = params.get("content"), params.get("count"), bool(params.get("any"))
    if count is not None and (isinstance(count, bool) or not isinstance(count, int)):
        raise SuiteError(f"contains: count must be an integer, got {count!r}")

    def check(actual: Any) -> Result:
        if not isinstance(actual, list):
            return False, [f"expect '{params.get('path')}' to be an array, got:", dump_yaml(actual)]
        matches = 0
        for item in actual:
            if any_ and isinstance(item, dict) and isinstance(content, dict):
                matches += _is_subset(item, content)
            elif (not any_ or not isinstance(item, dict) or not isinstance(content, dict)) and deep_equal(
                item, content
            ):
                matches += 1
        found = matches > 0
        ok = (found if count is None else found and matches == count) != ctx.negative
        if not ok:
            wanted = f"{'NOT ' if ctx.negative else ''}to contain" + (f" {count} time(s)" if count is not None else "")
            return False, [f"expected {wanted} (found {matches}):", dump_yaml([content]), "actual:", dump_yaml(actual)]
        return True, []

    return _each_document(params, ctx, _each_value(params.get("path", ""), ctx, check))


def v_subset(params: dict, ctx: Context) -> Result:
    content = params.get("content")

    def check(actual: Any) -> Result:
        if not isinstance(actual, dict) or not isinstance(content, dict):
            return False, [f"expect '{params.get('path')}' to be an object, got:", dump_yaml(actual)]
        if _is_subset(actual, content) == ctx.negative:
            return False, [
                f"expected {'NOT ' if ctx.negative else ''}to contain:",
                dump_yaml(content),
                "actual:",
                dump_yaml(actual),
            ]
        return True, []

    return _each_document(params, ctx, _each_value(params.get("path", ""), ctx, check))


def v_type(params: dict, ctx: Context) -> Result:
    expected = params.get("type")

    def check(actual: Any) -> Result:
        if (go_type(actual) == expected) == ctx.negative:
            negation = "NOT " if ctx.negative else ""
            return False, [f"expected {negation}to be of type {expected}, got {go_type(actual)!r}"]
        return True, []

    return _each_document(params, ctx, _each_value(params.get("path", ""), ctx, check))


def v_order(comparison: str) -> Validator:
    """greaterOrEqual / lessOrEqual (operator_validator.go), including its handling of `not`."""

    def validator(params: dict, ctx: Context) -> Result:
        expected = params.get("value")

        def check(document: dict) -> Result:
            actuals = find(document, params.get("path", ""))
            if not actuals:
                return (True, []) if ctx.negative else (False, [f"unknown path '{params.get('path')}'"])
            passed, messages = False, []
            for index, actual in enumerate(actuals):
                if go_type(actual) != go_type(expected):
                    messages.append(f"actual {go_type(actual)!r} and expected {go_type(expected)!r} types do not match")
                    continue  # the plugin leaves the verdict as it was
                if go_type(expected) not in ("string", "int", "float64"):
                    ok = False
                elif comparison == "greater":
                    ok = actual >= expected or ctx.negative
                else:
                    ok = (actual <= expected) != ctx.negative
                if not ok:
                    messages.append(f"the actual '{actual}' is not {comparison} or equal to the expected '{expected}'")
                passed = ok if index == 0 else passed and ok
            return passed, messages

        return _each_document(params, ctx, check)

    return validator


def v_match_regex(params: dict, ctx: Context) -> Result:
    pattern = go_regex(params.get("pattern"))

    def check(actual: Any) -> Result:
        if not isinstance(actual, str):
            return False, [f"expect '{params.get('path')}' to be a string, got:", dump_yaml(actual)]
        try:
            text = _decode(actual, params)
        except ValueError:
            return False, [f"unable to decode base64 expected content {actual}"]
        if bool(pattern.search(text)) == ctx.negative:
            return False, [f"expected {'NOT ' if ctx.negative else ''}to match {pattern.pattern!r}:", text]
        return True, []

    return _each_document(params, ctx, _each_value(params.get("path", ""), ctx, check))


def v_raw(matcher: str) -> Validator:
    """equalRaw / matchRegexRaw: on the text of a NOTES.txt (or any text) template."""

    def validator(params: dict, ctx: Context) -> Result:
        if matcher == "regex":
            pattern = go_regex(params.get("pattern"))
            test, label = (lambda text: bool(pattern.search(text))), f"match {pattern.pattern!r}"
        else:
            value = params.get("value")
            test, label = (lambda text: text == value), f"equal {value!r}"

        def check(document: dict) -> Result:
            text = uniform(document.get(RAW))
            if test(text) == ctx.negative:
                return False, [f"expected {'NOT ' if ctx.negative else ''}to {label}:", text]
            return True, []

        return _each_document(params, ctx, check)

    return validator


def v_field_is(field_name: str) -> Validator:
    """isKind / isAPIVersion."""

    def validator(params: dict, ctx: Context) -> Result:
        def check(document: dict) -> Result:
            actual = document.get(field_name)
            if (isinstance(actual, str) and actual == params.get("of")) == ctx.negative:
                wanted = f"{'NOT ' if ctx.negative else ''}to be {params.get('of')}"
                return False, [f"expected {field_name} {wanted}, got {actual!r}"]
            return True, []

        return _each_document(params, ctx, check)

    return validator


def v_has_documents(params: dict, ctx: Context) -> Result:
    actual = len(ctx.selected if params.get("filterAware") else ctx.docs)
    if (actual == params.get("count", 0)) != ctx.negative:
        return True, []
    negation = "NOT " if ctx.negative else ""
    return False, [f"expected documents count {negation}to be {params.get('count')}, got {actual}"]


def v_contains_document(params: dict, ctx: Context) -> Result:
    """containsDocument: without `any`, every selected document must match; with `any`, one is enough."""

    def matches(doc: dict) -> bool:
        for key, wanted in (("kind", params.get("kind", "")), ("apiVersion", params.get("apiVersion", ""))):
            if isinstance(doc.get(key), str) and doc[key] != wanted:
                return False
        for key in ("name", "namespace"):
            wanted = params.get(key)
            if wanted:
                found = find(doc, f"metadata.{key}")
                if not found or found[0] != wanted:
                    return False
        return True

    if not ctx.selected:
        return (True, []) if ctx.negative else (False, ["no manifest found"])
    described = f"kind {params.get('kind')}, apiVersion {params.get('apiVersion')}" + "".join(
        f", {k} {params[k]}" for k in ("name", "namespace") if params.get(k)
    )
    passed, messages = True, []
    for index, doc in enumerate(ctx.selected):
        if matches(doc) == ctx.negative:
            passed = False
            messages.append(
                f"DocumentIndex {index}: expected {'NOT ' if ctx.negative else ''}to contain document {described}"
            )
        elif bool(params.get("any")) != ctx.negative:
            return True, []
    return passed, messages


def v_length_equal(params: dict, ctx: Context) -> Result:
    path, paths, count = params.get("path"), params.get("paths"), params.get("count")
    if path and (count is None or count < 0):
        return False, ["'count' field must be set if 'path' is used"]
    if path and paths:
        return False, ["'paths' couldn't be used with 'path'"]

    def lengths_of(document: dict, one: str) -> tuple[bool, list[str], int]:
        actuals = find(document, one)
        passed, messages, length = len(actuals) == 0 and ctx.negative, [], 0
        for index, actual in enumerate(actuals):
            if not isinstance(actual, list) and count is None:
                messages.append(f"{one} is not array")
                continue  # the plugin leaves the verdict as it was
            length = len(actual) if isinstance(actual, list) else 0
            ok = True
            if count is not None and (length == count) == ctx.negative:
                ok = False
                messages.append(
                    f"path {one}: expected {'NOT ' if ctx.negative else ''}to match count {count}, got {length}"
                )
            passed = ok if index == 0 else passed and ok
        return passed, messages, length

    def check(document: dict) -> Result:
        if path:
            ok, messages, _ = lengths_of(document, path)
            return ok, messages
        counts, messages, all_ok = {}, [], True
        for one in paths or []:
            ok, why, counts[one] = lengths_of(document, one)
            if not ok:
                all_ok = False
                messages.extend(why)
        if not all_ok:
            return False, messages
        reference = None
        for one in sorted(counts):
            if reference is None:
                reference = counts[one]
            elif (reference == counts[one]) == ctx.negative:
                relation = "equals" if ctx.negative else "differs from"
                return False, [f"path {one}: length {counts[one]} {relation} {reference}"]
        return reference is not None, messages

    return _each_document(params, ctx, check)


def v_failed_template(params: dict, ctx: Context) -> Result:
    message, pattern = params.get("errorMessage") or "", params.get("errorPattern") or ""
    if message and pattern:
        return False, ["single attribute 'errorMessage' or 'errorPattern' supported at the same time"]

    def matches(text: str) -> bool:
        try:
            if go_regex(pattern).search(text):
                return True
        except SuiteError:
            return pattern in text  # the plugin quotes a pattern that does not compile
        # the plugin retries a pattern holding regex metacharacters as a literal string
        return bool(re.search(r"[\\.+*?()|\[\]{}^$]", pattern)) and pattern in text

    def verdict(text: Any) -> Result:
        if pattern:
            failed = text is not None and matches(str(text)) == ctx.negative
        elif message:
            failed = (text is not None and text == message) == ctx.negative
        else:
            failed = False
        if failed:
            wanted = f"match {pattern!r}" if pattern else f"equal {message!r}"
            return False, [f"expected the error {'NOT ' if ctx.negative else ''}to {wanted}, got:", str(text)]
        return True, []

    if ctx.render_error is not None:
        return verdict(ctx.render_error)
    if not ctx.selected:
        return (True, []) if ctx.negative else (False, ["No failed document"])
    passed, messages = True, []
    for document in ctx.selected:
        if not pattern and not message and not ctx.negative:
            continue
        ok, why = verdict(document.get(RAW))
        passed, messages = passed and ok, messages + why
    return passed, messages


def v_snapshot(params: dict, ctx: Context) -> Result:
    match = ((params.get("matchRegex") or {}).get("pattern") or "").strip()
    not_match = ((params.get("notMatchRegex") or {}).get("pattern") or "").strip()
    if ctx.snapshots is None:
        raise SuiteError("matchSnapshot: no snapshot cache")
    if not ctx.selected:
        return (False, []) if ctx.negative else (True, [])

    def check(actual: Any) -> Result:
        ok, why = ctx.snapshots.compare(actual, match, not_match)
        return (ok != ctx.negative), ([why] if why and ok == ctx.negative else [])

    passed, messages = True, []
    for document in ctx.selected:
        ok, why = _each_value(params.get("path", ""), ctx, check)(document)
        passed, messages = passed and ok, messages + why
    return passed, messages


def v_snapshot_raw(params: dict, ctx: Context) -> Result:
    if ctx.snapshots is None:
        raise SuiteError("matchSnapshotRaw: no snapshot cache")
    if not ctx.selected:
        return (False, []) if ctx.negative else (True, [])
    passed, messages = True, []
    for document in ctx.selected:
        ok, why = ctx.snapshots.compare(uniform(document.get(RAW)))
        if ok == ctx.negative:
            passed = False
            messages.append(why or "expected NOT to match the snapshot")
    return passed, messages


@dataclass
class AssertType:
    validator: Validator
    params: dict[str, bool]  # parameter name -> required
    antonym: bool = False
    requires_render: bool = True


def _pair(validator: Validator, params: dict[str, bool], name: str, antonym: str) -> dict[str, AssertType]:
    return {name: AssertType(validator, params), antonym: AssertType(validator, params, antonym=True)}


_PATH_VALUE = {"path": True, "value": True}
ASSERT_TYPES: dict[str, AssertType] = {
    **_pair(v_equal, {**_PATH_VALUE, "decodeBase64": False}, "equal", "notEqual"),
    **_pair(v_order("greater"), _PATH_VALUE, "greaterOrEqual", "notGreaterOrEqual"),
    **_pair(v_order("less"), _PATH_VALUE, "lessOrEqual", "notLessOrEqual"),
    **_pair(v_exists, {"path": True}, "exists", "notExists"),
    **_pair(v_exists, {"path": True}, "isNotNull", "isNull"),
    **_pair(v_null_or_empty, {"path": True}, "isNullOrEmpty", "isNotNullOrEmpty"),
    **_pair(v_null_or_empty, {"path": True}, "isEmpty", "isNotEmpty"),
    **_pair(v_contains, {"path": True, "content": True, "count": False, "any": False}, "contains", "notContains"),
    **_pair(v_subset, {"path": True, "content": True}, "isSubset", "isNotSubset"),
    **_pair(v_type, {"path": True, "type": True}, "isType", "isNotType"),
    **_pair(v_match_regex, {"path": True, "pattern": True, "decodeBase64": False}, "matchRegex", "notMatchRegex"),
    **_pair(v_raw("regex"), {"pattern": True}, "matchRegexRaw", "notMatchRegexRaw"),
    **_pair(v_raw("equal"), {"value": True}, "equalRaw", "notEqualRaw"),
    **_pair(v_length_equal, {"path": False, "paths": False, "count": False}, "lengthEqual", "notLengthEqual"),
    "isKind": AssertType(v_field_is("kind"), {"of": True}),
    "isAPIVersion": AssertType(v_field_is("apiVersion"), {"of": True}),
    "hasDocuments": AssertType(v_has_documents, {"count": True, "filterAware": False}),
    "containsDocument": AssertType(
        v_contains_document, {"kind": True, "apiVersion": True, "name": False, "namespace": False, "any": False}
    ),
    "matchSnapshot": AssertType(v_snapshot, {"path": False, "matchRegex": False, "notMatchRegex": False}),
    "matchSnapshotRaw": AssertType(v_snapshot_raw, {}),
    "failedTemplate": AssertType(
        v_failed_template, {"errorMessage": False, "errorPattern": False}, requires_render=False
    ),
    "notFailedTemplate": AssertType(v_failed_template, {"errorMessage": False, "errorPattern": False}, antonym=True),
}
