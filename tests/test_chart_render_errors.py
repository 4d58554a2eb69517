"""A chart whose output is not YAML (a value the template uses was nulled with `--set KEY=null`) is one clear
error naming the template and line, never a Python traceback from the YAML parser."""

from __future__ import annotations

import pytest

from llmft.charts import render_chart
from llmft.errors import UserError


def test_rendered_output_that_is_not_yaml_is_a_user_error_naming_template_and_line(tmp_path):
    chart = tmp_path / "broken"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: broken\nversion: 0.1.0\n")
    (chart / "values.yaml").write_text("gpuResourceName: nvidia.com/gpu\n")
    (chart / "templates" / "pod.yaml").write_text(
        'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\ndata:\n  a: b\n  {{ .Values.gpuResourceName }}: "1"\n'
    )
    assert render_chart(chart).documents[0]["data"] == {"a": "b", "nvidia.com/gpu": "1"}
    with pytest.raises(UserError) as caught:
        render_chart(chart, set_values=["gpuResourceName=null"])
    assert "broken/templates/pod.yaml:7 renders as invalid YAML" in str(caught.value)
    assert "a value the template uses is probably null or missing" in str(caught.value)
