"""The chart harness itself, on a fixture chart: it must catch what Helm and Kubernetes would."""

from __future__ import annotations

from pathlib import Path

import pytest
from harness import lint_chart, render_chart, validate_manifests

from llmft.charts import compose_values
from llmft.errors import UserError

CHART = Path(__file__).parent / "fixtures" / "charts" / "harness-check"


def test_valid_render_passes_everything():
    rendered = render_chart(CHART, set_values=["replicas=2"], release_name="ok")
    assert rendered.one("Deployment")["spec"]["replicas"] == 2
    assert validate_manifests(rendered.documents) == []
    assert lint_chart(CHART) == []


def test_schema_violation_is_caught():
    with pytest.raises(UserError, match="replicas"):
        render_chart(CHART, set_values=["replicas=two"])
    with pytest.raises(UserError, match="additional properties|additionalProperties|not allowed"):
        render_chart(CHART, set_values=["replica=2"])


def test_template_fail_is_caught():
    with pytest.raises(UserError, match="stop right there"):
        render_chart(CHART, set_values=["failWith=stop right there"])


def test_invalid_manifest_is_caught():
    rendered = render_chart(CHART, set_values=["emitInvalidManifest=true"])
    problems = validate_manifests(rendered.documents)
    assert len(problems) == 1 and "notAField" in problems[0]


def test_release_name_is_validated():
    with pytest.raises(UserError, match="release name 'Bad_Name'"):
        render_chart(CHART, release_name="Bad_Name")


def test_set_merges_like_helm(tmp_path):
    values = tmp_path / "v.yaml"
    values.write_text("items:\n  - {path: a, weight: 1}\n  - {path: b}\nreplicas: 3\n")
    # An indexed --set edits one element and keeps its other keys (strvals ParseInto).
    merged = compose_values([values], ["items[0].path=z"])
    assert merged["items"] == [{"path": "z", "weight": 1}, {"path": "b"}]
    # A list literal replaces the whole list.
    assert compose_values([values], ["items={x,y}"])["items"] == ["x", "y"]
    later = tmp_path / "w.yaml"
    later.write_text("replicas: 5\n")
    assert compose_values([values, later], ["replicas=7"])["replicas"] == 7
    assert compose_values([values, later])["replicas"] == 5


def test_bad_values_file_names_file_and_line(tmp_path):
    values = tmp_path / "broken.yaml"
    values.write_text("replicas: 1\nitems: [\n")
    with pytest.raises(UserError, match=r"broken.yaml:\d+: not valid YAML"):
        compose_values([values])


def test_set_json_applies_before_set_like_helm():
    merged = compose_values(set_values=["replicas=3"], set_json_values=["replicas=9", 'items=[{"path": "j"}]'])
    assert merged == {"replicas": 3, "items": [{"path": "j"}]}
