"""A small runner for helm-unittest suites (`charts/<chart>/tests/*_test.yaml`) on the real Helm engine.

Users with the plugin run the same files with `helm unittest charts/<chart>`; here, where the plugin cannot
be installed, pytest runs them through this module (see tests/test_chart_suites.py). Rendering goes through
`llmft.charts.render_chart` (Helm's own engine, schema validation and `fail`).

The semantics follow helm-unittest's DOCUMENT.md and its validators (pkg/unittest/validators):

- A test job renders the chart with only the suite's `templates` (plus partials `_*`/`*.tpl`), the values
  files (relative to the suite file), then the suite's `set`, then the test's `set` (dotted `--set`-style
  paths whose values may be any YAML; maps merge, a list element given as null keeps the old element).
- Each assertion runs on every template it selects (its own `template`, else the test's `template(s)`, else
  the suite's `templates`) and every selected document (`documentIndex` / `documentSelector`); it passes only
  if it passes on all of them. `not: true` inverts it; `notX` types are the antonyms of `x`.
- If rendering fails, only `failedTemplate` can pass; a `fail` message is matched on its own (Helm's
  "execution error at (file:line:col): " prefix removed), any other error (schema, release name) whole.

Where the plugin's code is looser than its documentation, this runner takes the stricter reading, so a suite
that passes here also passes with the plugin:
- `isNotNullOrEmpty`/`isNotEmpty` fail on a missing path (a missing value is null);
- `lengthEqual` checks every document, and `count` also with `paths`;
- a test without `release.name` is an error (the plugin's default `RELEASE-NAME` is not a valid Helm release
  name, and every chart here rejects it);
- unknown keys in a suite, a test or an assertion's parameters, and assertion types this runner does not
  implement, are errors rather than silently ignored.

Paths use helm-unittest's JSONPath-like syntax: `a.b[0].c`, `a["dotted.key"]`, `a[*]`, `a.*` and filters
`a[?(@.name == "x")]` (also `!=`, and `[?(@.name)]` for presence).
"""

from __future__ import annotations

import atexit
import base64
import fnmatch
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from llmft.charts import load_values_file, render_chart
from llmft.errors import UserError

RAW = "raw"  # the key under which a text template (NOTES.txt) or a `fail` message is stored, as in the plugin


class SuiteError(Exception):
    """A suite this runner cannot run as written: malformed, or uses something it does not implement."""


# --------------------------------------------------------------------------------------------------
# Values equality with Go's reflect.DeepEqual over YAML-decoded values: bool, int and float differ.
# --------------------------------------------------------------------------------------------------

def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, (list, tuple)):
        return "list"
    if isinstance(value, dict):
        return "map"
    return type(value).__name__


def deep_equal(a: Any, b: Any) -> bool:
    if _kind(a) != _kind(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(deep_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(deep_equal(x, y) for x, y in zip(a, b))
    return a == b


def _is_subset(actual: dict, content: dict) -> bool:
    """helm-unittest's validateSubset: every key of `content` deep-equals the same key of `actual`."""
    return all(key in actual and deep_equal(actual[key], value) for key, value in content.items())


def _uniform(text: str) -> str:
    """The plugin strips spaces before line ends of an actual string before comparing it."""
    return re.sub(r"[ ]+\r?\n", "\n", text)


def _dump(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=False, sort_keys=False).rstrip()
    return text[:-len("\n...")] if text.endswith("\n...") else text


# --------------------------------------------------------------------------------------------------
# Paths: the JSONPath-like syntax of helm-unittest (vmware-labs/yaml-jsonpath), the subset we support.
# --------------------------------------------------------------------------------------------------

_LITERAL = r"""(?:"(?P<dq>(?:[^"\\]|\\.)*)"|'(?P<sq>(?:[^'\\]|\\.)*)'|(?P<num>-?\d+(?:\.\d+)?)|(?P<bool>true|false)|(?P<null>null))"""
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
    if text.startswith("$"):
        text = text[1:]
    i = 0
    expect_key = True  # at the start, a bare key may follow without a dot
    while i < len(text):
        char = text[i]
        if char == ".":
            if text[i + 1:i + 2] == ".":
                raise SuiteError(f"path {path!r}: recursive descent '..' is not supported by this runner")
            i += 1
            expect_key = True
            continue
        if char == "[":
            end = _closing_bracket(text, i, path)
            inner = text[i + 1:end].strip()
            steps.append(_bracket_step(inner, path))
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
            if char == "\\":
                continue
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
    raise SuiteError(f"path {path!r}: '[{inner}]' is not supported by this runner "
                     "(use [N], [*], [\"key\"] or [?(@.field == \"value\")])")


def find(document: Any, path: str) -> list[Any]:
    """Every value `path` selects in `document` (empty when nothing matches); '' selects the document."""
    if path == "":
        return [document]
    return _walk([document], parse_path(path))


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
            elif kind == "filter" and isinstance(node, list):
                sub, op, literal = arg
                for item in node:
                    values = _walk([item], sub)
                    if (op is None and values) or (op == "==" and any(deep_equal(v, literal) for v in values)) \
                            or (op == "!=" and any(not deep_equal(v, literal) for v in values)):
                        found.append(item)
        nodes = found
    return nodes


# --------------------------------------------------------------------------------------------------
# `set`: helm-unittest's BuildValueOfSetPath + MergeValues.
# --------------------------------------------------------------------------------------------------

def build_set_value(path: str, value: Any) -> dict:
    """`a.b[1].c` + v -> {"a": {"b": [None, {"c": v}]}}; `a.[x.y]` addresses a key containing dots."""
    cursors: list[str | int] = []
    i = 0
    if not path:
        raise SuiteError("set: empty path")
    while i < len(path):
        if path[i] == "[":
            end = path.find("]", i)
            if end < 0:
                raise SuiteError(f"set {path!r}: unclosed '['")
            inner = path[i + 1:end]
            if re.fullmatch(r"\d+", inner) and cursors:
                cursors.append(int(inner))
            elif i == 0 or path[i - 1] == ".":
                cursors.append(inner)  # escaped key: a.[kueue.x-k8s.io/queue-name]
            else:
                raise SuiteError(f"set {path!r}: invalid index [{inner}]")
            i = end + 1
            if i < len(path) and path[i] == ".":
                i += 1
            continue
        j = i
        while j < len(path) and path[j] not in ".[":
            j += 1
        if j == i:
            raise SuiteError(f"set {path!r}: empty key at position {i}")
        cursors.append(path[i:j])
        i = j + 1 if j < len(path) and path[j] == "." else j
    built: dict = {}
    current: Any = built
    for depth, cursor in enumerate(cursors):
        if depth == len(cursors) - 1:
            child = value
        elif isinstance(cursors[depth + 1], int):
            child = [None] * (cursors[depth + 1] + 1)
        else:
            child = {}
        current[cursor] = child
        current = child
    return built


def merge_values(dst: dict, src: dict) -> dict:
    """helm-unittest's merge: maps merge; a list merges element-wise where the new element is null."""
    out = dict(dst)
    for key, new in src.items():
        old = out.get(key)
        if new is None:
            out[key] = None
        elif isinstance(new, dict) and isinstance(old, dict):
            out[key] = merge_values(old, new)
        elif isinstance(new, list) and isinstance(old, list):
            out[key] = [old[i] if item is None and i < len(old) else item for i, item in enumerate(new)]
        else:
            out[key] = new
    return out


# --------------------------------------------------------------------------------------------------
# Suites and cases.
# --------------------------------------------------------------------------------------------------

SUITE_KEYS = {"suite", "templates", "values", "set", "release", "tests"}
TEST_KEYS = {"it", "values", "set", "template", "templates", "documentIndex", "documentSelector", "release",
             "asserts", "skip"}
RELEASE_KEYS = {"name", "namespace"}
ASSERT_OPTIONS = {"not", "template", "documentIndex", "documentSelector"}


@dataclass
class Suite:
    path: Path
    chart_dir: Path
    name: str
    spec: dict
    cases: list["Case"] = field(default_factory=list)


@dataclass
class Case:
    suite: Suite
    index: int
    name: str
    spec: dict

    @property
    def id(self) -> str:
        return f"{self.suite.chart_dir.name}/{self.suite.path.name}::{self.name}"


@dataclass
class AssertionResult:
    index: int
    type: str
    passed: bool
    messages: list[str] = field(default_factory=list)


@dataclass
class CaseResult:
    case: Case
    passed: bool
    assertions: list[AssertionResult] = field(default_factory=list)
    error: str | None = None
    skipped: str | None = None

    def report(self) -> str:
        lines = [f"{self.case.id}: {'PASS' if self.passed else 'FAIL'}"]
        if self.error:
            lines.append(f"  error: {self.error}")
        for result in self.assertions:
            if not result.passed:
                lines.append(f"  - asserts[{result.index}] {result.type} failed:")
                lines.extend(f"      {line}" for message in result.messages for line in message.splitlines())
        return "\n".join(lines)


def discover_suites(charts_dir: Path) -> list[Path]:
    """Every helm-unittest suite file of every chart, as the plugin finds them by default."""
    return sorted(Path(charts_dir).glob("*/tests/*_test.yaml"))


def load_suite(path: Path) -> Suite:
    path = Path(path)
    try:
        spec = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise SuiteError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(spec, dict):
        raise SuiteError(f"{path}: a suite must be a mapping")
    unknown = set(spec) - SUITE_KEYS
    if unknown:
        raise SuiteError(f"{path}: keys {sorted(unknown)} are not supported by this runner (known: {sorted(SUITE_KEYS)})")
    chart_dir = path.parent.parent
    if not (chart_dir / "Chart.yaml").is_file():
        raise SuiteError(f"{path}: no Chart.yaml in {chart_dir} (suites live in <chart>/tests/)")
    tests = spec.get("tests")
    if not isinstance(tests, list) or not tests:
        raise SuiteError(f"{path}: 'tests' must be a non-empty list")
    suite = Suite(path=path, chart_dir=chart_dir, name=str(spec.get("suite") or path.stem), spec=spec)
    _check_release(spec.get("release"), f"{path}: release")
    seen: set[str] = set()
    for index, test in enumerate(tests):
        where = f"{path}: tests[{index}]"
        if not isinstance(test, dict):
            raise SuiteError(f"{where}: must be a mapping")
        unknown = set(test) - TEST_KEYS
        if unknown:
            raise SuiteError(f"{where}: keys {sorted(unknown)} are not supported by this runner (known: {sorted(TEST_KEYS)})")
        if not isinstance(test.get("asserts"), list) or not test["asserts"]:
            raise SuiteError(f"{where}: 'asserts' must be a non-empty list")
        _check_release(test.get("release"), f"{where}.release")
        for a_index, assertion in enumerate(test["asserts"]):
            _parse_assertion(assertion, f"{where}.asserts[{a_index}]")
        name = str(test.get("it") or f"test {index}")
        if name in seen:
            raise SuiteError(f"{where}: duplicate test name {name!r}")
        seen.add(name)
        suite.cases.append(Case(suite=suite, index=index, name=name, spec=test))
    return suite


def _check_release(release: Any, where: str) -> None:
    if release is None:
        return
    if not isinstance(release, dict):
        raise SuiteError(f"{where}: must be a mapping")
    unknown = set(release) - RELEASE_KEYS
    if unknown:
        raise SuiteError(f"{where}: keys {sorted(unknown)} are not supported by this runner (known: {sorted(RELEASE_KEYS)})")


# --------------------------------------------------------------------------------------------------
# Rendering a test job.
# --------------------------------------------------------------------------------------------------

_filtered_charts: dict[tuple[Path, tuple[str, ...]], Path] = {}
_scratch = None


def _template_file(name: str) -> str:
    name = name.lstrip("./")
    return name if name.startswith("templates/") else f"templates/{name}"


def _chart_name(chart_dir: Path) -> str:
    return str(yaml.safe_load((chart_dir / "Chart.yaml").read_text())["name"])


def _suite_templates(suite: Suite) -> list[str]:
    """The suite's `templates`, expanded (wildcards) to chart-relative paths like templates/deployment.yaml."""
    patterns = suite.spec.get("templates") or []
    if not isinstance(patterns, list):
        raise SuiteError(f"{suite.path}: 'templates' must be a list")
    available = sorted(str(p.relative_to(suite.chart_dir)) for p in (suite.chart_dir / "templates").rglob("*")
                       if p.is_file())
    selected: list[str] = []
    for pattern in patterns:
        wanted = _template_file(str(pattern))
        matches = [t for t in available if fnmatch.fnmatchcase(t, wanted)]
        if not matches:
            raise SuiteError(f"{suite.path}: template {pattern!r} matches no file in {suite.chart_dir / 'templates'}")
        selected.extend(m for m in matches if m not in selected)
    return selected or [t for t in available if not Path(t).name.startswith("_") and not t.endswith(".tpl")]


def _render_dir(suite: Suite) -> Path:
    """A copy of the chart holding only the suite's templates and the partials, as the plugin renders it."""
    global _scratch
    if not suite.spec.get("templates"):
        return suite.chart_dir
    templates = tuple(_suite_templates(suite))
    key = (suite.chart_dir.resolve(), templates)
    if key not in _filtered_charts:
        if _scratch is None:
            _scratch = tempfile.mkdtemp(prefix="helm-unittest-")
            atexit.register(shutil.rmtree, _scratch, True)
        target = Path(_scratch) / str(len(_filtered_charts)) / suite.chart_dir.name
        keep = set(templates)

        def ignore(directory: str, names: list[str]) -> set[str]:
            skipped = set()
            for name in names:
                relative = str((Path(directory) / name).relative_to(suite.chart_dir))
                full = Path(directory) / name
                if relative.startswith("templates/") and full.is_file() and relative not in keep \
                        and not name.startswith("_") and not name.endswith(".tpl"):
                    skipped.add(name)
            return skipped

        shutil.copytree(suite.chart_dir, target, ignore=ignore)
        _filtered_charts[key] = target
    return _filtered_charts[key]


def _values_for(case: Case) -> dict:
    suite, test = case.suite, case.spec
    values: dict = {}
    for source, where in ((suite.spec.get("values"), "suite"), (test.get("values"), f"test {case.name!r}")):
        for name in source or []:
            file = Path(name) if Path(name).is_absolute() else suite.path.parent / name
            try:
                values = merge_values(values, load_values_file(file))
            except UserError as error:
                raise SuiteError(f"{suite.path}: {where} values: {error}") from None
    for source in (suite.spec.get("set"), test.get("set")):
        if source is None:
            continue
        if not isinstance(source, dict):
            raise SuiteError(f"{suite.path}: 'set' must be a mapping of paths to values")
        for path, value in source.items():
            values = merge_values(values, build_set_value(str(path), value))
    return values


_EXECUTION_ERROR = re.compile(r"^execution error at \((?P<file>[^)]+?):\d+:\d+\): (?P<message>.*)$", re.S)


@dataclass
class RenderOutcome:
    ok: bool
    outputs: dict[str, list[dict]]        # template path (chart/templates/x.yaml) -> documents
    error: str | None = None              # the error when it could not be attributed to one template


def render_case(case: Case) -> tuple[RenderOutcome, str]:
    """Render the chart for one test job; returns the outcome and the chart name (template path prefix)."""
    suite, test = case.suite, case.spec
    release = {**(suite.spec.get("release") or {}), **(test.get("release") or {})}
    name = release.get("name")
    if not name:
        raise SuiteError(
            f"{suite.path}: test {case.name!r} has no release.name; helm-unittest's default 'RELEASE-NAME' is not a "
            "valid Helm release name (and the charts reject it): set release.name in the suite or the test")
    chart_dir = _render_dir(suite)
    chart = _chart_name(chart_dir)
    try:
        rendered = render_chart(chart_dir, values=_values_for(case), release_name=str(name),
                                namespace=str(release.get("namespace") or "NAMESPACE"))
    except UserError as error:
        message = str(error)
        for prefix in (f"helm template {chart_dir}: ", f"release name {str(name)!r} is invalid: "):
            if message.startswith(prefix):
                message = message[len(prefix):]
        failed = _EXECUTION_ERROR.match(message)
        if failed:
            file, text = failed.group("file"), failed.group("message")
            if Path(file).name.startswith("_"):
                targets = [f"{chart}/{t}" for t in _suite_templates(suite)]
            else:
                targets = [file]
            return RenderOutcome(ok=False, outputs={t: [{RAW: text}] for t in targets}), chart
        return RenderOutcome(ok=False, outputs={}, error=message), chart
    outputs: dict[str, list[dict]] = {}
    for path, text in rendered.templates.items():
        if path.endswith(".txt"):
            outputs[path] = [{RAW: text}]
        elif path.endswith((".yaml", ".yml", ".tpl")):
            outputs[path] = [doc for doc in yaml.safe_load_all(text) if doc]
    return RenderOutcome(ok=True, outputs=outputs), chart


# --------------------------------------------------------------------------------------------------
# Assertions.
# --------------------------------------------------------------------------------------------------

@dataclass
class Context:
    docs: list[dict]          # every document the template rendered
    selected: list[dict]      # the documents selected by documentIndex / documentSelector
    negative: bool
    render_error: str | None


Validator = Callable[[dict, Context], tuple[bool, list[str]]]


@dataclass
class AssertType:
    validator: Validator
    params: dict[str, bool]   # parameter name -> required
    antonym: bool = False
    requires_render: bool = True


def _per_document(check: Callable[[dict, int, Context], tuple[bool, list[str]]],
                  empty_passes_when_negative: bool = True) -> Callable[[Context], tuple[bool, list[str]]]:
    """Run `check` on every selected document; all must pass. With no document: the plugin's rule."""
    def run(ctx: Context) -> tuple[bool, list[str]]:
        if not ctx.selected:
            if ctx.negative and empty_passes_when_negative:
                return True, []
            return False, ["no manifest found"]
        passed, messages = True, []
        for index, document in enumerate(ctx.selected):
            ok, why = check(document, index, ctx)
            if not ok:
                passed = False
                messages.append(f"DocumentIndex {index}:")
                messages.extend(f"  {line}" for text in why for line in str(text).splitlines())
        return passed, messages
    return run


def _v_equal(params: dict, ctx: Context) -> tuple[bool, list[str]]:
    path, expected = params["path"], params.get("value")

    def check(document: dict, _index: int, ctx: Context) -> tuple[bool, list[str]]:
        actuals = find(document, path)
        if not actuals:
            return (True, []) if ctx.negative else (False, [f"unknown path {path}"])
        for actual in actuals:
            if isinstance(actual, str):
                if params.get("decodeBase64"):
                    actual = base64.b64decode(actual).decode()
                actual = _uniform(actual)
            if deep_equal(expected, actual) == ctx.negative:
                verb = "NOT to equal" if ctx.negative else "to equal"
                return False, [f"path {path}: expected {verb}:", _dump(expected), "actual:", _dump(actual)]
        return True, []
    return _per_document(check)(ctx)


def _v_exists(params: dict, ctx: Context) -> tuple[bool, list[str]]:
    path = params["path"]

    def check(document: dict, _index: int, ctx: Context) -> tuple[bool, list[str]]:
        exists = bool(find(document, path))
        if exists == ctx.negative:
            return False, [f"path {path} expected to {'NOT ' if ctx.negative else ''}exist"]
        return True, []
    return _per_document(check, empty_passes_when_negative=False)(ctx)


def _is_empty(value: Any) -> bool:
    """helm-unittest's "null or empty": null, false, 0, "", [] and {}."""
    if value is None or isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value == 0
    if isinstance(value, (str, list, dict)):
        return len(value) == 0
    return False


def _v_null_or_empty(params: dict, ctx: Context) -> tuple[bool, list[str]]:
    path = params["path"]

    def check(document: dict, _index: int, ctx: Context) -> tuple[bool, list[str]]:
        actuals = find(document, path)
        if not actuals:
            return False, [f"unknown path {path} (a missing value is null)"]
        for actual in actuals:
            if _is_empty(actual) == ctx.negative:
                return False, [f"path {path}: expected {'NOT ' if ctx.negative else ''}to be null or empty, got:",
                               _dump(actual)]
        return True, []
    return _per_document(check)(ctx)


def _v_contains(params: dict, ctx: Context) -> tuple[bool, list[str]]:
    path, content, count, any_ = params["path"], params.get("content"), params.get("count"), params.get("any", False)
    if count is not None and (isinstance(count, bool) or not isinstance(count, int)):
        raise SuiteError(f"contains: count must be an integer, got {count!r}")

    def check(document: dict, _index: int, ctx: Context) -> tuple[bool, list[str]]:
        actuals = find(document, path)
        if not actuals:
            return False, [f"unknown path {path}"]
        actual = actuals if isinstance(actuals[0], str) else actuals[0]
        if not isinstance(actual, list):
            return False, [f"expect '{path}' to be an array, got:", _dump(actual)]
        if any_:
            matches = sum(1 for item in actual if isinstance(item, dict) and isinstance(content, dict)
                          and _is_subset(item, content))
        else:
            matches = sum(1 for item in actual if deep_equal(item, content))
        if ctx.negative:
            ok = matches != count if count is not None else matches == 0
        else:
            ok = matches == count if count is not None else matches > 0
        if not ok:
            wanted = f"{'NOT ' if ctx.negative else ''}to contain" + (f" {count} time(s)" if count is not None else "")
            return False, [f"path {path}: expected {wanted} (found {matches}):", _dump([content]), "actual:", _dump(actual)]
        return True, []
    return _per_document(check, empty_passes_when_negative=False)(ctx)


def _v_subset(params: dict, ctx: Context) -> tuple[bool, list[str]]:
    path, content = params["path"], params.get("content")

    def check(document: dict, _index: int, ctx: Context) -> tuple[bool, list[str]]:
        actuals = find(document, path)
        if not actuals:
            return (True, []) if ctx.negative else (False, [f"unknown path {path}"])
        for actual in actuals:
            if not isinstance(actual, dict) or not isinstance(content, dict):
                return False, [f"expect '{path}' to be an object, got:", _dump(actual)]
            if _is_subset(actual, content) == ctx.negative:
                return False, [f"path {path}: expected {'NOT ' if ctx.negative else ''}to contain:", _dump(content),
                               "actual:", _dump(actual)]
        return True, []
    return _per_document(check)(ctx)


def _v_field_is(field_name: str, label: str) -> Validator:
    def validator(params: dict, ctx: Context) -> tuple[bool, list[str]]:
        expected = params["of"]

        def check(document: dict, _index: int, ctx: Context) -> tuple[bool, list[str]]:
            actual = document.get(field_name)
            if (isinstance(actual, str) and actual == expected) == ctx.negative:
                return False, [f"expected {'NOT ' if ctx.negative else ''}to be {label} {expected}, got {actual!r}"]
            return True, []
        return _per_document(check)(ctx)
    return validator


def _v_has_documents(params: dict, ctx: Context) -> tuple[bool, list[str]]:
    count = params["count"]
    actual = len(ctx.selected if params.get("filterAware") else ctx.docs)
    if (actual == count) != ctx.negative:
        return True, []
    return False, [f"expected documents count {'NOT ' if ctx.negative else ''}to be {count}, got {actual}"]


def _compile(pattern: Any) -> re.Pattern:
    if not isinstance(pattern, str) or not pattern:
        raise SuiteError(f"pattern must be a non-empty string, got {pattern!r}")
    try:
        return re.compile(pattern)
    except re.error as error:
        raise SuiteError(f"pattern {pattern!r} is not a valid regular expression: {error}") from None


def _v_match_regex(params: dict, ctx: Context) -> tuple[bool, list[str]]:
    path, pattern = params["path"], _compile(params["pattern"])

    def check(document: dict, _index: int, ctx: Context) -> tuple[bool, list[str]]:
        actuals = find(document, path)
        if not actuals:
            return (True, []) if ctx.negative else (False, [f"unknown path {path}"])
        for actual in actuals:
            if not isinstance(actual, str):
                return False, [f"expect '{path}' to be a string, got:", _dump(actual)]
            if params.get("decodeBase64"):
                actual = base64.b64decode(actual).decode()
            if bool(pattern.search(actual)) == ctx.negative:
                return False, [f"path {path}: expected {'NOT ' if ctx.negative else ''}to match {pattern.pattern!r}:",
                               actual]
        return True, []
    return _per_document(check)(ctx)


def _v_raw(matcher: str) -> Validator:
    def validator(params: dict, ctx: Context) -> tuple[bool, list[str]]:
        if matcher == "regex":
            pattern = _compile(params["pattern"])
            test, label = (lambda text: bool(pattern.search(text))), f"match {pattern.pattern!r}"
        else:
            value = params["value"]
            test, label = (lambda text: _uniform(text) == value), f"equal {value!r}"

        def check(document: dict, _index: int, ctx: Context) -> tuple[bool, list[str]]:
            text = document.get(RAW)
            if not isinstance(text, str):
                return False, ["not a text template (NOTES.txt); use a non-raw assertion"]
            if test(text) == ctx.negative:
                return False, [f"expected {'NOT ' if ctx.negative else ''}to {label}:", text]
            return True, []
        return _per_document(check)(ctx)
    return validator


def _v_length_equal(params: dict, ctx: Context) -> tuple[bool, list[str]]:
    path, paths, count = params.get("path"), params.get("paths"), params.get("count")
    if path and paths:
        raise SuiteError("lengthEqual: 'paths' cannot be used with 'path'")
    if path and count is None:
        raise SuiteError("lengthEqual: 'count' must be set if 'path' is used")
    if not path and not paths:
        raise SuiteError("lengthEqual: set 'path' (with 'count') or 'paths'")
    all_ok, messages = bool(ctx.selected), [] if ctx.selected else ["no manifest found"]
    for index, document in enumerate(ctx.selected):
        lengths = {}
        for one in ([path] if path else list(paths)):
            found = find(document, one)
            if not found or not isinstance(found[0], list):
                all_ok = False
                messages.append(f"DocumentIndex {index}: {one} is not an array")
                continue
            lengths[one] = len(found[0])
        if len(set(lengths.values())) > 1:
            all_ok = False
            messages.append(f"DocumentIndex {index}: lengths differ: {lengths}")
        elif count is not None and lengths and set(lengths.values()) != {count}:
            all_ok = False
            messages.append(f"DocumentIndex {index}: expected length {count}, got {lengths}")
    if all_ok == ctx.negative:
        return False, messages or [f"expected lengths NOT to be equal to {count}"]
    return True, []


def _v_failed_template(params: dict, ctx: Context) -> tuple[bool, list[str]]:
    message, pattern = params.get("errorMessage"), params.get("errorPattern")
    if message and pattern:
        raise SuiteError("failedTemplate: set 'errorMessage' or 'errorPattern', not both")

    def matches(text: str) -> bool:
        if pattern:
            try:
                if re.search(pattern, text):
                    return True
            except re.error:
                pass
            return re.escape(pattern) != pattern and pattern in text  # the plugin retries a pattern literally
        if message:
            return text == message
        return True

    if ctx.negative:  # notFailedTemplate: only reached when rendering succeeded
        return True, []
    if ctx.render_error is not None:
        if matches(ctx.render_error):
            return True, []
        return False, [f"expected the error to {'match ' + repr(pattern) if pattern else 'equal ' + repr(message)}, got:",
                       ctx.render_error]
    if not ctx.selected:
        return False, ["no failed document in this template"]
    for document in ctx.selected:
        text = document.get(RAW)
        if isinstance(text, str) and not matches(text):
            return False, [f"expected the error to {'match ' + repr(pattern) if pattern else 'equal ' + repr(message)}, got:",
                           text]
    return True, []


ASSERT_TYPES: dict[str, AssertType] = {
    "equal": AssertType(_v_equal, {"path": True, "value": True, "decodeBase64": False}),
    "notEqual": AssertType(_v_equal, {"path": True, "value": True, "decodeBase64": False}, antonym=True),
    "exists": AssertType(_v_exists, {"path": True}),
    "notExists": AssertType(_v_exists, {"path": True}, antonym=True),
    "isNotNull": AssertType(_v_exists, {"path": True}),                 # documented alias of exists
    "isNull": AssertType(_v_exists, {"path": True}, antonym=True),      # documented alias of notExists
    "isNullOrEmpty": AssertType(_v_null_or_empty, {"path": True}),
    "isEmpty": AssertType(_v_null_or_empty, {"path": True}),
    "isNotNullOrEmpty": AssertType(_v_null_or_empty, {"path": True}, antonym=True),
    "isNotEmpty": AssertType(_v_null_or_empty, {"path": True}, antonym=True),
    "contains": AssertType(_v_contains, {"path": True, "content": True, "count": False, "any": False}),
    "notContains": AssertType(_v_contains, {"path": True, "content": True, "count": False, "any": False},
                              antonym=True),
    "isSubset": AssertType(_v_subset, {"path": True, "content": True}),
    "isNotSubset": AssertType(_v_subset, {"path": True, "content": True}, antonym=True),
    "isKind": AssertType(_v_field_is("kind", "kind"), {"of": True}),
    "isAPIVersion": AssertType(_v_field_is("apiVersion", "apiVersion"), {"of": True}),
    "hasDocuments": AssertType(_v_has_documents, {"count": True, "filterAware": False}),
    "matchRegex": AssertType(_v_match_regex, {"path": True, "pattern": True, "decodeBase64": False}),
    "notMatchRegex": AssertType(_v_match_regex, {"path": True, "pattern": True, "decodeBase64": False},
                                antonym=True),
    "matchRegexRaw": AssertType(_v_raw("regex"), {"pattern": True}),
    "notMatchRegexRaw": AssertType(_v_raw("regex"), {"pattern": True}, antonym=True),
    "equalRaw": AssertType(_v_raw("equal"), {"value": True}),
    "notEqualRaw": AssertType(_v_raw("equal"), {"value": True}, antonym=True),
    "lengthEqual": AssertType(_v_length_equal, {"path": False, "paths": False, "count": False}),
    "notLengthEqual": AssertType(_v_length_equal, {"path": False, "paths": False, "count": False}, antonym=True),
    "failedTemplate": AssertType(_v_failed_template, {"errorMessage": False, "errorPattern": False},
                                 requires_render=False),
    "notFailedTemplate": AssertType(_v_failed_template, {}, antonym=True),
}

# Assertion types helm-unittest has but this runner does not implement: named in the error message.
NOT_IMPLEMENTED = {"containsDocument", "matchSnapshot", "matchSnapshotRaw", "isType", "isNotType",
                   "greaterOrEqual", "notGreaterOrEqual", "lessOrEqual", "notLessOrEqual"}


@dataclass
class ParsedAssertion:
    type: str
    params: dict
    definition: AssertType
    negate: bool
    template: str | None
    document_index: int | None
    document_selector: dict | None


def _parse_assertion(assertion: Any, where: str) -> ParsedAssertion:
    if not isinstance(assertion, dict):
        raise SuiteError(f"{where}: an assertion must be a mapping")
    types = [key for key in assertion if key not in ASSERT_OPTIONS]
    if len(types) != 1:
        raise SuiteError(f"{where}: exactly one assertion type per assertion, got {types or 'none'}")
    name = types[0]
    if name not in ASSERT_TYPES:
        hint = " (a helm-unittest type this runner does not implement)" if name in NOT_IMPLEMENTED else ""
        raise SuiteError(f"{where}: unknown assertion type {name!r}{hint}; known: {sorted(ASSERT_TYPES)}")
    definition = ASSERT_TYPES[name]
    params = assertion[name] if assertion[name] is not None else {}
    if not isinstance(params, dict):
        raise SuiteError(f"{where}: {name}: parameters must be a mapping")
    unknown = set(params) - set(definition.params)
    if unknown:
        raise SuiteError(f"{where}: {name}: unknown parameters {sorted(unknown)} (known: {sorted(definition.params)})")
    missing = [p for p, required in definition.params.items() if required and p not in params]
    if missing:
        raise SuiteError(f"{where}: {name}: missing parameters {missing}")
    negate = assertion.get("not", False)
    if not isinstance(negate, bool):
        raise SuiteError(f"{where}: 'not' must be true or false")
    index = assertion.get("documentIndex")
    if index is not None and (isinstance(index, bool) or not isinstance(index, int)):
        raise SuiteError(f"{where}: documentIndex must be an integer")
    selector = assertion.get("documentSelector")
    if selector is not None:
        _check_selector(selector, where)
    return ParsedAssertion(type=name, params=params, definition=definition, negate=negate,
                           template=assertion.get("template"), document_index=index, document_selector=selector)


def _check_selector(selector: Any, where: str) -> None:
    if not isinstance(selector, dict) or not isinstance(selector.get("path"), str) or selector.get("value") is None:
        raise SuiteError(f"{where}: documentSelector needs 'path' (string) and a non-null 'value'")
    unknown = set(selector) - {"path", "value", "matchMany", "skipEmptyTemplates"}
    if unknown:
        raise SuiteError(f"{where}: documentSelector: unknown keys {sorted(unknown)}")


def _select(documents: dict[str, list[dict] | None], index: int | None,
            selector: dict | None) -> dict[str, list[dict]]:
    if selector:
        selected: dict[str, list[dict]] = {}
        total = 0
        for template, docs in documents.items():
            matching = [doc for doc in docs or [] if any(deep_equal(selector["value"], v)
                                                         for v in find(doc, selector["path"]))]
            total += len(matching)
            if not selector.get("matchMany") and total > 1:
                raise AssertionError("documentSelector: multiple documents found")
            if not matching and not selector.get("skipEmptyTemplates"):
                raise AssertionError(f"documentSelector: no document with {selector['path']} == "
                                     f"{selector['value']!r} in {template}")
            if matching or not selector.get("skipEmptyTemplates"):
                selected[template] = matching
        return selected
    if index is not None and index != -1:
        selected = {}
        for template, docs in documents.items():
            if index >= len(docs or []):
                raise AssertionError(f"document index {index} is out of range in {template}")
            selected[template] = [(docs or [])[index]]
        return selected
    return {template: list(docs or []) for template, docs in documents.items()}


def run_assertion(parsed: ParsedAssertion, templates: list[str], outcome: RenderOutcome,
                  test_index: int | None, test_selector: dict | None) -> tuple[bool, list[str]]:
    index = test_index if test_index is not None else parsed.document_index
    selector = parsed.document_selector or test_selector
    documents = {template: outcome.outputs.get(template) for template in templates}
    try:
        selected = _select(documents, index, selector)
    except AssertionError as error:
        return False, [str(error)]
    negative = parsed.negate != parsed.definition.antonym
    requires = parsed.definition.requires_render
    if not selected:
        if requires != outcome.ok:
            return False, ["rendered manifest is empty"]
        return parsed.definition.validator(parsed.params, Context([], [], negative, outcome.error))
    passed, messages = True, []
    for template in sorted(selected):
        rendered = outcome.outputs.get(template)
        if rendered is None and requires:
            return False, [f"template {template!r} does not exist or is not selected in the test suite"]
        if requires != outcome.ok:
            if outcome.ok:
                return False, ["the chart rendered without error"]
            return False, [f"rendering failed: {outcome.error or (rendered or [{}])[0].get(RAW)}"]
        ok, why = parsed.definition.validator(parsed.params, Context(rendered or [], selected[template], negative,
                                                                     outcome.error))
        if not ok:
            passed = False
            messages.append(f"Template: {template}")
            messages.extend(why)
    return passed, messages


def run_case(case: Case) -> CaseResult:
    """Render the chart for one test job and evaluate its assertions, as `helm unittest` does."""
    test = case.spec
    skip = test.get("skip")
    if skip:
        reason = skip.get("reason") if isinstance(skip, dict) else None
        if not reason:
            raise SuiteError(f"{case.suite.path}: test {case.name!r}: skip needs a 'reason'")
        return CaseResult(case=case, passed=True, skipped=str(reason))
    where = f"{case.suite.path}: tests[{case.index}]"
    assertions = [_parse_assertion(a, f"{where}.asserts[{i}]") for i, a in enumerate(test["asserts"])]
    test_index = test.get("documentIndex")
    test_selector = test.get("documentSelector")
    if test_selector is not None:
        _check_selector(test_selector, where)
    outcome, chart = render_case(case)
    if not outcome.ok and all(a.definition.requires_render for a in assertions):
        error = outcome.error or next(iter(outcome.outputs.values()))[0][RAW]
        return CaseResult(case=case, passed=False, error=f"rendering failed: {error}")
    if test.get("templates"):
        default = [_template_file(str(t)) for t in test["templates"]]
    elif test.get("template"):
        default = [_template_file(str(test["template"]))]
    else:
        default = _suite_templates(case.suite)
    result = CaseResult(case=case, passed=True)
    for a_index, parsed in enumerate(assertions):
        templates = [_template_file(parsed.template)] if parsed.template else default
        ok, messages = run_assertion(parsed, [f"{chart}/{t}" for t in templates], outcome, test_index, test_selector)
        result.assertions.append(AssertionResult(index=a_index, type=parsed.type, passed=ok, messages=messages))
        result.passed = result.passed and ok
    return result


def run_suite(path: Path) -> list[CaseResult]:
    return [run_case(case) for case in load_suite(path).cases]
