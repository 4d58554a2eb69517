"""Render charts with the real Helm engine, as `helm template -f ... --set ...` does.

Values files are merged in order (maps merged key by key, everything else
replaced); then each `--set` is parsed by Helm's own strvals parser (exposed by
`helm-python-sdk`) and applied on top with strvals' ParseInto semantics: a
`key[i]` index updates that element of an existing list and keeps the rest, while
`key={a,b}` replaces the list. Used by the test harness and the local runner.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from llmft.errors import UserError


@dataclass
class Rendered:
    """The output of one render: manifests in template order, plus NOTES.txt."""

    templates: dict[str, str]
    documents: list[dict[str, Any]] = field(default_factory=list)
    notes: str = ""

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [doc for doc in self.documents if doc.get("kind") == kind]

    def one(self, kind: str) -> dict[str, Any]:
        found = self.of_kind(kind)
        if len(found) != 1:
            raise AssertionError(f"expected one {kind}, rendered {len(found)}")
        return found[0]


def merge_maps(base: dict, override: dict) -> dict:
    """Helm's values-file merge: nested maps merge, other values (lists too) replace."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_maps(merged[key], value)
        else:
            merged[key] = value
    return merged


def _indexed(expression: str, key: str) -> bool:
    return re.search(r"(?:^|[.,\]])" + re.escape(key) + r"\[", expression) is not None


def _apply(base: Any, parsed: Any, expression: str, key: str | None) -> Any:
    if isinstance(parsed, dict):
        target = dict(base) if isinstance(base, dict) else {}
        for child_key, child in parsed.items():
            target[child_key] = _apply(target.get(child_key), child, expression, child_key)
        return target
    if isinstance(parsed, list) and key is not None and _indexed(expression, key) and isinstance(base, list):
        items = list(base)
        for index, item in enumerate(parsed):
            if index >= len(items):
                items.append(item)
            elif item is not None:
                items[index] = _apply(items[index], item, expression, None)
        return items
    return parsed


def apply_set(values: dict, expression: str, kind: str = "set") -> dict:
    """Apply one `--set`, `--set-string` or `--set-json` expression to `values`, as Helm does."""
    import helm_python

    parser = {
        "set": helm_python.parse_set_string,
        "set-string": helm_python.parse_set_string_values,
        "set-json": helm_python.parse_set_json,
    }[kind]
    try:
        parsed = parser(expression)
    except helm_python.HelmError as error:
        raise UserError(f"--{kind} {expression!r}: {error}") from None
    return _apply(values, parsed, expression, None)


def load_values_file(path: Path) -> dict:
    from llmft.yamlfile import read_yaml

    path = Path(path)
    data = read_yaml(path, "values file")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: a values file must be a YAML mapping, got {type(data).__name__}")
    return data


def compose_values(
    values_files: Sequence[Path] = (),
    set_values: Sequence[str] = (),
    set_string_values: Sequence[str] = (),
    set_json_values: Sequence[str] = (),
) -> dict:
    """The user-supplied values of `helm template -f F... --set-json J... --set S... --set-string T...`.

    Helm applies them in this order whatever the order on the command line.
    """
    values: dict = {}
    for path in values_files:
        values = merge_maps(values, load_values_file(path))
    for kind, expressions in (("set-json", set_json_values), ("set", set_values), ("set-string", set_string_values)):
        for expression in expressions:
            values = apply_set(values, expression, kind)
    return values


def render_chart(
    chart_dir: Path,
    values: dict | None = None,
    *,
    values_files: Sequence[Path] = (),
    set_values: Sequence[str] = (),
    set_string_values: Sequence[str] = (),
    set_json_values: Sequence[str] = (),
    release_name: str = "release",
    namespace: str = "default",
) -> Rendered:
    """Render `chart_dir` offline with the real Helm engine; raise UserError on any Helm error."""
    import helm_python

    if not (Path(chart_dir) / "Chart.yaml").is_file():
        raise UserError(f"{chart_dir} is not a chart folder (no Chart.yaml)")
    supplied = merge_maps(compose_values(values_files, set_values, set_string_values, set_json_values), values or {})
    try:
        helm_python.validate_release_name(release_name)
    except helm_python.HelmError as error:
        raise UserError(f"release name {release_name!r} is invalid: {error}") from None
    with tempfile.TemporaryDirectory(prefix="llmft-chart-") as scratch:
        # The charts reach the library chart through a symlink; Helm logs a line on stderr for every
        # symlink it loads, so it reads a copy with the links resolved (a few small files).
        resolved = Path(scratch) / Path(chart_dir).name
        shutil.copytree(chart_dir, resolved, symlinks=False)
        chart = helm_python.Chart.load(str(resolved))
        try:
            templates = chart.render(supplied, name=release_name, namespace=namespace, is_install=True)
        except helm_python.HelmError as error:
            raise UserError(f"helm template {chart_dir}: {error}") from None
        finally:
            chart.close()
    rendered = Rendered(templates=templates)
    for path in sorted(templates, key=_template_order):
        text = templates[path]
        if path.endswith("NOTES.txt"):
            rendered.notes = text
            continue
        try:
            documents = list(yaml.safe_load_all(text))
        except yaml.YAMLError as error:  # e.g. `--set gpuResourceName=null` left a key empty
            mark = getattr(error, "problem_mark", None)
            where = f"{path}:{mark.line + 1}" if mark else path
            raise UserError(
                f"helm template {chart_dir}: {where} renders as invalid YAML ({error.problem}): a value "
                "the template uses is probably null or missing; check the --set and -f values"
            ) from None
        rendered.documents.extend(document for document in documents if document)
    return rendered


def _template_order(path: str) -> tuple[int, str]:
    # Helm sorts by kind when installing; for reading, keep ConfigMaps/Secrets first.
    name = path.rsplit("/", 1)[-1]
    return (0 if "configmap" in name or "secret" in name else 1, path)


def lint_chart(chart_dir: Path, values: dict | None = None, strict: bool = True) -> list[str]:
    """Helm's linter: the list of warnings and errors (empty when clean)."""
    import helm_python

    report = helm_python.lint(str(chart_dir), values or {}, strict=strict, quiet=False)
    problems = [
        f"{m.get('path', '')}: {m.get('error', '')}"
        for m in report.get("messages", [])
        if int(m.get("severity", 0)) >= 2
    ]
    return problems + list(report.get("errors") or [])
