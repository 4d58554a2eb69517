"""The contract between the charts and the engine: one rule, written once, enforced at `helm template`.

- The render-time checks are generated from the engine (`make chart-files`, llmft.chart_files); the committed
  files equal what the generator writes (tests/test_finetune_chart.py checks every generated file).
- The generated location helpers accept and refuse exactly what the engine's location rule does.
- The failures the issue names (`--set` decimals out of range, bad bucket locations) fail at render, naming
  the key and what is allowed.
- No hand-written template carries a copy of an engine rule or a location parser.
- The original tutorial's full-parameter values file renders as written (no `null` tricks).
"""

from __future__ import annotations

import re
import typing

import pytest
import yaml
from harness import CHARTS, OVERRIDES, render_valid

from llmft.charts import load_values_file, render_chart
from llmft.errors import UserError
from llmft.finetune.config import BUCKET_NAME_PATTERN, load_config, location_problem
from llmft.finetune.distributed import PRESETS
from llmft.storage.location import parse_location

FINETUNE = CHARTS / "llm-finetune"
LIBRARY = CHARTS / "llmft-common"
APPLICATION_CHARTS = sorted(
    path.parent for path in CHARTS.glob("*/Chart.yaml") if yaml.safe_load(path.read_text()).get("type") != "library"
)

LOCATIONS = [
    "default-bucket/datasets/train.jsonl",
    "s3://default-bucket/x",
    "s3://default-bucket/",
    "default-bucket",
    "a.b-c/x/y",
    "not a path",
    "default-bucket/../etc",
    "s3://default-bucket/a/..",
    "default-bucket/a/..b",
    "Default_Bucket/x",
    "ab/x",
    "s3://",
    "s3:///x",
    "gs://bucket/x",
    "./data",
    "/data",
    "../data",
    "~/data",
    ".",
    "..",
    "hf://org/name",
    " default-bucket/x ",
]


@pytest.fixture(scope="module")
def probe_chart(tmp_path_factory):
    """A chart that applies the library's generated location helpers to `.Values.location`."""
    chart = tmp_path_factory.mktemp("probe") / "probe"
    (chart / "templates").mkdir(parents=True)
    (chart / "charts").mkdir()
    (chart / "charts" / "llmft-common").symlink_to(LIBRARY)
    (chart / "Chart.yaml").write_text(
        "apiVersion: v2\nname: probe\nversion: 0.1.0\ndependencies:\n"
        "  - {name: llmft-common, version: 0.1.0, repository: file://../llmft-common}\n"
    )
    (chart / "templates" / "probe.yaml").write_text(
        'kind: Probe\nkind_of_location: {{ include "llmft-common.locationKind" .Values.location | quote }}\n'
        '{{- include "llmft-common.checkLocation" (list "location" .Values.location) }}\n'
    )
    return chart


@pytest.mark.parametrize("value", LOCATIONS)
def test_generated_location_check_is_the_engines_rule(probe_chart, value):
    """Render and engine agree on every sample: the same verdict, and the same local/bucket reading."""
    problem = location_problem(value)
    try:
        rendered = render_chart(probe_chart, {"location": value}, release_name="probe")
    except UserError as error:
        assert problem is not None, f"the chart refused {value!r}, the engine accepts it: {error}"
        assert f'got "{value.strip()}"' in str(error)
        if not problem.startswith(("location ", "empty location")):  # parse_location's own words differ
            assert f"location: {problem}, got" in str(error)
        return
    assert problem is None, f"the chart accepted {value!r}, the engine says: {problem}"
    kind = rendered.documents[0]["kind_of_location"]
    expected = "hub" if value.startswith("hf://") else "local" if parse_location(value).is_local else "bucket"
    assert kind == expected


@pytest.mark.parametrize(
    "sets, message",
    [
        (
            ["finetuning_config.data_conf.validation_data.ratio=1.5"],
            (
                "finetuning_config.data_conf.validation_data.ratio: must be a number greater than 0 and less than 1 "
                '(or null), got "1.5"'
            ),
        ),
        (
            ["finetuning_config.training_args.learning_rate=-0.5"],
            'finetuning_config.training_args.learning_rate: must be a number greater than 0, got "-0.5"',
        ),
        (
            ["finetuning_config.method=dpo", "finetuning_config.training_args.label_smoothing=0.7"],
            "finetuning_config.training_args.label_smoothing: must be a number at least 0 and less than 0.5",
        ),
        (
            ["finetuning_config.training_args.warmup_steps=2.5"],
            (
                "finetuning_config.training_args.warmup_steps: must be a non-negative integer or a number "
                "greater than 0 and less than 1"
            ),
        ),
        (["checkpointsRemote=not a path"], 'checkpointsRemote: "not a path" is not a bucket name'),
        (["checkpointsRemote=default-bucket/../etc"], "checkpointsRemote: '..' is not allowed in a bucket key"),
        (
            ["finetuning_config.data_conf.training_data.datasets[0].path=default-bucket/../etc/train.jsonl"],
            "finetuning_config.data_conf.training_data.datasets[0].path: '..' is not allowed in a bucket key",
        ),
    ],
)
def test_set_values_the_engine_refuses_fail_at_helm_template(sets, message):
    with pytest.raises(UserError) as failure:
        render_chart(FINETUNE, set_values=sets, release_name="bad")
    assert message in str(failure.value)


@pytest.mark.parametrize(
    "chart, values, message",
    [
        (
            "download-model-to-bucket",
            {"modelID": "a/b", "bucketModelPath": "not a path"},
            'bucketModelPath: "not a path" is not a bucket name',
        ),
        (
            "download-model-to-bucket",
            {"modelID": "a/b", "bucketModelPath": "default-bucket/../etc"},
            "bucketModelPath: '..' is not allowed in a bucket key",
        ),
        (
            "download-data-to-bucket",
            {"dataScript": "print()", "bucketDataDir": "default-bucket/../etc"},
            "bucketDataDir: '..' is not allowed in a bucket key",
        ),
        (
            "download-data-to-bucket",
            {"dataScript": "print()", "bucketDataDir": "./data"},
            'bucketDataDir: "./data" is a local path, which the pod cannot see',
        ),
        ("llm-inference-vllm", {"model": "not a path"}, 'model: "not a path" is not a bucket name'),
    ],
)
def test_bucket_locations_of_every_chart_fail_at_helm_template(chart, values, message):
    with pytest.raises(UserError) as failure:
        render_chart(CHARTS / chart, values, release_name="bad")
    assert message in str(failure.value)


def test_a_decimal_in_a_values_file_is_checked_by_the_schema():
    with pytest.raises(UserError, match=r"(?s)finetuning_config/data_conf/validation_data/ratio.*1\.5"):
        render_chart(
            FINETUNE,
            {"finetuning_config": {"data_conf": {"validation_data": {"type": "AUTO_SPLIT", "ratio": 1.5}}}},
            release_name="bad",
        )


def _no_nulls(value) -> bool:
    if isinstance(value, dict):
        return all(_no_nulls(item) for item in value.values())
    if isinstance(value, list):
        return all(_no_nulls(item) for item in value)
    return value is not None


def test_the_original_tutorial_full_parameter_values_render_as_written(tmp_path):
    """`peft_type: NO_PEFT` without `peft_kwargs`, no `null` anywhere: renders, and the engine loads it."""
    file = OVERRIDES / "llm-finetune" / "tutorial-01-finetune-full-param.yaml"
    values = load_values_file(file)
    assert values["finetuning_config"]["peft_conf"] == {"peft_type": "NO_PEFT"} and _no_nulls(values)
    rendered = render_valid(
        FINETUNE,
        values_files=[file],
        release_name="tiny-llama-argilla-v1",
        set_values=["checkpointsRemote=default-bucket/experiments/tiny-llama-argilla-v1", "finetuningGpus=8"],
    )
    text = rendered.one("ConfigMap")["data"]["finetuning_config.yaml"]
    (tmp_path / "finetuning_config.yaml").write_text(text)
    config = load_config(tmp_path / "finetuning_config.yaml")
    assert config.peft_conf.peft_type == "NO_PEFT" and config.peft_conf.peft_kwargs is None
    assert config.launch_conf.num_processes == 8 and config.launch_conf.distributed_type == "auto-deepspeed-stage2"


def test_validation_from_files_needs_no_ratio_removed():
    rendered = render_valid(
        FINETUNE,
        release_name="files",
        set_values=[
            "finetuning_config.data_conf.validation_data.type=CONCATENATION",
            "finetuning_config.data_conf.validation_data.datasets[0].path=default-bucket/datasets/eval.jsonl",
        ],
    )
    config = yaml.safe_load(rendered.one("ConfigMap")["data"]["finetuning_config.yaml"])
    assert load_config(config).data_conf.validation_data.ratio is None


def _hand_written_templates():
    for chart in [*APPLICATION_CHARTS, LIBRARY]:
        for path in sorted((chart / "templates").iterdir()):
            if path.is_file() and not path.name.startswith("_generated"):
                yield path


def _engine_enum_values() -> set[str]:
    """Every string an engine config field allows from a fixed set (peft types, validation types, ...)."""
    from llmft.finetune.config import METHODS, Section, config_model

    found: set[str] = set()

    def visit(annotation):
        if typing.get_origin(annotation) is typing.Literal:
            found.update(arg for arg in typing.get_args(annotation) if isinstance(arg, str))
        for arg in typing.get_args(annotation):
            visit(arg)
        if isinstance(annotation, type) and issubclass(annotation, Section):
            for field in annotation.model_fields.values():
                visit(field.annotation)

    for method in METHODS:
        visit(config_model(method))
    # Words, not rules; and the distributed presets, which the chart maps to its own launch files.
    return found - {"auto", "none", "no", "steps", "epoch"} - set(PRESETS)


LOCATION_PARSING = [r'hasPrefix "(/|\./|\.\./|~)"', r'"s3://"', re.escape(BUCKET_NAME_PATTERN), r"splitn \"/\""]


def test_no_template_carries_a_copy_of_an_engine_rule_or_a_location_parser():
    enums = _engine_enum_values()
    assert {"AUTO_SPLIT", "NO_PEFT", "LORA"} <= enums
    copies = []
    for path in _hand_written_templates():
        text = path.read_text()
        where = path.relative_to(CHARTS)
        copies += [f"{where}: location parsing {pattern!r}" for pattern in LOCATION_PARSING if re.search(pattern, text)]
        copies += [
            f"{where}: fails on a finetuning_config key" for _ in re.findall(r"fail[^\n]*finetuning_config", text)
        ]
        if path.name != "NOTES.txt":  # NOTES may name the run's peft_type in words; it enforces nothing
            copies += [
                f"{where}: compares with the engine value {value!r}"
                for value in sorted(enums)
                if re.search(rf'(eq|ne)\b[^\n]*"{re.escape(value)}"', text)
            ]
    for chart in APPLICATION_CHARTS:  # a bucket-location pattern in a schema would be a copy of the rule too
        if "{1,61}" in (chart / "values.schema.json").read_text():
            copies.append(f"{chart.name}/values.schema.json: a bucket-name pattern")
    assert not copies, "move the rule into the engine and generate the check (make chart-files):\n" + "\n".join(copies)


def test_every_chart_uses_the_library_and_keeps_only_its_own_helpers():
    for chart in APPLICATION_CHARTS:
        dependencies = yaml.safe_load((chart / "Chart.yaml").read_text()).get("dependencies", [])
        assert {"name": "llmft-common", "version": "0.1.0", "repository": "file://../llmft-common"} in dependencies
        link = chart / "charts" / "llmft-common"
        assert link.is_symlink() and link.resolve() == LIBRARY.resolve(), f"{link}: not the shared copy"
        text = "\n".join(path.read_text() for path in (chart / "templates").iterdir())
        for shared in (
            "runAsNonRoot",
            "app.kubernetes.io/managed-by",
            "BUCKET_STORAGE_ACCESS_KEY",
            "name: HF_TOKEN",
            "allowPrivilegeEscalation",
            'regexMatch "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"',
        ):
            assert shared not in text, f"{chart.name}: {shared!r} belongs in llmft-common"
        assert (chart / "values.yaml").read_text().startswith("# yaml-language-server: $schema=values.schema.json\n")


RELATION_CASES = {
    "peft_kwargs without LoRA": {"peft_conf": {"peft_type": "NO_PEFT", "peft_kwargs": {"r": 8}}},
    "ratio without AUTO_SPLIT": {"data_conf": {"validation_data": {"ratio": 0.5}}},
    "CONCATENATION without datasets": {"data_conf": {"validation_data": {"type": "CONCATENATION"}}},
    "evaluation without validation data": {"training_args": {"eval_strategy": "steps"}},
    "sampling_weight in a concatenation": {
        "data_conf": {
            "training_data": {
                "datasets": [
                    {"path": "default-bucket/a.jsonl"},
                    {"path": "default-bucket/b.jsonl", "sampling_weight": 2},
                ]
            }
        }
    },
    "both warmups": {"training_args": {"warmup_steps": 3, "warmup_ratio": 0.1}},
    "best checkpoint without evaluation": {"training_args": {"save_strategy": "best"}},
    "4-bit without bits-and-bytes": {"quant_conf": {"load_in_4bit": True}},
    "quantized full training": {
        "peft_conf": {"peft_type": "NO_PEFT"},
        "quant_conf": {"quantization_type": "bits-and-bytes", "load_in_4bit": True},
    },
    "column_map with DPO": {
        "method": "dpo",
        "data_conf": {
            "training_data": {"datasets": [{"path": "default-bucket/a.jsonl", "column_map": {"input": "question"}}]}
        },
    },
}


@pytest.mark.parametrize("override", RELATION_CASES.values(), ids=RELATION_CASES)
def test_rules_between_keys_fail_at_helm_template_as_in_the_engine(override, tmp_path):
    """Each relation of the engine's models (`RELATIONS`) fails the render with the engine's own words."""
    from llmft.charts import merge_maps

    values = {"finetuning_config": override}
    with pytest.raises(UserError) as failure:
        render_chart(FINETUNE, values, release_name="bad")
    rendered_problem = re.search(r"finetuning_config\.\S+: .*?(?=, got )", str(failure.value)).group(0)
    config = merge_maps(load_values_file(FINETUNE / "values.yaml")["finetuning_config"], override)
    config["run_conf"] = {"model": "default-bucket/models/m"}
    with pytest.raises(UserError) as engine:
        load_config(config)
    assert rendered_problem in str(engine.value)


def test_every_rule_between_keys_is_generated():
    from llmft.chart_files import finetune_checks
    from llmft.finetune.config import METHODS, config_model

    generated = finetune_checks()
    for method in METHODS:
        for relation in config_model(method).RELATIONS:
            assert relation.message.format(other="%v").replace("%", "%%").replace("%%v", "%v") in generated
