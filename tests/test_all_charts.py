"""Every application chart in charts/ with every values file in overrides/<chart>/ (a chart without any: its
defaults).

For each: it renders with the real Helm engine (release name from the file name), `helm lint` is clean, every
manifest passes strict Kubernetes 1.33 schema validation, every pod meets Pod Security "restricted" and
mounts no service account token, every container has a read-only root filesystem with HOME, TMPDIR and its
caches on its volumes, every
container that runs `llmft` runs a subcommand that exists with arguments it accepts, and no secret is a literal
(env vars named like secrets come from secretKeyRef; ConfigMaps hold no credentials). Charts and overrides
added later are discovered, not listed here.
"""

from __future__ import annotations

import contextlib
import functools
import io
import re
from pathlib import Path

import pytest
import yaml
from harness import (
    CHARTS,
    OVERRIDES,
    lint_chart,
    pod_specs,
    render_chart,
    restricted_violations,
    validate_manifests,
    writable_path_violations,
)

from llmft.charts import compose_values


def release_name_for(path: Path | None, chart: str) -> str:
    """A valid release name from a values file name (tutorial-01-finetune-lora.yaml -> tutorial-01-finetune-lora)."""
    stem = path.stem if path else f"{chart}-defaults"
    name = re.sub(r"[^a-z0-9-]+", "-", stem.lower()).strip("-")[:40].strip("-")
    return name or "release"


def _cases():
    cases = []
    for chart_yaml in sorted(CHARTS.glob("*/Chart.yaml")):
        chart = chart_yaml.parent.name
        if yaml.safe_load(chart_yaml.read_text()).get("type") == "library":
            continue  # renders nothing on its own; every application chart above uses it
        files = sorted(p for p in (OVERRIDES / chart).glob("*") if p.suffix in (".yaml", ".yml"))
        for file in files or [None]:
            cases.append(pytest.param(chart, file, id=f"{chart}/{file.name if file else 'defaults'}"))
    return cases


CASES = _cases()


@functools.cache
def rendered(chart: str, file: Path | None):
    return render_chart(CHARTS / chart, values_files=[file] if file else [], release_name=release_name_for(file, chart))


def _containers(spec: dict) -> list[dict]:
    return list(spec.get("initContainers", [])) + list(spec.get("containers", []))


def test_there_are_charts_to_check():
    assert CASES, "no charts found in charts/"


@pytest.mark.parametrize("chart, file", CASES)
def test_renders_valid_kubernetes_manifests(chart, file):
    result = rendered(chart, file)
    assert result.documents, "rendered nothing"
    problems = validate_manifests(result.documents)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("chart, file", CASES)
def test_helm_lint_is_clean(chart, file):
    values = compose_values([file]) if file else {}
    assert lint_chart(CHARTS / chart, values) == []


@pytest.mark.parametrize("chart, file", CASES)
def test_pods_meet_pod_security_restricted(chart, file):
    result = rendered(chart, file)
    assert pod_specs(result), "no pod-running workload rendered"
    assert restricted_violations(result) == []


@pytest.mark.parametrize("chart, file", CASES)
def test_pods_write_only_to_their_volumes_without_a_service_account_token(chart, file):
    assert writable_path_violations(rendered(chart, file)) == []


def llmft_arguments(container: dict) -> list[str] | None:
    """The arguments after `llmft` when the container runs llmft (as `llmft ...` or `python -m llmft ...`)."""
    argv = [str(a) for a in list(container.get("command") or []) + list(container.get("args") or [])]
    if argv and Path(argv[0]).name == "llmft":
        return argv[1:]
    if (
        len(argv) >= 3
        and Path(argv[0]).name.startswith("python")
        and argv[1] == "-m"
        and argv[2] in ("llmft", "llmft.cli")
    ):
        return argv[3:]
    return None


def llmft_parse_problem(arguments: list[str]) -> str | None:
    """None when `llmft ARGUMENTS` names an existing subcommand and its parser accepts the arguments."""
    from llmft.cli import build_parser

    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            namespace = build_parser().parse_args(arguments)
    except SystemExit:
        return stderr.getvalue().strip().splitlines()[-1] if stderr.getvalue().strip() else "rejected"
    if not getattr(namespace, "func", None):
        return "no runnable subcommand"
    return None


@pytest.mark.parametrize("chart, file", CASES)
def test_llmft_containers_run_existing_subcommands(chart, file):
    problems = []
    for name, spec in pod_specs(rendered(chart, file)):
        for container in _containers(spec):
            arguments = llmft_arguments(container)
            if arguments is None:
                continue
            problem = llmft_parse_problem(arguments)
            if problem:
                problems.append(f"{name}/{container['name']}: llmft {' '.join(arguments)}: {problem}")
    assert not problems, "\n".join(problems)


def test_llmft_command_check_rejects_what_llmft_would():
    assert llmft_parse_problem(["storage", "cp", "s3://b/model", "/models/model"]) is None
    assert "invalid choice" in llmft_parse_problem(["no-such-command", "x"])
    assert llmft_parse_problem(["storage", "cp", "only-one-argument"]) is not None
    assert llmft_arguments({"command": ["llmft"], "args": ["storage", "ls", "b/x"]}) == ["storage", "ls", "b/x"]
    assert llmft_arguments({"command": ["python3", "-m", "llmft", "sft", "c.yaml"]}) == ["sft", "c.yaml"]
    assert llmft_arguments({"command": ["vllm", "serve"]}) is None


SECRET_WORDS = {"SECRET", "PASSWORD", "PASSWD", "TOKEN", "KEY", "CREDENTIALS"}
# Names that hold a credential itself (a ConfigMap may mention tokens such as eos_token, not these).
CREDENTIAL_NAMES = {
    "TOKEN",
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
    "ACCESS_TOKEN",
    "AUTH_TOKEN",
    "API_TOKEN",
    "API_KEY",
    "ACCESS_KEY",
    "SECRET_KEY",
    "ACCESS_KEY_ID",
    "SECRET_ACCESS_KEY",
    "PASSWORD",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "BUCKET_STORAGE_ACCESS_KEY",
    "BUCKET_STORAGE_SECRET_KEY",
}


def _words(name: str) -> list[str]:
    snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name)
    return [w for w in re.split(r"[_\-.\s]+", snake.upper()) if w]


def secret_like_env(name: str) -> bool:
    """An env var name that suggests a secret: HF_TOKEN, BUCKET_STORAGE_SECRET_KEY (not TOKENIZERS_PARALLELISM)."""
    return bool(set(_words(name)) & SECRET_WORDS)


def credential_like_key(name: str) -> bool:
    words = _words(name)
    joined = "_".join(words)
    return (
        "PASSWORD" in words
        or "PASSWD" in words
        or joined in CREDENTIAL_NAMES
        or any(joined.endswith("_" + c) for c in CREDENTIAL_NAMES if "_" in c and c != "HF_TOKEN")
        or ("SECRET" in words and ("KEY" in words or "ACCESS" in words))
    )


def _credential_keys(node, where: str) -> list[str]:
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            if credential_like_key(str(key)) and value not in (None, "") and not isinstance(value, (dict, list)):
                found.append(f"{where}.{key}")
            found.extend(_credential_keys(value, f"{where}.{key}"))
    elif isinstance(node, list):
        for index, item in enumerate(node):
            found.extend(_credential_keys(item, f"{where}[{index}]"))
    return found


def secret_problems(documents: list[dict], pods: list[tuple[str, dict]]) -> list[str]:
    problems = []
    for name, spec in pods:
        for container in _containers(spec):
            for env in container.get("env", []):
                if not secret_like_env(env["name"]):
                    continue
                where = f"{name}/{container['name']}: env {env['name']}"
                if "value" in env:
                    problems.append(f"{where} is a literal value; use valueFrom.secretKeyRef")
                elif "secretKeyRef" not in (env.get("valueFrom") or {}):
                    problems.append(f"{where} does not come from a Secret (valueFrom.secretKeyRef)")
    for document in documents:
        if document.get("kind") != "ConfigMap":
            continue
        cm = document["metadata"]["name"]
        for key, text in (document.get("data") or {}).items():
            if credential_like_key(Path(key).stem):
                problems.append(f"ConfigMap {cm}: data key {key} looks like a credential")
            for line in str(text).splitlines():
                assignment = re.match(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*\S", line)
                if assignment and credential_like_key(assignment.group(1)):
                    problems.append(f"ConfigMap {cm}: {key} assigns {assignment.group(1)}")
            try:
                parsed = yaml.safe_load(text)
            except yaml.YAMLError:
                continue
            problems.extend(
                f"ConfigMap {cm}: {key}: {path} holds a credential" for path in _credential_keys(parsed, "")
            )
    return problems


@pytest.mark.parametrize("chart, file", CASES)
def test_secrets_only_through_secret_key_refs(chart, file):
    result = rendered(chart, file)
    problems = secret_problems(result.documents, pod_specs(result))
    assert not problems, "\n".join(problems)


def test_secret_check_catches_literals_and_config_map_credentials():
    pods = [
        (
            "job",
            {
                "containers": [
                    {
                        "name": "c",
                        "env": [
                            {"name": "HF_TOKEN", "value": "hf_abc"},
                            {"name": "TOKENIZERS_PARALLELISM", "value": "false"},
                            {
                                "name": "BUCKET_STORAGE_SECRET_KEY",
                                "valueFrom": {"configMapKeyRef": {"name": "x", "key": "y"}},
                            },
                            {
                                "name": "BUCKET_STORAGE_ACCESS_KEY",
                                "valueFrom": {"secretKeyRef": {"name": "x", "key": "y"}},
                            },
                        ],
                    }
                ]
            },
        )
    ]
    config = {
        "kind": "ConfigMap",
        "metadata": {"name": "cfg"},
        "data": {
            "config.yaml": "tokenizer:\n  eos_token: </s>\nhub:\n  hf_token: hf_abc\n",
            "env": "AWS_SECRET_ACCESS_KEY=abc\nMODE=x\n",
        },
    }
    problems = secret_problems([config], pods)
    assert any("HF_TOKEN is a literal" in p for p in problems)
    assert any("BUCKET_STORAGE_SECRET_KEY does not come from a Secret" in p for p in problems)
    assert any(".hub.hf_token holds a credential" in p for p in problems)
    assert any("assigns AWS_SECRET_ACCESS_KEY" in p for p in problems)
    assert not any("TOKENIZERS" in p or "eos_token" in p or "ACCESS_KEY is" in p for p in problems)
    assert len(problems) == 4


def test_release_names_from_file_names():
    assert release_name_for(Path("tutorial-01-finetune-lora.yaml"), "x") == "tutorial-01-finetune-lora"
    assert release_name_for(Path("My_Recipe.v2.yaml"), "x") == "my-recipe-v2"
    assert release_name_for(None, "llm-inference-vllm") == "llm-inference-vllm-defaults"
