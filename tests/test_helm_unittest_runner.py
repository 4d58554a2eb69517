"""The helm-unittest runner itself, on a fixture chart: each assertion type passes and fails as the plugin's do.

The fixture suites live in tests/fixtures/helm-unittest/demo/tests/: `passing_test.yaml` and `scoped_test.yaml`
must pass case by case, every case of `failing_test.yaml` must fail (their snapshots are in `__snapshot__/`).
Malformed suites (unknown assertion types, unknown parameters) and suites using what the runner does not
implement are written to a copy of the chart here and must be rejected loudly. That the verdicts are
helm-unittest's own is proven on the plugin's fixtures by tests/test_helm_unittest_fidelity.py.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from helm_unittest import (
    ASSERT_TYPES,
    SuiteError,
    build_set_value,
    discover_suites,
    find,
    load_suites,
    merge_tables,
    run_case,
)
from helm_unittest_asserts import go_regex, load_yaml

DEMO = Path(__file__).parent / "fixtures" / "helm-unittest" / "demo"
PASSING = [DEMO / "tests" / "passing_test.yaml", DEMO / "tests" / "scoped_test.yaml"]
FAILING = DEMO / "tests" / "failing_test.yaml"


def _cases_of(path):
    return [case for suite in load_suites(path) for case in suite.cases]


def _cases(paths):
    return [pytest.param(case, id=f"{case.suite.path.stem}::{case.name}") for path in paths for case in _cases_of(path)]


@pytest.mark.parametrize("case", _cases(PASSING))
def test_passing_fixture_case_passes(case):
    result = run_case(case)
    assert result.passed, result.report()


@pytest.mark.parametrize("case", _cases([FAILING]))
def test_failing_fixture_case_fails(case):
    result = run_case(case)
    assert not result.passed, f"{case.name}: expected a failure, the runner passed it"
    # Every failing case has one assertion: the failure is that assertion's (or the render's), never a crash.
    assert result.error or [a for a in result.assertions if not a.passed]


def _types_used(path: Path) -> set[str]:
    used = set()
    for test in yaml.safe_load(path.read_text())["tests"]:
        for assertion in test["asserts"]:
            used.update(k for k in assertion if k not in ("not", "template", "documentIndex", "documentSelector"))
    return used


def test_every_assertion_type_is_exercised_passing_and_failing():
    passing = set().union(*(_types_used(p) for p in PASSING))
    failing = _types_used(FAILING)
    assert set(ASSERT_TYPES) - passing == set()
    assert set(ASSERT_TYPES) - failing == set()


def test_skipped_case_reports_its_reason():
    case = next(c for c in _cases_of(PASSING[0]) if c.spec.get("skip"))
    result = run_case(case)
    assert result.skipped == "demonstrates skip"


def test_failure_report_names_path_expected_and_actual():
    case = next(c for c in _cases_of(FAILING) if c.name == "equal fails on a different value")
    report = run_case(case).report()
    assert "asserts[0] equal failed" in report
    assert "demo/templates/deployment.yaml" in report
    assert "path spec.replicas: expected to equal:" in report and "actual:" in report


@pytest.fixture
def chart_copy(tmp_path):
    """A copy of the demo chart without its suites, for writing malformed ones."""
    target = tmp_path / "demo"
    shutil.copytree(DEMO, target, ignore=shutil.ignore_patterns("*_test.yaml"))
    return target


def _write_suite(chart: Path, tests: list, **suite) -> Path:
    path = chart / "tests" / "bad_test.yaml"
    path.write_text(
        yaml.safe_dump(
            {"suite": "bad", "templates": ["deployment.yaml"], "release": {"name": "r"}, **suite, "tests": tests}
        )
    )
    return path


@pytest.mark.parametrize(
    "assertion, message",
    [
        ({"isFoo": {"path": "kind"}}, "unknown assertion type 'isFoo'"),
        ({"lessThan": {"path": "spec", "value": 1}}, "unknown assertion type 'lessThan'"),
        ({"equal": {"path": "kind", "vaule": "Deployment"}}, r"unknown parameters \['vaule'\]"),
        ({"equal": {"path": "kind"}}, r"missing parameters \['value'\]"),
        ({"exists": {"path": "kind"}, "notExists": {"path": "kind"}}, "exactly one assertion type"),
        ({"not": True}, "exactly one assertion type"),
    ],
)
def test_malformed_assertion_fails_loudly(chart_copy, assertion, message):
    path = _write_suite(chart_copy, [{"it": "x", "asserts": [assertion]}])
    with pytest.raises(SuiteError, match=message):
        load_suites(path)


@pytest.mark.parametrize(
    "test, message",
    [
        ({"kubernetesProvider": {"objects": [{"kind": "Pod"}]}}, "does not implement"),
        ({"includeCrds": True}, r"keys \['includeCrds'\] are not supported"),  # a suite key only
        ({"postRenderer": {"command": "yq"}}, r"keys \['command'\] are not supported"),
        ({"capabilitis": {"majorVersion": 1}}, r"keys \['capabilitis'\] are not supported"),
        ({"release": {"nmae": "x"}}, r"keys \['nmae'\] are not supported"),
    ],
)
def test_unsupported_or_misspelt_keys_fail_loudly(chart_copy, test, message):
    path = _write_suite(chart_copy, [{"it": "x", **test, "asserts": [{"exists": {"path": "kind"}}]}])
    with pytest.raises(SuiteError, match=message):
        load_suites(path)


def test_default_release_is_helm_unittests(chart_copy):
    """No release in the suite: RELEASE-NAME in NAMESPACE, as the plugin renders (and does not validate) it."""
    path = _write_suite(
        chart_copy,
        [
            {
                "it": "x",
                "asserts": [
                    {"equal": {"path": "metadata.name", "value": "RELEASE-NAME-demo"}},
                    {"equal": {"path": "metadata.namespace", "value": "NAMESPACE"}},
                ],
            }
        ],
        release={},
    )
    result = run_case(_cases_of(path)[0])
    assert result.passed, result.report()


def test_several_suites_in_one_file_and_capabilities(chart_copy):
    """Suites separated by `---` each run; capabilities reach .Capabilities; chart overrides reach .Chart."""
    (chart_copy / "templates" / "caps.yaml").write_text(
        "kind: Caps\nkube: {{ .Capabilities.KubeVersion.Version }}\n"
        'custom: {{ .Capabilities.APIVersions.Has "example.com/v9" }}\nversion: {{ .Chart.Version }}\n'
    )
    first = {
        "suite": "one",
        "templates": ["caps.yaml"],
        "tests": [
            {
                "it": "defaults",
                "asserts": [
                    {"equal": {"path": "kube", "value": "v1.35.0"}},
                    {"equal": {"path": "custom", "value": False}},
                ],
            }
        ],
    }
    second = {
        "suite": "two",
        "templates": ["caps.yaml"],
        "capabilities": {"minorVersion": 20},
        "chart": {"version": "9.9.9"},
        "tests": [
            {
                "it": "overridden",
                "capabilities": {"apiVersions": ["example.com/v9"]},
                "asserts": [
                    {"equal": {"path": "kube", "value": "v1.20.0"}},
                    {"equal": {"path": "custom", "value": True}},
                    {"equal": {"path": "version", "value": "9.9.9"}},
                ],
            }
        ],
    }
    path = chart_copy / "tests" / "multi_test.yaml"
    path.write_text(yaml.safe_dump(first) + "---\n" + yaml.safe_dump(second))
    suites = load_suites(path)
    assert [s.name for s in suites] == ["one", "two"]
    for suite in suites:
        result = run_case(suite.cases[0])
        assert result.passed, result.report()


def test_a_builtin_api_version_check_fails_loudly_unless_listed(chart_copy):
    """helm-unittest answers APIVersions.Has "policy/v1" false unless listed; Helm here always says true."""
    (chart_copy / "templates" / "pdb.yaml").write_text(
        '{{- if .Capabilities.APIVersions.Has "policy/v1" }}\nkind: PodDisruptionBudget\n{{- end }}\n'
    )
    path = _write_suite(
        chart_copy,
        [
            {"it": "unlisted", "asserts": [{"hasDocuments": {"count": 0}}]},
            {
                "it": "listed",
                "capabilities": {"apiVersions": ["policy/v1"]},
                "asserts": [{"hasDocuments": {"count": 1}}],
            },
        ],
        templates=["pdb.yaml"],
    )
    unlisted, listed = _cases_of(path)
    with pytest.raises(SuiteError, match="policy/v1"):
        run_case(unlisted)
    result = run_case(listed)
    assert result.passed, result.report()


def test_discovery_includes_enabled_subcharts_suites(tmp_path):
    """As `helm unittest` (--with-subchart on by default): subcharts' suites run in their parent, unless the
    parent's values turn the subchart off."""
    top = tmp_path / "top"
    for sub in ("on", "off"):
        (top / "charts" / sub / "tests").mkdir(parents=True)
        (top / "charts" / sub / "Chart.yaml").write_text(f"apiVersion: v2\nname: {sub}\nversion: 0.1.0\n")
        (top / "charts" / sub / "tests" / "x_test.yaml").write_text("tests: []\n")
    (top / "tests").mkdir()
    (top / "tests" / "a_test.yaml").write_text("tests: []\n")
    (top / "Chart.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v2",
                "name": "top",
                "version": "0.1.0",
                "dependencies": [
                    {"name": "on", "version": "0.1.0"},
                    {"name": "off", "version": "0.1.0", "condition": "off.enabled"},
                ],
            }
        )
    )
    (top / "values.yaml").write_text("off:\n  enabled: false\n")
    found = [(path.relative_to(tmp_path).as_posix(), chart.name) for path, chart in discover_suites(tmp_path)]
    assert found == [("top/tests/a_test.yaml", "top"), ("top/charts/on/tests/x_test.yaml", "top")]


def test_post_renderer_rewrites_the_outputs(chart_copy):
    """The suite's post-renderer (here sed) edits every output; a test's own replaces it; one that drops the
    `#### file:` marks leaves a single manifest.yaml that every assertion reads; a failing one fails the test."""
    path = _write_suite(
        chart_copy,
        [
            {
                "it": "suite's",
                "asserts": [{"equal": {"path": "spec.template.spec.containers[0].image", "value": "alpine:3"}}],
            },
            {
                "it": "test's",
                "postRenderer": {"cmd": "sed", "args": ["s/busybox:1.36/debian:12/"]},
                "asserts": [{"equal": {"path": "spec.template.spec.containers[0].image", "value": "debian:12"}}],
            },
            {
                "it": "marks dropped",
                "postRenderer": {"cmd": "grep", "args": ["-v", "^####"]},
                "asserts": [{"isKind": {"of": "Deployment"}}, {"hasDocuments": {"count": 1}}],
            },
            {"it": "failing", "postRenderer": {"cmd": "false"}, "asserts": [{"exists": {"path": "kind"}}]},
        ],
        postRenderer={"cmd": "sed", "args": ["s/busybox:1.36/alpine:3/"]},
    )
    results = {case.name: run_case(case) for case in _cases_of(path)}
    for name in ("suite's", "test's", "marks dropped"):
        assert results[name].passed, results[name].report()
    assert not results["failing"].passed
    assert "post-render failed" in results["failing"].error


def test_include_crds_adds_the_crd_files(chart_copy):
    (chart_copy / "crds").mkdir()
    (chart_copy / "crds" / "thing.yaml").write_text(
        "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: things.example.com\n"
    )
    crd = {"isKind": {"of": "CustomResourceDefinition"}, "template": "crds/thing.yaml"}
    with_crds = _write_suite(chart_copy, [{"it": "x", "asserts": [crd]}], includeCrds=True)
    assert run_case(_cases_of(with_crds)[0]).passed
    without = _write_suite(chart_copy, [{"it": "x", "asserts": [crd]}])
    assert not run_case(_cases_of(without)[0]).passed


def test_unknown_template_in_suite_fails_the_assertion(chart_copy):
    path = _write_suite(
        chart_copy, [{"it": "x", "asserts": [{"exists": {"path": "kind"}}]}], templates=["deploymnet.yaml"]
    )
    result = run_case(_cases_of(path)[0])
    assert not result.passed
    assert 'template "demo/templates/deploymnet.yaml" not exists' in result.report()


def test_subchart_templates_are_selected_and_filtered(chart_copy):
    """A subchart's template is addressed as charts/<sub>/templates/x.yaml; others are not rendered."""
    (chart_copy / "values.schema.json").unlink()  # it allows no values key for a subchart
    sub = chart_copy / "charts" / "sub"
    (sub / "templates").mkdir(parents=True)
    (sub / "Chart.yaml").write_text("apiVersion: v2\nname: sub\nversion: 0.1.0\n")
    (sub / "templates" / "cm.yaml").write_text("kind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-sub\n")
    (sub / "templates" / "other.yaml").write_text("kind: Secret\n")
    path = _write_suite(
        chart_copy,
        [
            {
                "it": "x",
                "asserts": [{"equal": {"path": "metadata.name", "value": "r-sub"}}, {"hasDocuments": {"count": 1}}],
            }
        ],
        templates=["charts/sub/templates/cm.yaml"],
    )
    result = run_case(_cases_of(path)[0])
    assert result.passed, result.report()


DOC = {
    "metadata": {"name": "x", "annotations": {"example.com/a.b": "dotted"}},
    "spec": {
        "containers": [
            {"name": "main", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]},
            {"name": "side", "env": [{"name": "A", "value": "3"}]},
        ]
    },
}


@pytest.mark.parametrize(
    "path, expected",
    [
        ("metadata.name", ["x"]),
        ("$.metadata.name", ["x"]),
        ('metadata.annotations["example.com/a.b"]', ["dotted"]),
        ("metadata.annotations['example.com/a.b']", ["dotted"]),
        ("spec.containers[1].name", ["side"]),
        ("spec.containers[2].name", []),
        ("spec.containers[*].name", ["main", "side"]),
        ('spec.containers[?(@.name == "main")].env[?(@.name == "B")].value', ["2"]),
        ("spec.containers[*].env[?(@.name == 'A')].value", ["1", "3"]),
        ('spec.containers[?(@.name != "main")].name', ["side"]),
        ("spec.containers[?(@.env)].name", ["main", "side"]),
        ("metadata.missing.deeper", []),
        ("metadata.name[0]", []),
    ],
)
def test_path_syntax(path, expected):
    assert find(DOC, path) == expected


@pytest.mark.parametrize("path", ["spec..name", "spec.containers[0:1]", "spec.containers[?(@.name =~ /x/)]"])
def test_unsupported_path_syntax_fails_loudly(path):
    with pytest.raises(SuiteError):
        find(DOC, path)


def test_yaml_and_regex_read_as_in_go():
    """Suites and manifests decode as Go's yaml.v3 does; patterns match as Go's RE2 does."""
    assert load_yaml("a: on\nb: 010\nc: 0x1f\nd: 1_000\ne: 2001-12-14\nf: 09") == {
        "a": "on",
        "b": 8,
        "c": 31,
        "d": 1000,
        "e": "2001-12-14",
        "f": 9.0,
    }
    with pytest.raises(Exception, match="already defined"):
        load_yaml("a: 1\na: 2")
    assert go_regex("-demo$").search("x-demo\n") is None  # Go's $ is the end of the text
    assert go_regex("(?m)-demo$").search("x-demo\ny")
    assert go_regex(r"demo\z").search("demo")
    with pytest.raises(SuiteError, match="RE2"):
        go_regex("a(?=b)")


def test_a_key_given_twice_in_a_suite_fails_loudly(chart_copy):
    path = chart_copy / "tests" / "dup_test.yaml"
    path.write_text("tests:\n  - it: x\n    asserts: [{exists: {path: kind}}]\n    asserts: []\n")
    with pytest.raises(SuiteError, match="already defined"):
        load_suites(path)


def test_set_paths_build_values_like_helm_unittest():
    assert build_set_value("a.b", 1) == {"a": {"b": 1}}
    assert build_set_value("a.b[1].c", "v") == {"a": {"b": [None, {"c": "v"}]}}
    assert build_set_value("labels.[kueue.x-k8s.io/queue-name]", "q") == {"labels": {"kueue.x-k8s.io/queue-name": "q"}}
    assert build_set_value("resources", {"limits": {"cpu": 1}}) == {"resources": {"limits": {"cpu": 1}}}
    base = {"a": {"x": 1, "list": [{"k": 1}, {"k": 2}]}}
    # Helm's MergeTables: maps merge, a list is replaced whole (its unset elements stay null).
    merged = merge_tables(build_set_value("a.list[1]", {"k": 9}), base)
    assert merged == {"a": {"x": 1, "list": [None, {"k": 9}]}}
    assert merge_tables({"a": {"x": None}}, base) == {"a": {"x": None, "list": [{"k": 1}, {"k": 2}]}}
