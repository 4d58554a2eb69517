"""Every helm-unittest suite of every chart (charts/*/tests/*_test.yaml, and those of the subcharts unpacked
in charts/<chart>/charts/, as the plugin runs them), one pytest case per test job.

The same files run with the plugin: `helm unittest charts/<chart>`. Suites added later are picked up here
without editing this file. A suite the runner cannot load (malformed, or using something it does not
implement) shows up as one failing case naming the problem, not as a collection error hiding the others.
"""

from __future__ import annotations

import pytest
from harness import CHARTS
from helm_unittest import SuiteError, discover_suites, load_suites, run_case


def _params():
    params = []
    for path, chart in discover_suites(CHARTS):
        suite_id = f"{chart.name}/{path.relative_to(chart).as_posix().replace('tests/', '', 1)}"
        try:
            suites = load_suites(path, chart)
        except SuiteError as error:
            params.append(pytest.param(None, str(error), id=f"{suite_id}::(cannot load)"))
            continue
        params.extend(
            pytest.param(case, None, id=f"{suite_id}::{case.name}") for suite in suites for case in suite.cases
        )
    return params


@pytest.mark.parametrize("case, load_error", _params())
def test_chart_suite_case(case, load_error):
    assert load_error is None, load_error
    result = run_case(case)
    if result.skipped:
        pytest.skip(result.skipped)
    assert result.passed, result.report()
    # The plugin records a missing snapshot on its first run; here it would pass unchecked, so it must exist.
    assert not result.new_snapshots, (
        f"{case.id}: {result.new_snapshots} matchSnapshot value(s) not recorded in "
        "tests/__snapshot__/: record them with `helm unittest -u` and commit them"
    )


def test_every_chart_has_unit_test_suites():
    """A chart added to charts/ without helm-unittest suites (charts/<chart>/tests/*_test.yaml) fails here."""
    charts = {
        path.parent.name for path in CHARTS.glob("*/Chart.yaml") if "type: library" not in path.read_text()
    }  # a library chart is tested through its users
    with_suites = {chart.name for _, chart in discover_suites(CHARTS)}
    assert charts, "no charts found"
    assert charts - with_suites == set(), f"charts without helm-unittest suites: {sorted(charts - with_suites)}"
