"""A runner for helm-unittest suites (`charts/<chart>/tests/*_test.yaml`) on the real Helm engine.

Users with the plugin run the same files with `helm unittest charts/<chart>`; here, where the plugin cannot be
installed (it needs Go), pytest runs them through this module (tests/test_chart_suites.py). Charts are rendered
by Helm's own engine through helm-python-sdk, in process.

It follows helm-unittest 1.1 (its DOCUMENT.md and pkg/unittest), and is proven against translations of the plugin's
own fixtures and the verdicts it gives them by tests/test_helm_unittest_fidelity.py. A test job:

- renders the chart with the release (name `RELEASE-NAME`, namespace `NAMESPACE`, revision 0 unless set),
  capabilities (Kubernetes 1.35 unless `majorVersion`/`minorVersion` say otherwise, plus `apiVersions`) and
  chart `version`/`appVersion` of the test, else of the suite;
- keeps only the suite's `templates` (wildcards allowed, `templates/` optional, `charts/<sub>/templates/...`
  for a subchart's) minus its `excludeTemplates`, plus every partial (a file whose name starts with `_`), in
  the chart and its subcharts alike; no `templates` keeps them all;
- takes values from the values files (relative to the suite file), then the suite's `set`, then the test's
  `set`: each merged over the previous as Helm's MergeTables does (maps merge, anything else, lists included,
  is replaced); a `set` path may index lists (`a.b[1].c` builds a list whose other elements are null) and
  escape dotted keys (`a.[x.y/z]`); a suite in a subchart's tests/ gets its values scoped to that subchart;
- if rendering fails, `fail`/`required` errors become the failed template's only document (its message under
  `raw`), which `failedTemplate` checks; other errors (schema, invalid release name) are matched whole;
- a `postRenderer` (the test's, else the suite's) gets every output on stdin and its stdout replaces them;
- `includeCrds: true` adds the files of crds/ (the chart's and its subcharts') as they are, e.g.
  `template: crds/x.yaml`;
- runs each assertion on its templates (its own `template`, else the test's `template(s)`, else the suite's)
  and their documents selected by `documentIndex` / `documentSelector` (`path`, optional `value`, `matchMany`,
  `skipEmptyTemplates`); an assertion passes only if it passes on every selected template.

A file may hold several suites separated by `---`. `skip` (with `reason`, or a `minimumVersion` above 1.1.0)
skips a suite or a test. Known differences from the plugin, all loud: unknown keys in a suite, a test or an
assertion are errors (the plugin ignores them unless --strict); `kubernetesProvider` objects are not
implemented and fail the suite; a template asking `.Capabilities.APIVersions.Has` for one of Helm's built-in
versions that the job does not list fails the job (the plugin offers only the listed `apiVersions`, this
runner's Helm always has its built-in ones).
"""

from __future__ import annotations

import atexit
import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from helm_unittest_asserts import (
    ASSERT_TYPES,
    RAW,
    AssertType,
    Context,
    Snapshots,
    SuiteError,
    deep_equal,
    dump_yaml,
    find,
    load_yaml,
    load_yaml_all,
)

PLUGIN_VERSION = (1, 1, 0)  # the helm-unittest release whose behaviour this runner reproduces
DEFAULT_KUBE_VERSION = ("1", "35")  # helm-unittest 1.1 is built with Helm 3.20 / client-go 0.35

__all__ = [
    "ASSERT_TYPES",
    "Case",
    "CaseResult",
    "Suite",
    "SuiteError",
    "build_set_value",
    "discover_suites",
    "find",
    "load_suites",
    "merge_tables",
    "record_new_snapshots",
    "run_case",
]


# --------------------------------------------------------------------------------------------------
# `set`: helm-unittest's BuildValueOfSetPath, and Helm's MergeTables.
# --------------------------------------------------------------------------------------------------


def build_set_value(path: str, value: Any) -> dict:
    """`a.b[1].c` + v -> {"a": {"b": [None, {"c": v}]}}; `a.[x.y]` addresses a key containing dots."""
    if not path:
        raise SuiteError("set: empty path")
    cursors: list[str | int] = []
    i = 0
    while i < len(path):
        if path[i] == "[":
            end = path.find("]", i)
            if end < 0:
                raise SuiteError(f"set {path!r}: unclosed '['")
            inner = path[i + 1 : end]
            if i == 0 or path[i - 1] == ".":
                cursors.append(inner)  # escaped key: a.[kueue.x-k8s.io/queue-name]
            elif re.fullmatch(r"\d+", inner):
                cursors.append(int(inner))
            else:
                raise SuiteError(f"set {path!r}: invalid index [{inner}]")
            i = end + 1
            if i < len(path) and path[i] not in ".[":
                raise SuiteError(f"set {path!r}: expected '.' or '[' after ']'")
            i += 1 if i < len(path) and path[i] == "." else 0
            continue
        j = i
        while j < len(path) and path[j] not in ".[":
            j += 1
        if j == i or any(c in path[i:j] for c in ",{}="):
            raise SuiteError(f"set {path!r}: invalid key at position {i}")
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


def merge_tables(new: dict, base: dict) -> dict:
    """Helm's chartutil.MergeTables(new, base): `new` wins; maps present in both merge; lists are replaced."""
    out = dict(new)
    for key, old in base.items():
        if key not in out:
            out[key] = old
        elif isinstance(out[key], dict) and isinstance(old, dict):
            out[key] = merge_tables(out[key], old)
    return out


# --------------------------------------------------------------------------------------------------
# Suites and cases.
# --------------------------------------------------------------------------------------------------

SUITE_KEYS = {
    "suite",
    "values",
    "set",
    "templates",
    "excludeTemplates",
    "release",
    "capabilities",
    "chart",
    "skip",
    "tests",
    "snapshotId",
    "includeCrds",
    "kubernetesProvider",
    "postRenderer",
}
TEST_KEYS = {
    "it",
    "values",
    "set",
    "template",
    "templates",
    "documentIndex",
    "documentSelector",
    "release",
    "capabilities",
    "chart",
    "skip",
    "asserts",
    "kubernetesProvider",
    "postRenderer",
}
NOT_IMPLEMENTED_KEYS = {"kubernetesProvider"}
RELEASE_KEYS = {"name", "namespace", "revision", "upgrade"}
CAPABILITY_KEYS = {"majorVersion", "minorVersion", "apiVersions"}
CHART_KEYS = {"version", "appVersion"}
POST_RENDERER_KEYS = {"cmd", "args"}
SELECTOR_KEYS = {"path", "value", "matchMany", "skipEmptyTemplates"}
ASSERT_OPTIONS = {"not", "template", "documentIndex", "documentSelector"}

_SUITE_SEPARATOR = re.compile(r"(?:^|\s*\n)---\s*")  # helm-unittest's (and Helm's) document splitter


@dataclass
class Suite:
    path: Path  # the suite file
    chart_dir: Path  # the chart rendered (for a suite in a subchart's tests/: the top chart)
    route: str  # where the suite's chart sits: "top" or "top/charts/sub"
    name: str
    spec: dict
    position: int = 0  # its place among the suites of its file
    cases: list[Case] = field(default_factory=list)

    @property
    def skip_reason(self) -> str | None:
        skip = self.spec.get("skip") or {}
        if skip.get("reason"):
            return str(skip["reason"])
        minimum = skip.get("minimumVersion")
        if minimum and _version(str(minimum)) > PLUGIN_VERSION:
            return f"requires helm-unittest {minimum}; this runner follows {'.'.join(map(str, PLUGIN_VERSION))}"
        return None


@dataclass
class Case:
    suite: Suite
    index: int
    name: str
    spec: dict
    assertions: list[ParsedAssertion]

    @property
    def id(self) -> str:
        return f"{self.suite.chart_dir.name}/{self.suite.path.name}::{self.name}"


@dataclass
class AssertionResult:
    index: int
    type: str
    passed: bool
    skipped: bool = False
    messages: list[str] = field(default_factory=list)


@dataclass
class CaseResult:
    case: Case
    passed: bool
    assertions: list[AssertionResult] = field(default_factory=list)
    error: str | None = None
    skipped: str | None = None
    new_snapshots: int = 0
    fresh_snapshots: dict[int, str] = field(default_factory=dict)  # what `helm unittest` would record for them

    def report(self) -> str:
        lines = [f"{self.case.id}: {'SKIPPED' if self.skipped else 'PASS' if self.passed else 'FAIL'}"]
        if self.error:
            lines.append(f"  error: {self.error}")
        for result in self.assertions:
            if not result.passed:
                lines.append(f"  - asserts[{result.index}] {result.type} failed:")
                lines.extend(f"      {line}" for message in result.messages for line in message.splitlines())
        return "\n".join(lines)


def _version(text: str) -> tuple[int, ...]:
    parts = re.findall(r"\d+", text.split("-")[0])
    return tuple(int(p) for p in (parts + ["0", "0", "0"])[:3])


def discover_suites(charts_dir: Path) -> list[tuple[Path, Path]]:
    """Every suite file `helm unittest charts/<chart>` runs, with the chart it runs in: the chart's
    tests/*_test.yaml, then (the plugin's default --with-subchart) those of its unpacked subcharts, recursively,
    except a subchart whose `condition` or `tags` the top chart's values.yaml turns off."""
    found = []
    for chart in sorted(p.parent for p in Path(charts_dir).glob("*/Chart.yaml")):
        values = load_yaml((chart / "values.yaml").read_text()) if (chart / "values.yaml").is_file() else {}
        found.extend((path, chart) for path in _suites_of(chart, values or {}))
    return found


def _suites_of(chart: Path, values: dict) -> list[Path]:
    paths = sorted(chart.glob("tests/*_test.yaml"))
    dependencies = {d.get("alias") or d.get("name"): d for d in _chart_meta(chart).get("dependencies") or []}
    for sub in sorted(p.parent for p in chart.glob("charts/*/Chart.yaml")):
        dependency = dependencies.get(_chart_meta(sub)["name"]) or {}
        if _enabled(dependency, values):
            paths.extend(_suites_of(sub, values))
    return paths


def _enabled(dependency: dict, values: dict) -> bool:
    """The plugin's isSubchartEnabled: the condition's path read in the values (true unless a bool says
    false), else the tags (on if any listed tag is true; on when none is set)."""
    if dependency.get("condition"):
        current: Any = values
        for part in str(dependency["condition"]).split("."):
            if not isinstance(current, dict) or part not in current:
                return True
            current = current[part]
        return current if isinstance(current, bool) else True
    tags, given = dependency.get("tags") or [], values.get("tags")
    if not tags or not isinstance(given, dict):
        return True
    return any(given.get(tag) is True for tag in tags)


def _route(path: Path, chart_dir: Path) -> str:
    """The suite's chart route: the top chart's name, then /charts/<name> per subchart level above tests/."""
    route = _chart_meta(chart_dir)["name"]
    relative = path.parent.resolve().relative_to(chart_dir.resolve()).parts
    for i in range(0, len(relative) - 1, 2):
        if relative[i] != "charts":
            break
        sub = chart_dir.joinpath(*relative[: i + 2])
        if not (sub / "Chart.yaml").is_file():
            break
        route += f"/charts/{_chart_meta(sub)['name']}"
    return route


def load_suites(path: Path, chart_dir: Path | None = None) -> list[Suite]:
    """The suites of one file (several may be separated by `---`).

    `chart_dir` is the chart the plugin was pointed at; by default the suite file's grandparent. A suite under
    `<chart_dir>/charts/<sub>/tests/` tests that subchart within its parent, as `helm unittest --with-subchart`.
    """
    path = Path(path)
    chart_dir = Path(chart_dir) if chart_dir else path.parent.parent
    if not (chart_dir / "Chart.yaml").is_file():
        raise SuiteError(f"{path}: no Chart.yaml in {chart_dir} (suites live in <chart>/tests/)")
    route = _route(path, chart_dir)
    suites = []
    for part in _SUITE_SEPARATOR.split(path.read_text()):
        if not part.strip():
            continue
        try:
            spec = load_yaml(part)
        except Exception as error:  # noqa: BLE001 - any YAML error is the suite's
            if "unknown escape character" not in str(error):
                raise SuiteError(f"{path}: not valid YAML: {error}") from None
            try:  # as the plugin does: retry with each odd run of backslashes made even (`\(` means `\\(`)
                spec = load_yaml(re.sub(r"\\+", lambda m: m.group(0) + "\\" * (len(m.group(0)) % 2), part))
            except Exception:  # noqa: BLE001
                raise SuiteError(f"{path}: not valid YAML: {error}") from None
        if spec is None:
            continue
        suites.append(_parse_suite(path, chart_dir, route, spec, len(suites)))
    if not suites:
        raise SuiteError(f"{path}: no suite in this file")
    return suites


def _keys(mapping: Any, known: set[str], where: str) -> dict:
    if mapping is None:
        return {}
    if not isinstance(mapping, dict):
        raise SuiteError(f"{where}: must be a mapping")
    unknown = set(mapping) - known
    if unknown:
        raise SuiteError(f"{where}: keys {sorted(unknown)} are not supported by this runner (known: {sorted(known)})")
    not_implemented = sorted(k for k in set(mapping) & NOT_IMPLEMENTED_KEYS if mapping[k])
    if not_implemented:
        raise SuiteError(f"{where}: {not_implemented} are helm-unittest keys this runner does not implement")
    return mapping


def _parse_suite(path: Path, chart_dir: Path, route: str, spec: Any, position: int) -> Suite:
    where = f"{path}" + (f" (suite {position + 1})" if position else "")
    spec = _keys(spec, SUITE_KEYS, where)
    tests = spec.get("tests")
    if not isinstance(tests, list) or not tests:
        raise SuiteError(f"{where}: no tests found ('tests' must be a non-empty list)")
    for key in ("templates", "excludeTemplates", "values"):
        if spec.get(key) is not None and not isinstance(spec[key], list):
            raise SuiteError(f"{where}: '{key}' must be a list")
    for key, known in (
        ("release", RELEASE_KEYS),
        ("capabilities", CAPABILITY_KEYS),
        ("chart", CHART_KEYS),
        ("skip", {"reason", "minimumVersion"}),
        ("postRenderer", POST_RENDERER_KEYS),
    ):
        _keys(spec.get(key), known, f"{where}: {key}")
    suite = Suite(
        path=path, chart_dir=chart_dir, route=route, name=str(spec.get("suite") or ""), spec=spec, position=position
    )
    for index, test in enumerate(tests):
        at = f"{where}: tests[{index}]"
        test = _keys(test, TEST_KEYS, at)
        for key, known in (
            ("release", RELEASE_KEYS),
            ("capabilities", CAPABILITY_KEYS),
            ("chart", CHART_KEYS),
            ("skip", {"reason"}),
            ("postRenderer", POST_RENDERER_KEYS),
        ):
            _keys(test.get(key), known, f"{at}.{key}")
        if test.get("documentSelector") is not None:  # without a path, only skipEmptyTemplates applies
            _keys(test["documentSelector"], SELECTOR_KEYS, f"{at}: documentSelector")
        if not isinstance(test.get("asserts"), list) or not test["asserts"]:
            raise SuiteError(f"{at}: no asserts found ('asserts' must be a non-empty list)")
        assertions = [_parse_assertion(a, f"{at}.asserts[{i}]") for i, a in enumerate(test["asserts"])]
        suite.cases.append(
            Case(suite=suite, index=index, name=str(test.get("it") or ""), spec=test, assertions=assertions)
        )
    return suite


@dataclass
class ParsedAssertion:
    type: str
    params: dict
    definition: AssertType
    negate: bool
    template: str | None
    document_index: int
    document_selector: dict | None


def _parse_assertion(assertion: Any, where: str) -> ParsedAssertion:
    if not isinstance(assertion, dict):
        raise SuiteError(f"{where}: an assertion must be a mapping")
    types = [key for key in assertion if key not in ASSERT_OPTIONS]
    if len(types) != 1:
        raise SuiteError(f"{where}: exactly one assertion type per assertion, got {types or 'none'}")
    name = types[0]
    if name not in ASSERT_TYPES:
        raise SuiteError(f"{where}: unknown assertion type {name!r}; known: {sorted(ASSERT_TYPES)}")
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
    index = assertion.get("documentIndex", -1)
    if isinstance(index, bool) or not isinstance(index, int):
        raise SuiteError(f"{where}: documentIndex must be an integer")
    selector = assertion.get("documentSelector")
    if selector is not None:
        _check_selector(selector, where)
    template = assertion.get("template")
    if template is not None and not isinstance(template, str):
        raise SuiteError(f"{where}: template must be a string")
    return ParsedAssertion(
        type=name,
        params=params,
        definition=definition,
        negate=negate,
        template=template,
        document_index=index,
        document_selector=selector,
    )


def _check_selector(selector: Any, where: str) -> None:
    _keys(selector, SELECTOR_KEYS, f"{where}: documentSelector")
    if not isinstance(selector.get("path"), str) or not selector["path"]:
        raise SuiteError(f"{where}: documentSelector needs a 'path' (string)")


# --------------------------------------------------------------------------------------------------
# The chart a test job renders: templates filtered as the plugin does, metadata overridden.
# --------------------------------------------------------------------------------------------------

_meta_cache: dict[Path, dict] = {}
_render_dirs: dict[tuple, Path] = {}
_scratch: str | None = None


def _chart_meta(chart_dir: Path) -> dict:
    key = Path(chart_dir).resolve()
    if key not in _meta_cache:
        _meta_cache[key] = load_yaml((key / "Chart.yaml").read_text()) or {}
    return _meta_cache[key]


def template_file_name(name: str) -> str:
    """The plugin's getTemplateFileName: `templates/` is prepended unless the name is already chart-relative."""
    if name.startswith(("templates", "charts", "crds", "**")):
        return name
    return f"templates/{name}"


def _name_pattern(name: str) -> re.Pattern:
    """The plugin's getTemplateFileNamePattern: `**` and `*` match path characters; found anywhere in the name."""
    pattern = name.replace(".", r"\.").replace("+", r"\+").replace("[", r"\[").replace("]", r"\]")
    pattern = pattern.replace("**", r"[0-9a-zA-Z_\-/\.]+").replace("*", r"[0-9a-zA-Z_\-_/\.]*")
    for char in "?(|){}^$":
        pattern = pattern.replace(char, "\\" + char)
    return re.compile(pattern)


def _selected(route: str, names: list[str]) -> list[re.Pattern]:
    return [_name_pattern(f"{route}/{template_file_name(str(n))}") for n in names]


def _keep_template(full_name: str, include: list[re.Pattern], exclude: list[re.Pattern]) -> bool:
    if Path(full_name).name.startswith("_"):
        return True
    return any(p.search(full_name) for p in include) and not any(p.search(full_name) for p in exclude)


def _filter_chart(
    chart_dir: Path, route: str, include: list[re.Pattern], exclude: list[re.Pattern], overrides: dict
) -> None:
    """In a copied chart: drop unselected templates (recursively into subcharts), expand packaged subcharts,
    apply `version`/`appVersion` to this chart (and, as the plugin does, to its direct subcharts)."""
    import helm_python

    templates = chart_dir / "templates"
    if templates.is_dir():
        for file in sorted(templates.rglob("*")):
            if file.is_file() and not _keep_template(f"{route}/{file.relative_to(chart_dir)}", include, exclude):
                file.unlink()
    if overrides:
        _override_metadata(chart_dir, overrides, top=True)
    charts = chart_dir / "charts"
    if not charts.is_dir():
        return
    for archive in sorted(charts.glob("*.tgz")):
        helm_python.expand(str(charts), str(archive))
        archive.unlink()
    for sub in sorted(p for p in charts.iterdir() if (p / "Chart.yaml").is_file()):
        name = load_yaml((sub / "Chart.yaml").read_text())["name"]
        _filter_chart(sub, f"{route}/charts/{name}", include, exclude, {})
        if overrides:
            _override_metadata(sub, overrides)


def _override_metadata(chart_dir: Path, overrides: dict, top: bool = False) -> None:
    """The plugin sets the version after Helm resolved the dependencies: so that an aliased subchart whose
    version changes is still found, the top chart's dependency entries ask for that version."""
    meta = load_yaml((chart_dir / "Chart.yaml").read_text())
    meta.update(overrides)
    if top and "version" in overrides:
        for dependency in meta.get("dependencies") or []:
            dependency["version"] = overrides["version"]
    (chart_dir / "Chart.yaml").unlink()  # maybe a hard link to the original
    (chart_dir / "Chart.yaml").write_text(json.dumps(meta))


def _link_or_copy(source: str, target: str) -> None:
    """Copies are hard links where the file system allows (files are only removed or replaced, never edited)."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def render_dir(suite: Suite, chart_overrides: dict) -> Path:
    """A copy of the chart holding what the plugin renders for this suite (made once per selection).

    Copying also resolves symlinked subcharts and unpacks packaged ones, so that their templates are filtered
    like the chart's own."""
    global _scratch
    include = [str(t) for t in suite.spec.get("templates") or []] or ["**"]
    exclude = [str(t) for t in suite.spec.get("excludeTemplates") or []]
    key = (
        suite.chart_dir.resolve(),
        suite.route,
        tuple(include),
        tuple(exclude),
        tuple(sorted(chart_overrides.items())),
    )
    if key not in _render_dirs:
        if _scratch is None:
            _scratch = tempfile.mkdtemp(prefix="helm-unittest-")
            atexit.register(shutil.rmtree, _scratch, True)
        target = Path(_scratch) / str(len(_render_dirs)) / suite.chart_dir.name
        shutil.copytree(suite.chart_dir, target, copy_function=_link_or_copy)
        top = _chart_meta(suite.chart_dir)["name"]
        _filter_chart(target, top, _selected(suite.route, include), _selected(suite.route, exclude), chart_overrides)
        _render_dirs[key] = target
    return _render_dirs[key]


# --------------------------------------------------------------------------------------------------
# Rendering a test job.
# --------------------------------------------------------------------------------------------------

# helm-unittest's parseRenderError, its (?msU) regex with the quantifiers made lazy for Python.
_RENDER_ERROR = re.compile(r"^(?:.+?: |.+? \()(?:(.+?):\d+:\d+).+?(?:.+?>)*?: (.+?)$", re.MULTILINE | re.DOTALL)


@dataclass
class RenderOutcome:
    ok: bool
    outputs: dict[str, list[dict]]  # template path (chart/templates/x.yaml) -> documents
    error: str | None = None  # an error not attributed to a template: failedTemplate matches it whole
    exec_error: str | None = None  # an error that stops the job (values file unreadable, output not YAML)
    post_rendered: bool = False


def _merged(case: Case) -> dict:
    """Values files, then the suite's `set`, then the test's, as helm-unittest's getUserValues merges them."""
    suite, test = case.suite, case.spec
    routes = suite.route.split("/")[::2]
    values: dict = {}
    for name in list(suite.spec.get("values") or []) + list(test.get("values") or []):
        file = Path(name) if Path(name).is_absolute() else suite.path.parent / name
        try:
            loaded = load_yaml(file.read_text()) or {}
        except OSError as error:
            raise _ExecError(f"values file {file}: {error.strerror}") from None
        except Exception as error:  # noqa: BLE001 - any YAML error
            raise _ExecError(f"failed to parse {name}: {error}") from None
        if not isinstance(loaded, dict):
            raise _ExecError(f"failed to parse {name}: a values file must be a mapping")
        values = merge_tables(_scoped(routes, loaded), values)
    for source in (suite.spec.get("set"), test.get("set")):
        if source is None:
            continue
        if not isinstance(source, dict):
            raise SuiteError(f"{suite.path}: 'set' must be a mapping of paths to values")
        for path, value in source.items():
            values = merge_tables(_scoped(routes, build_set_value(str(path), value)), values)
    return values


def _scoped(routes: list[str], values: dict) -> dict:
    """scopeValuesWithRoutes: values for a subchart's suite are nested under its name, `global` kept on top."""
    while len(routes) > 1:
        nested = {"global": values["global"]} if "global" in values else {}
        nested[routes[-1]] = values
        values, routes = nested, routes[:-1]
    return values


class _ExecError(Exception):
    pass


def _settings(case: Case) -> tuple[dict, dict, dict]:
    """Release options, capabilities and chart metadata of a job: the test's, else the suite's."""
    suite_spec, test = case.suite.spec, case.spec
    s_rel, t_rel = suite_spec.get("release") or {}, test.get("release") or {}
    release = {key: t_rel.get(key) or s_rel.get(key) for key in RELEASE_KEYS}
    s_cap, t_cap = suite_spec.get("capabilities") or {}, test.get("capabilities") or {}
    major = str(t_cap.get("majorVersion") or s_cap.get("majorVersion") or DEFAULT_KUBE_VERSION[0])
    minor = str(t_cap.get("minorVersion") or s_cap.get("minorVersion") or DEFAULT_KUBE_VERSION[1])
    if "apiVersions" in t_cap:
        listed = t_cap["apiVersions"]
        api = [v for v in listed if isinstance(v, str)] if isinstance(listed, list) else []
        if isinstance(listed, list):  # `apiVersions:` left empty (null) drops the suite's list as well
            api += list(s_cap.get("apiVersions") or [])
    else:
        api = list(s_cap.get("apiVersions") or [])
    s_chart, t_chart = suite_spec.get("chart") or {}, test.get("chart") or {}
    chart = {
        key: str(t_chart.get(key) or s_chart.get(key)) for key in CHART_KEYS if t_chart.get(key) or s_chart.get(key)
    }
    return release, {"kube_version": f"v{major}.{minor}.0", "api_versions": api}, chart


def render_case(case: Case) -> tuple[RenderOutcome, bool]:
    """Render the chart for one test job: the outcome, and whether the whole render must succeed."""
    import helm_python
    from helm_python import (
        _native,  # Chart.render does not expose kube_version / api_versions
    )

    require_success = all(a.definition.requires_render for a in case.assertions)
    release, capabilities, chart_overrides = _settings(case)
    name = release["name"] or "RELEASE-NAME"
    try:
        values = _merged(case)
    except _ExecError as error:
        return RenderOutcome(ok=False, outputs={}, exec_error=str(error)), require_success
    if release["name"]:
        try:
            helm_python.validate_release_name(str(name))
        except helm_python.HelmError as error:
            return RenderOutcome(ok=False, outputs={}, error=str(error)), require_success
    options = {
        "name": str(name),
        "namespace": str(release["namespace"] or "NAMESPACE"),
        "revision": int(release["revision"] or 0),
        "is_upgrade": bool(release["upgrade"]),
        "is_install": not release["upgrade"],
        **capabilities,
    }
    directory = render_dir(case.suite, chart_overrides)
    # Loaded for each job (about a millisecond): rendering drops the subcharts a condition disables from the
    # loaded chart, which must not leak into the next job.
    chart = helm_python.Chart.load(str(directory))
    crds = chart.crds if case.suite.spec.get("includeCrds") is True else []
    try:
        rendered = json.loads(_native.call_string("helm_render", chart._raw(), json.dumps(values), json.dumps(options)))
    except helm_python.HelmValuesError as error:
        return RenderOutcome(ok=False, outputs={}, error=str(error)), require_success
    except helm_python.HelmError as error:
        message = _helm3_message(str(error))
        parsed = _RENDER_ERROR.search(message)
        if require_success or not parsed:
            return RenderOutcome(ok=False, outputs={}, error=message), require_success
        lines = message.split("\n", 1)
        text = lines[1] if len(lines) > 1 else parsed.group(2)
        file = parsed.group(1)
        if Path(file).name.startswith("_"):
            targets = [
                f"{case.suite.route}/{template_file_name(t)}" for t in case.suite.spec.get("templates") or ["**"]
            ]
        else:
            targets = [file]
        rendered = {t: dump_yaml({RAW: text}) for t in targets}
        ok = False
    else:
        ok = True
    finally:
        chart.close()
    post_renderer = case.spec.get("postRenderer") or case.suite.spec.get("postRenderer")
    try:
        if post_renderer:
            rendered = post_render(rendered, post_renderer)
        outputs: dict[str, list[dict]] = {crd["filename"]: _documents(crd["data"], crd["filename"]) for crd in crds}
        for path, text in rendered.items():
            if ok and path.endswith(".txt"):
                outputs[path] = [{RAW: text}]
            elif not ok or path.endswith((".yaml", ".yml", ".tpl")):
                outputs[path] = _documents(text, path)
    except _ExecError as error:
        return RenderOutcome(ok=False, outputs={}, exec_error=str(error)), require_success
    return RenderOutcome(ok=ok, outputs=outputs, post_rendered=bool(post_renderer)), require_success


_FILE_MARK = "#### file:"


def post_render(rendered: dict[str, str], config: dict) -> dict[str, str]:
    """helm-unittest's postRenderer: every output (sorted by name) joined into one stream, each after a
    `---` and `#### file: <name>` line, piped through the command, and split back on those lines; a stream
    that lost them becomes the one output `manifest.yaml`."""
    stream = "".join(f"---\n{_FILE_MARK} {name}\n{rendered[name].strip()}\n" for name in sorted(rendered))
    command = [str(config.get("cmd") or "")] + [str(a) for a in config.get("args") or []]
    try:
        done = subprocess.run(command, input=stream, capture_output=True, text=True, check=False)
    except OSError as error:
        raise _ExecError(f"post-render failed: {command[0]}: {error.strerror}") from None
    if done.returncode:
        raise _ExecError(f"post-render failed: {' '.join(command)} exited {done.returncode}: {done.stderr.strip()}")
    blocks = re.split(f"(?=---\n{_FILE_MARK})", done.stdout)
    split = {}
    for block in blocks:
        mark = re.search(f"{_FILE_MARK} (.*)", block)
        if block and mark:
            split[mark.group(1)] = block.removeprefix(f"---\n{mark.group(0)}\n")
    return split or {"manifest.yaml": done.stdout}


_API_CHECK = re.compile(r"""APIVersions\.Has\s+["'`]([^"'`]+)["'`]""")
_api_checks: dict[Path, set[str]] = {}
_builtin: list[set[str]] = []


def _builtin_api_versions() -> set[str]:
    """The API versions Helm always offers (`.Capabilities.APIVersions`), read once from a probe chart."""
    import helm_python

    if not _builtin:
        with tempfile.TemporaryDirectory() as probe:
            (Path(probe) / "templates").mkdir()
            (Path(probe) / "Chart.yaml").write_text("apiVersion: v2\nname: probe\nversion: 0.1.0\n")
            (Path(probe) / "templates" / "v.yaml").write_text("{{ toJson .Capabilities.APIVersions }}")
            chart = helm_python.Chart.load(probe)
            try:
                _builtin.append(set(json.loads(chart.render({}, name="probe")["probe/templates/v.yaml"])))
            finally:
                chart.close()
    return _builtin[0]


_template_lists: dict[Path, list[Path]] = {}


def _template_files(directory: Path) -> list[Path]:
    """Every file under a templates/ folder of the chart copy or its subcharts."""
    if directory not in _template_lists:
        _template_lists[directory] = [
            f for f in directory.rglob("*") if f.is_file() and "templates" in f.relative_to(directory).parts
        ]
    return _template_lists[directory]


def _api_versions_asked(file: Path) -> set[str]:
    if file not in _api_checks:
        _api_checks[file] = set(_API_CHECK.findall(file.read_text(errors="replace"))) if file.is_file() else set()
    return _api_checks[file]


def check_api_versions(case: Case) -> None:
    """helm-unittest offers templates only the listed `apiVersions`; Helm here always has its built-in ones.
    If a template the job asserts on (or any partial) asks for a built-in version the job does not list, the
    answer would differ: refuse the job rather than give a verdict the plugin might not."""
    _, capabilities, chart_overrides = _settings(case)
    directory = render_dir(case.suite, chart_overrides)
    top = case.suite.route.split("/")[0]
    names = [n for a in case.assertions for n in _assertion_names(case, a)]
    every = _template_files(directory)
    if any("*" in n for n in names):
        files = every
    else:
        files = [
            directory / t.split("/", 1)[1]
            for t in (f"{case.suite.route}/{template_file_name(n)}" for n in names)
            if t.startswith(f"{top}/")
        ]
        files += [f for f in every if f.name.startswith("_")]
    asked = set().union(set(), *(_api_versions_asked(f) for f in files))
    differing = sorted((asked & _builtin_api_versions()) - set(capabilities["api_versions"]))
    if differing:
        raise SuiteError(
            f"{case.suite.path}: test {case.name!r}: templates check .Capabilities.APIVersions.Has "
            f"{differing}, which helm-unittest answers false unless the test lists them under "
            "capabilities.apiVersions, and this runner's Helm answers true: list them"
        )


_HELM4_LOCATION = re.compile(r"^[^\s:]+:\d+:\d+$")


def _helm3_message(message: str) -> str:
    """Helm 4 splits a template execution error over indented lines; put it back in Helm 3's one-line form
    (`template: FILE:L:C: executing "FILE" at <...>: cause`), which the plugin parses and suites match."""
    lines = message.split("\n")
    if len(lines) < 2 or not _HELM4_LOCATION.match(lines[0]):
        return message
    return f"template: {lines[0]}: " + " ".join(line.strip() for line in lines[1:])


def _documents(text: str, path: str) -> list[dict]:
    try:
        documents = load_yaml_all(_SUITE_SEPARATOR.sub("\n---\n", text))
    except Exception as error:  # noqa: BLE001 - any YAML error
        raise _ExecError(f"{path}: rendered output is not valid YAML: {error}") from None
    for document in documents:
        if document is not None and not isinstance(document, dict):
            raise _ExecError(f"{path}: a rendered document is not a mapping")
    return [doc for doc in documents if doc]


# --------------------------------------------------------------------------------------------------
# Running a test job.
# --------------------------------------------------------------------------------------------------


def _select(documents: dict[str, list[dict] | None], index: int, selector: dict | None) -> dict[str, list[dict]]:
    """Documents per template by documentSelector, else documentIndex (-1: all); AssertionError if none fit."""
    if selector and selector.get("path"):
        selected: dict[str, list[dict]] = {}
        total = 0
        for template, docs in documents.items():
            matching = []
            for doc in docs or []:
                values = find(doc, selector["path"])
                if any(selector.get("value") is None or deep_equal(selector["value"], v) for v in values):
                    if matching and not selector.get("matchMany"):
                        raise AssertionError("multiple indexes found")
                    matching.append(doc)
            if not matching and not selector.get("skipEmptyTemplates"):
                raise AssertionError("document not found")
            total += len(matching)
            if not selector.get("matchMany") and total > 1:
                raise AssertionError("multiple indexes found")
            if matching or not selector.get("skipEmptyTemplates"):
                selected[template] = matching
        return selected
    if index != -1:
        selected = {}
        for template, docs in documents.items():
            if index >= len(docs or []):
                raise AssertionError(f"document index {index} is out of range")
            selected[template] = [(docs or [])[index]]
        return selected
    return {template: list(docs or []) for template, docs in documents.items()}


def _assertion_names(case: Case, parsed: ParsedAssertion) -> list[str]:
    """The template names an assertion checks, as written: its own, else the test's, else the suite's."""
    test = case.spec
    if parsed.template:
        return [parsed.template]
    if test.get("templates"):
        return [str(t) for t in test["templates"]]
    if test.get("template"):
        return [str(test["template"])]
    return [str(t) for t in case.suite.spec.get("templates") or []] or ["**"]


def _assertion_templates(case: Case, parsed: ParsedAssertion, outcome: RenderOutcome) -> list[str]:
    """The templates an assertion checks, as chart-route paths (polishAssertionsTemplate); a wildcard in the
    suite's templates means every rendered one."""
    names = _assertion_names(case, parsed)
    if not (parsed.template or case.spec.get("templates") or case.spec.get("template")) and any(
        "*" in n for n in names
    ):
        return list(outcome.outputs)
    return [f"{case.suite.route}/{template_file_name(n)}" for n in names]


def run_assertion(case: Case, parsed: ParsedAssertion, outcome: RenderOutcome, snapshots: Snapshots) -> AssertionResult:
    test = case.spec
    result = AssertionResult(index=0, type=parsed.type, passed=False)
    index = test["documentIndex"] if test.get("documentIndex") is not None else parsed.document_index
    selector = parsed.document_selector or test.get("documentSelector")
    if outcome.post_rendered and len(outcome.outputs) == 1 and next(iter(outcome.outputs)).endswith("manifest.yaml"):
        templates = dict(outcome.outputs)  # a post-renderer that dropped the file marks: its whole output
    else:
        templates = {t: outcome.outputs.get(t) for t in _assertion_templates(case, parsed, outcome)}
    try:
        selected = _select(templates, index, selector)
    except AssertionError as error:
        result.messages = [f"Error: {error}"]
        return result
    requires = parsed.definition.requires_render
    negative = parsed.negate != parsed.definition.antonym
    if not selected:
        if (test.get("documentSelector") or {}).get("skipEmptyTemplates"):
            result.passed, result.skipped = True, True
            return result
        if requires != outcome.ok:
            result.messages = ["rendered manifest is empty"]
            return result
        result.passed, result.messages = parsed.definition.validator(
            parsed.params, Context([], [], negative, outcome.error, snapshots)
        )
        return result
    result.passed = True
    for template in sorted(selected):
        rendered = outcome.outputs.get(template)
        if rendered is None and requires:
            ok, why = False, [f'template "{template}" not exists or not selected in test suite']
        elif requires != outcome.ok:
            ok, why = (
                False,
                [
                    f"Invalid rendering: {rendered[0].get(RAW)}"
                    if rendered
                    else f"rendered manifest is empty{': ' + outcome.error if outcome.error else ''}"
                ],
            )
        else:
            ok, why = parsed.definition.validator(
                parsed.params, Context(rendered or [], selected[template], negative, outcome.error, snapshots)
            )
        if not ok:
            result.passed = False
            result.messages.append(f"Template: {template}")
            result.messages.extend(why)
    return result


_snapshot_files: dict[Path, dict] = {}


def _snapshot_cache(suite: Suite) -> dict:
    """The recorded snapshots of a suite file: `__snapshot__/<file>.snap` (`<file>_<n>` for a rendered suite)."""
    path = suite.path.parent / "__snapshot__" / f"{suite.path.name}.snap"
    if path not in _snapshot_files:
        _snapshot_files[path] = (load_yaml(path.read_text()) or {}) if path.is_file() else {}
    return _snapshot_files[path]


def run_case(case: Case) -> CaseResult:
    """Render the chart for one test job and evaluate its assertions, as `helm unittest` does."""
    reason = case.suite.skip_reason or (case.spec.get("skip") or {}).get("reason")
    if reason:
        return CaseResult(case=case, passed=True, skipped=str(reason))
    check_api_versions(case)
    outcome, require_success = render_case(case)
    if outcome.exec_error:
        return CaseResult(case=case, passed=False, error=outcome.exec_error)
    snapshots = Snapshots(cached=_snapshot_cache(case.suite), test=case.name)
    result = CaseResult(case=case, passed=True)
    if not outcome.ok and require_success:
        result.error = f"rendering failed: {outcome.error}"
    for a_index, parsed in enumerate(case.assertions):
        assertion = run_assertion(case, parsed, outcome, snapshots)
        assertion.index = a_index
        result.assertions.append(assertion)
        result.passed = result.passed and assertion.passed
    result.new_snapshots = snapshots.new
    result.fresh_snapshots = snapshots.fresh
    return result


def record_new_snapshots(result: CaseResult) -> None:
    """Add a test's snapshots that were not recorded yet to its suite's `__snapshot__/<file>.snap`, as the
    plugin does on a first run; recorded ones are left as they are."""
    if not result.fresh_snapshots:
        return
    path = result.case.suite.path.parent / "__snapshot__" / f"{result.case.suite.path.name}.snap"
    cache = _snapshot_cache(result.case.suite)
    cache.setdefault(result.case.name, {}).update(result.fresh_snapshots)
    path.parent.mkdir(exist_ok=True)
    path.write_text(
        "".join(
            f"{json.dumps(test)}:\n"
            + "".join(
                f"  {n}: |\n" + "".join(f"    {line}\n" if line else "\n" for line in text.splitlines())
                for n, text in sorted(snaps.items())
            )
            for test, snaps in sorted(cache.items())
        )
    )
