"""The helm-unittest runner (tests/helm_unittest.py) gives helm-unittest's own verdicts on helm-unittest's fixtures.

tests/fixtures/helm-unittest-upstream/ holds charts and suites of helm-unittest's test/data/v3 and
pkg/unittest/testdata and, in expected/, the verdicts the plugin's own Go tests record: the verdict lines of its
runner snapshots (pkg/unittest/.snapshots/TestV3Runner*: which suites pass, fail or are skipped, which tests
fail and which of their assertions fail), and the pass/fail its test_job_test.go, test_suite_test.go and
utils_test.go assert (their inline jobs and suites restated as suite files). Every suite file named there must
load (or be refused, where the plugin refuses it), and every test's verdict (pass / fail / skipped) and, for a
failing test, its set of failing assertions must equal the plugin's. validators.yaml restates single-validator
cases of pkg/unittest/validators; the suite files found for a chart must be those the plugin's default
discovery runs. `python tests/test_helm_unittest_fidelity.py` prints the figures.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from helm_unittest import (
    ASSERT_TYPES,
    SuiteError,
    discover_suites,
    load_suites,
    run_case,
)
from helm_unittest_asserts import Context, Snapshots, load_yaml

UPSTREAM = Path(__file__).parent / "fixtures" / "helm-unittest-upstream"


@dataclass
class ExpectedSuite:
    name: str
    verdict: str                                        # PASS, FAIL, SKIP, or ERROR (the file does not load)
    failed: dict[str, set[int]] = field(default_factory=dict)  # failing test -> its failing assertions
    skipped: set[str] = field(default_factory=set)


@dataclass
class ExpectedRun:
    source: str                                         # the upstream snapshot it comes from
    chart: Path
    suites: dict[Path, list[ExpectedSuite]] = field(default_factory=dict)


def expected_runs() -> list[ExpectedRun]:
    runs = []
    for file in sorted((UPSTREAM / "expected").glob("*.txt")):
        run, current, test = None, None, None
        for line in file.read_text().splitlines():
            if line.startswith("### Chart"):
                run = ExpectedRun(source=file.stem, chart=UPSTREAM / line.rsplit(" ", 1)[1])
                runs.append(run)
            elif m := re.match(r"^ (PASS|FAIL|SKIP|ERROR) +(.*)\t(\S+)$", line):
                current = ExpectedSuite(name=m.group(2), verdict=m.group(1))
                run.suites.setdefault(UPSTREAM / m.group(3), []).append(current)
            elif m := re.match(r"^\t- SKIPPED '(.*)'$", line):
                current.skipped.add(m.group(1))
            elif m := re.match(r"^\t- (.*)$", line):
                test = m.group(1)
                current.failed[test] = set()
            elif m := re.match(r"^\t\t- asserts\[(\d+)\] `\w+` fail$", line):
                current.failed[test].add(int(m.group(1)))
    return runs


@dataclass
class Comparison:
    suites: int = 0
    loaded: int = 0
    tests: int = 0
    assertions: int = 0
    disagreements: list[str] = field(default_factory=list)


def compare(run: ExpectedRun, path: Path, into: Comparison) -> None:
    """Run every suite of one file and record each verdict that differs from the plugin's."""
    expected = run.suites[path]
    into.suites += len(expected)
    refused = [e for e in expected if e.verdict == "ERROR"]
    try:
        suites = load_suites(path, run.chart)
    except SuiteError as error:
        if refused:  # helm-unittest refuses it too: an agreement
            into.loaded += len(expected)
            into.tests += 1
        else:
            into.disagreements.append(f"{path.relative_to(UPSTREAM)}: cannot load: {error}")
        return
    if refused:
        into.disagreements.append(f"{path.relative_to(UPSTREAM)}: helm-unittest refuses this file, the runner loads it")
        return
    into.loaded += len(suites)
    unmatched = list(expected)
    for suite in suites:
        want = next((e for e in unmatched if e.name == suite.name), None)
        if want is None:
            into.disagreements.append(f"{path.relative_to(UPSTREAM)}: suite {suite.name!r} not in {run.source}")
            continue
        unmatched.remove(want)
        for case in suite.cases:
            result = run_case(case)
            where = f"{path.relative_to(UPSTREAM)}: {suite.name!r} / {case.name!r}"
            got = "skip" if result.skipped else "pass" if result.passed else "fail"
            wanted = "skip" if case.name in want.skipped or want.verdict == "SKIP" else \
                "fail" if case.name in want.failed else "pass"
            into.tests += 1
            if result.new_snapshots:  # the plugin's runs found every snapshot recorded: none may be missing here
                into.disagreements.append(f"{where}: {result.new_snapshots} snapshot(s) not found in __snapshot__/")
            if got != wanted:
                into.disagreements.append(f"{where}: helm-unittest says {wanted}, the runner {got}\n{result.report()}")
                continue
            if got == "fail":
                failing = {a.index for a in result.assertions if not a.passed}
                into.assertions += len(case.assertions)
                if result.error is None and failing != want.failed[case.name] and want.failed[case.name]:
                    into.disagreements.append(f"{where}: failing assertions {sorted(failing)}, helm-unittest's "
                                              f"{sorted(want.failed[case.name])}\n{result.report()}")
    into.disagreements.extend(f"{path.relative_to(UPSTREAM)}: suite {e.name!r} not loaded" for e in unmatched)


def _params():
    return [pytest.param(run, path, id=f"{run.source}:{path.relative_to(run.chart)}")
            for run in expected_runs() for path in run.suites]


@pytest.mark.parametrize("run, path", _params())
def test_verdicts_equal_helm_unittest(run, path):
    comparison = Comparison()
    compare(run, path, comparison)
    assert comparison.loaded == comparison.suites
    assert not comparison.disagreements, "\n\n".join(comparison.disagreements)


# Runs of the plugin with its default suite discovery (tests/*_test.yaml, --with-subchart): chart -> its run.
DISCOVERY_RUNS = {"with-subchart": "TestV3RunnerWithTestsInSubchart",
                  "with-subsubcharts": "TestV3RunnerOkWithSubSubChartsPassedTests",
                  "with-disabled-subchart-on-tags": "TestV3RunnerOkWithSkippedTestsWhenSubchartDisabledOnTags",
                  "with-disabled-subchart-on-condition": None}  # TestV3RunnerOkWithSkippedTestsWhen...OnCondition


def test_suite_discovery_equals_helm_unittests():
    """The suite files found for a chart, its enabled subcharts' included, are those the plugin ran (none for
    a chart whose only suites are in a subchart its values turn off: "Test Suites: 0 passed, 0 total")."""
    runs = {run.source: run for run in expected_runs()}
    found = {}
    for path, chart in discover_suites(UPSTREAM / "charts"):
        found.setdefault(chart.name, set()).add(path)
    for chart, source in DISCOVERY_RUNS.items():
        assert found.get(chart, set()) == (set(runs[source].suites) if source else set()), chart


def _validator_cases():
    data = yaml.safe_load((UPSTREAM / "validators.yaml").read_text())
    documents = {name: load_yaml(text) for name, text in data["documents"].items()}
    return [pytest.param(case, [documents[d] for d in case["docs"]],
                         [documents[d] for d in case.get("selected", case["docs"])], id=case["source"])
            for case in data["cases"]]


def validator_verdict(case: dict, docs: list, selected: list) -> tuple[bool, list[str]]:
    definition = ASSERT_TYPES[case["assert"]]
    negative = bool(case.get("not")) != definition.antonym
    try:
        context = Context(docs, selected, negative, case.get("render_error"), Snapshots({}, ""))
        return definition.validator(case["params"], context)
    except SuiteError as error:
        return False, [str(error)]


@pytest.mark.parametrize("case, docs, selected", _validator_cases())
def test_validator_verdicts(case, docs, selected):
    """One validator on given documents passes exactly when the plugin's validator test says it does (a path
    the plugin cannot parse fails its assertion; this runner refuses it, which is no pass either)."""
    passed, why = validator_verdict(case, docs, selected)
    assert passed == case["pass"], why


def main() -> None:
    comparison = Comparison()
    for run in expected_runs():
        for path in run.suites:
            compare(run, path, comparison)
    validators = [p.values for p in _validator_cases()]
    wrong = [case["source"] for case, docs, selected in validators
             if validator_verdict(case, docs, selected)[0] != case["pass"]]
    comparison.disagreements.extend(f"validator case {source}" for source in wrong)
    print("\n\n".join(comparison.disagreements))
    print(f"suites loaded: {comparison.loaded}/{comparison.suites}; test verdicts compared: {comparison.tests}; "
          f"assertion verdicts of failing tests compared: {comparison.assertions}; "
          f"single-validator verdicts compared: {len(validators)}; "
          f"disagreements: {len(comparison.disagreements)}")


if __name__ == "__main__":
    main()
