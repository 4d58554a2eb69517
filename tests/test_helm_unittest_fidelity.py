"""The helm-unittest runner (tests/helm_unittest.py) gives helm-unittest's own verdicts.

tests/fixtures/helm-unittest-fidelity/ holds charts and suites of ours, each test a translation of one test of
helm-unittest's own fixtures (its test/data/v3 charts, its pkg/unittest/testdata charts, and the jobs and suites
its Go tests write inline) that exercises the same runner feature with the same kind of outcome. expected/
records, per suite and per test, the verdict helm-unittest 1.1 gives to the case it translates (the verdict
lines of its runner snapshots pkg/unittest/.snapshots/TestV3Runner*, and the pass/fail its test_job_test.go,
test_suite_test.go and utils_test.go assert), and names that case. Every suite file named there must load (or
be refused, where the plugin refuses the original), and every test's verdict (pass / fail / skip) and, for a
failing test, its set of failing assertions must equal the plugin's. validators.yaml restates single-validator
cases of pkg/unittest/validators; the suite files found for a chart must be those the plugin's default
discovery runs. `python tests/test_helm_unittest_fidelity.py` prints the figures; with `--record-snapshots` it
adds the snapshots that are not recorded yet to the fixtures' __snapshot__/ files, as `helm unittest` does on a
first run (the snapshots a translated case expects to mismatch are edited by hand afterwards).
"""

from __future__ import annotations

import sys
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from helm_unittest import (
    ASSERT_TYPES,
    SuiteError,
    discover_suites,
    load_suites,
    record_new_snapshots,
    run_case,
)
from helm_unittest_asserts import Context, Snapshots, load_yaml

FIXTURES = Path(__file__).parent / "fixtures" / "helm-unittest-fidelity"

# Subcharts that the plugin's fixtures ship packaged (charts/<name>.tgz): ours are kept unpacked under
# packaged/<parent>/<name>/ and packed here before any suite runs, so the repository holds no binary.
PACKAGED = FIXTURES / "packaged"


def pack_subcharts() -> None:
    for source in sorted(p.parent for p in PACKAGED.glob("*/*/Chart.yaml")):
        parent, name = source.parent.name, source.name
        target = FIXTURES / "charts" / parent / "charts" / f"{name}.tgz"
        if target.is_file() and target.stat().st_mtime >= max(f.stat().st_mtime for f in source.rglob("*")):
            continue
        with tarfile.open(target, "w:gz") as archive:
            archive.add(source, arcname=name)


pack_subcharts()


@dataclass
class ExpectedTest:
    name: str
    verdict: str  # pass, fail or skip
    failing: set[int] | None  # a failing test's failing assertions (None: not compared, the job errs)
    translates: str


@dataclass
class ExpectedSuite:
    name: str | None
    refused: bool  # the plugin refuses to load the original file
    tests: list[ExpectedTest]
    translates: str
    run: str  # the plugin's Go test that recorded the verdicts


@dataclass
class ExpectedFile:
    chart: Path
    path: Path
    suites: list[ExpectedSuite]


def expected_files() -> list[ExpectedFile]:
    files = []
    for source in sorted((FIXTURES / "expected").glob("*.yaml")):
        data = yaml.safe_load(source.read_text())
        chart = FIXTURES / "charts" / data["chart"]
        by_path: dict[Path, ExpectedFile] = {}
        for entry in data["suites"]:
            path = chart / entry["file"]
            tests = [
                ExpectedTest(t["it"], t["verdict"], set(t["failing"]) if "failing" in t else None, t["translates"])
                for t in entry.get("tests") or []
            ]
            suite = ExpectedSuite(
                entry.get("suite"), bool(entry.get("refused")), tests, entry["translates"], entry["run"]
            )
            by_path.setdefault(path, ExpectedFile(chart, path, [])).suites.append(suite)
        files.extend(by_path.values())
    return files


@dataclass
class Comparison:
    suites: int = 0
    loaded: int = 0
    tests: int = 0
    assertions: int = 0
    disagreements: list[str] = field(default_factory=list)


def compare(expected: ExpectedFile, into: Comparison, record: bool = False) -> None:
    """Run every suite of one file and record each verdict that differs from the plugin's."""
    where_file = expected.path.relative_to(FIXTURES)
    into.suites += len(expected.suites)
    refused = [e for e in expected.suites if e.refused]
    try:
        suites = load_suites(expected.path, expected.chart)
    except SuiteError as error:
        if refused:  # helm-unittest refuses it too: an agreement
            into.loaded += len(expected.suites)
            into.tests += 1
        else:
            into.disagreements.append(f"{where_file}: cannot load: {error}")
        return
    if refused:
        into.disagreements.append(f"{where_file}: helm-unittest refuses the original, the runner loads this file")
        return
    into.loaded += len(suites)
    unmatched = list(expected.suites)
    for suite in suites:
        want = next((e for e in unmatched if e.name == suite.name), None)
        if want is None:
            into.disagreements.append(f"{where_file}: suite {suite.name!r} not in expected/")
            continue
        unmatched.remove(want)
        tests = {t.name: t for t in want.tests}
        if [c.name for c in suite.cases] != [t.name for t in want.tests]:
            into.disagreements.append(
                f"{where_file}: {suite.name!r} has tests {[c.name for c in suite.cases]}, expected/ lists {list(tests)}"
            )
            continue
        for case in suite.cases:
            result = run_case(case)
            if record:
                record_new_snapshots(result)
            test = tests[case.name]
            where = f"{where_file}: {suite.name!r} / {case.name!r}"
            got = "skip" if result.skipped else "pass" if result.passed else "fail"
            into.tests += 1
            if result.new_snapshots and not record:  # every snapshot the plugin compared was recorded
                into.disagreements.append(f"{where}: {result.new_snapshots} snapshot(s) not found in __snapshot__/")
            if got != test.verdict:
                into.disagreements.append(
                    f"{where}: helm-unittest says {test.verdict}, the runner {got}\n{result.report()}"
                )
                continue
            if got == "fail":
                failing = {a.index for a in result.assertions if not a.passed}
                into.assertions += len(case.assertions)
                if result.error is None and test.failing is not None and failing != test.failing:
                    into.disagreements.append(
                        f"{where}: failing assertions {sorted(failing)}, helm-unittest's "
                        f"{sorted(test.failing)}\n{result.report()}"
                    )
    into.disagreements.extend(f"{where_file}: suite {e.name!r} not loaded" for e in unmatched)


@pytest.mark.parametrize(
    "expected", [pytest.param(e, id=str(e.path.relative_to(FIXTURES / "charts"))) for e in expected_files()]
)
def test_verdicts_equal_helm_unittest(expected):
    comparison = Comparison()
    compare(expected, comparison)
    assert comparison.loaded == comparison.suites
    assert not comparison.disagreements, "\n\n".join(comparison.disagreements)


# Charts run with the plugin's default suite discovery (tests/*_test.yaml, --with-subchart): chart -> the Go
# test whose run it translates (None: "Test Suites: 0 passed, 0 total", the only suites are in a subchart its
# values turn off).
DISCOVERY_RUNS = {
    "kitchen": "TestV3RunnerWithTestsInSubchart",
    "nested": "TestV3RunnerOkWithSubSubChartsPassedTests",
    "tagged-parts": "TestV3RunnerOkWithSkippedTestsWhenSubchartDisabledOnTags",
    "switched-off-part": None,
}  # TestV3RunnerOkWithSkippedTestsWhenSubchartDisabledOnCondition


def test_suite_discovery_equals_helm_unittests():
    """The suite files found for a chart, its enabled subcharts' included, are those the plugin ran."""
    found: dict[str, set[Path]] = {}
    for path, chart in discover_suites(FIXTURES / "charts"):
        found.setdefault(chart.name, set()).add(path)
    ran: dict[str, set[Path]] = {}
    for expected in expected_files():
        for suite in expected.suites:
            ran.setdefault(suite.run, set()).add(expected.path)
    for chart, run in DISCOVERY_RUNS.items():
        assert found.get(chart, set()) == (ran[run] if run else set()), chart


def _validator_cases():
    data = yaml.safe_load((FIXTURES / "validators.yaml").read_text())
    documents = {name: load_yaml(text) for name, text in data["documents"].items()}
    return [
        pytest.param(
            case,
            [documents[d] for d in case["docs"]],
            [documents[d] for d in case.get("selected", case["docs"])],
            id=case["source"],
        )
        for case in data["cases"]
    ]


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


def main(record: bool) -> None:
    comparison = Comparison()
    for expected in expected_files():
        compare(expected, comparison, record)
    validators = [p.values for p in _validator_cases()]
    wrong = [
        case["source"]
        for case, docs, selected in validators
        if validator_verdict(case, docs, selected)[0] != case["pass"]
    ]
    comparison.disagreements.extend(f"validator case {source}" for source in wrong)
    print("\n\n".join(comparison.disagreements))
    print(
        f"suites loaded: {comparison.loaded}/{comparison.suites}; test verdicts compared: {comparison.tests}; "
        f"assertion verdicts of failing tests compared: {comparison.assertions}; "
        f"single-validator verdicts compared: {len(validators)}; "
        f"disagreements: {len(comparison.disagreements)}"
    )


if __name__ == "__main__":
    main(record="--record-snapshots" in sys.argv[1:])
