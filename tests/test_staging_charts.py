"""The staging charts (download-model-to-bucket, download-data-to-bucket), rendered by the real Helm engine.

Unit checks on the rendered manifests, then end to end: the containers of the
rendered Job are run here as processes, in order (init containers first), with
their rendered command, arguments and environment, volumes as temp folders and
Secrets from the test S3 server. The Hub is `HubStandIn`, a local HTTP server that
stands in for the Hugging Face Hub's API (no network here).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from harness import CHARTS, OVERRIDES, lint_chart, pod_specs, render_chart, render_valid, restricted_violations
from hub_standin import HubStandIn

from llmft.errors import UserError
from llmft.local.pods import PathMapper
from llmft.storage import download_tree, list_objects, parse_location, read_manifest

MODEL_CHART = CHARTS / "download-model-to-bucket"
DATA_CHART = CHARTS / "download-data-to-bucket"
MODEL_OVERRIDES = OVERRIDES / "download-model-to-bucket"
DATA_OVERRIDES = OVERRIDES / "download-data-to-bucket"
TUTORIAL_MODEL = MODEL_OVERRIDES / "tutorial-01-tiny-llama-to-minio.yaml"
TUTORIAL_DATA = DATA_OVERRIDES / "tutorial-01-argilla-to-minio.yaml"
SYNTHETIC_DATA = DATA_OVERRIDES / "tiny-synthetic-to-minio.yaml"
TINY_MODEL = MODEL_OVERRIDES / "tiny-random-model-to-minio.yaml"
LLMFT = str(Path(sys.executable).parent / "llmft")
SECRET_ENV = {"BUCKET_STORAGE_ACCESS_KEY", "BUCKET_STORAGE_SECRET_KEY", "HF_TOKEN"}


def override_cases():
    return [(MODEL_CHART, path) for path in sorted(MODEL_OVERRIDES.glob("*.yaml"))] + [
        (DATA_CHART, path) for path in sorted(DATA_OVERRIDES.glob("*.yaml"))
    ]


def containers(rendered) -> dict[str, dict]:
    ((_, spec),) = pod_specs(rendered)
    return {c["name"]: c for c in spec.get("initContainers", []) + spec["containers"]}


def env_of(container: dict) -> dict[str, dict]:
    return {item["name"]: item for item in container.get("env", [])}


def argv(container: dict) -> list[str]:
    return list(container["command"]) + list(container.get("args", []))


# ---------------------------------------------------------------- rendering


def test_there_are_overrides_for_both_charts():
    assert {p.name for p in MODEL_OVERRIDES.glob("*.yaml")} >= {
        "tutorial-01-tiny-llama-to-minio.yaml",
        "tiny-random-model-to-minio.yaml",
    }
    assert {p.name for p in DATA_OVERRIDES.glob("*.yaml")} >= {
        "tutorial-01-argilla-to-minio.yaml",
        "tiny-synthetic-to-minio.yaml",
    }


@pytest.mark.parametrize("chart, values", override_cases(), ids=lambda v: getattr(v, "name", None))
def test_every_override_renders_valid_restricted_lint_clean(chart, values):
    rendered = render_valid(chart, values_files=[values], release_name="staging-check")
    assert restricted_violations(rendered) == []
    assert lint_chart(chart, yaml.safe_load(values.read_text())) == []
    job = rendered.one("Job")
    assert job["metadata"]["name"] == "staging-check"
    assert job["spec"]["ttlSecondsAfterFinished"] > 0
    for container in containers(rendered).values():
        assert container["resources"]["requests"] and container["resources"]["limits"]
        assert container["command"][0] == "llmft"  # one llmft subcommand per container, no shell
    assert "kubectl logs -f job/staging-check" in rendered.notes


def test_the_tutorials_two_delivery_commands_render():
    """Section 2 of the tutorial, with this repository's chart and override paths and release names."""
    model = render_valid(MODEL_CHART, values_files=[TUTORIAL_MODEL], release_name="deliver-tiny-llama-model")
    data = render_valid(DATA_CHART, values_files=[TUTORIAL_DATA], release_name="deliver-argilla-data")
    assert argv(containers(model)["download-model"])[:4] == [
        "llmft",
        "download-model",
        "hf://TinyLlama/TinyLlama-1.1B-Chat-v1.0",
        "default-bucket/models/tiny-llama/tinyllama-1.1b-chat-v1.0",
    ]
    assert argv(containers(data)["validate-and-upload"])[:4] == [
        "llmft",
        "prepare-data",
        "/downloads/datasets",
        "default-bucket/datasets",
    ]
    assert data.one("ConfigMap")["metadata"]["name"] == "deliver-argilla-data-config"
    assert "argilla/10k_prompts_ranked_mistral_large_responses" in data.one("ConfigMap")["data"]["data.py"]


@pytest.mark.parametrize(
    "model_id, source",
    [
        ("TinyLlama/TinyLlama-1.1B-Chat-v1.0", "hf://TinyLlama/TinyLlama-1.1B-Chat-v1.0"),
        ("gpt2", "hf://gpt2"),
        ("hf://org/name", "hf://org/name"),
        ("s3://models-bucket/llama", "s3://models-bucket/llama"),
        ("/models/llama", "/models/llama"),
        ("./.demo/tiny-model", "./.demo/tiny-model"),
    ],
)
def test_model_id_rule(model_id, source):
    rendered = render_chart(MODEL_CHART, {"modelID": model_id, "bucketModelPath": "b-1/models/x"})
    assert containers(rendered)["download-model"]["args"][0] == source


def test_model_chart_options_become_flags():
    rendered = render_chart(
        MODEL_CHART,
        values_files=[TUTORIAL_MODEL],
        set_values=[
            "modelRevision=v1.0",
            "downloadIncludeGlob={*.json,*.safetensors}",
            "allowOverwrite=true",
            "transferWorkers=8",
        ],
    )
    args = containers(rendered)["download-model"]["args"]
    assert args[2:] == [
        "--scratch-dir",
        "/downloads",
        "--workers",
        "8",
        "--revision",
        "v1.0",
        "--include",
        "*.json",
        "--include",
        "*.safetensors",
        "--exclude",
        "original/*",
        "--overwrite",
    ]
    plain = containers(render_chart(MODEL_CHART, {"modelID": "a/b", "bucketModelPath": "b-1/m"}))
    assert plain["download-model"]["args"][2:] == ["--scratch-dir", "/downloads", "--workers", "4"]


def test_data_chart_options_become_flags():
    rendered = render_chart(
        DATA_CHART,
        values_files=[SYNTHETIC_DATA],
        set_values=[
            "skipInvalid=true",
            "dataKind=sft",
            "tokenizerPath=default-bucket/models/tiny",
            "pipPackages={pandas==2.2.3,pyarrow}",
        ],
    )
    found = containers(rendered)
    assert found["validate-and-upload"]["args"] == [
        "/downloads/datasets",
        "default-bucket/datasets/tiny-synthetic",
        "--skip-invalid",
        "--kind",
        "sft",
        "--tokenizer",
        "default-bucket/models/tiny",
    ]
    assert found["data-script"]["args"] == [
        "/scripts/data.py",
        "--output-dir",
        "/downloads/datasets",
        "--pip-package",
        "pandas==2.2.3",
        "--pip-package",
        "pyarrow",
    ]
    # No pipPackages, no pip.
    plain = containers(render_chart(DATA_CHART, values_files=[SYNTHETIC_DATA]))
    assert "--pip-package" not in plain["data-script"]["args"]


def test_least_privilege_between_the_data_containers():
    rendered = render_chart(DATA_CHART, values_files=[TUTORIAL_DATA], set_values=["hfTokenSecret.name=hf-token"])
    found = containers(rendered)
    script, upload = env_of(found["data-script"]), env_of(found["validate-and-upload"])
    # The user's script: a Hub token when one is configured, never the bucket credentials.
    assert not {"BUCKET_STORAGE_ACCESS_KEY", "BUCKET_STORAGE_SECRET_KEY", "BUCKET_STORAGE_HOST"} & set(script)
    assert script["HF_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "hf-token", "key": "hf-token"}
    # The upload: bucket credentials, no Hub token, and the Hub switched off.
    assert "HF_TOKEN" not in upload and upload["HF_HUB_OFFLINE"]["value"] == "1"
    assert upload["BUCKET_STORAGE_SECRET_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "minio-credentials",
        "key": "minio-secret-key",
    }
    # Only the script container sees the script; both share the scratch volume. Each has its own /tmp and
    # home folder (its own subPath), so the script cannot leave code there for the container holding the keys.
    mounts = {name: {m["mountPath"]: m.get("subPath") for m in c["volumeMounts"]} for name, c in found.items()}
    assert mounts == {
        "data-script": {"/downloads": None, "/scripts": None, "/tmp": "data-script", "/home/llmft": "data-script"},
        "validate-and-upload": {
            "/downloads": None,
            "/tmp": "validate-and-upload",
            "/home/llmft": "validate-and-upload",
        },
    }
    assert [c["name"] for c in rendered.one("Job")["spec"]["template"]["spec"]["initContainers"]] == ["data-script"]


@pytest.mark.parametrize("chart, values", override_cases(), ids=lambda v: getattr(v, "name", None))
def test_secrets_only_as_secret_key_refs(chart, values):
    rendered = render_chart(chart, values_files=[values], set_values=["hfTokenSecret.name=hf"])
    for container in containers(rendered).values():
        for name, item in env_of(container).items():
            if name in SECRET_ENV:
                assert set(item) == {"name", "valueFrom"} and set(item["valueFrom"]) == {"secretKeyRef"}, item
    for config_map in rendered.of_kind("ConfigMap"):
        assert not any(word in json.dumps(config_map) for word in ("minio-access-key", "minio-secret-key"))
    model_env = env_of(containers(render_chart(MODEL_CHART, values_files=[TUTORIAL_MODEL]))["download-model"])
    assert "HF_TOKEN" not in model_env  # no token unless hfTokenSecret.name is set


def test_labels_annotations_scheduling_and_scratch_volume():
    rendered = render_chart(
        MODEL_CHART,
        values_files=[TUTORIAL_MODEL],
        set_values=[
            "labels.kueue\\.x-k8s\\.io/queue-name=cpu-queue",
            "annotations.owner=ml",
            "nodeSelector.pool=staging",
            "tolerations[0].key=dedicated",
            "tolerations[0].operator=Exists",
            "priorityClassName=low",
            "imagePullSecrets[0].name=regcred",
        ],
    )
    job = rendered.one("Job")
    pod = job["spec"]["template"]
    for labels in (job["metadata"]["labels"], pod["metadata"]["labels"]):
        assert labels["kueue.x-k8s.io/queue-name"] == "cpu-queue"
        assert labels["app.kubernetes.io/name"] == "download-model-to-bucket"
        assert labels["app.kubernetes.io/component"] == "download-model"
        assert labels["helm.sh/chart"] == "download-model-to-bucket-0.1.0"
    assert pod["metadata"]["annotations"] == {"owner": "ml"}
    spec = pod["spec"]
    assert spec["nodeSelector"] == {"pool": "staging"} and spec["priorityClassName"] == "low"
    assert spec["tolerations"] == [{"key": "dedicated", "operator": "Exists"}]
    assert spec["imagePullSecrets"] == [{"name": "regcred"}]
    assert spec["volumes"][0] == {"name": "downloads", "emptyDir": {"sizeLimit": "8Gi"}}
    assert [volume["name"] for volume in spec["volumes"][1:]] == ["tmp", "home"]  # the writable paths
    # With a storage class the scratch space is a generic ephemeral volume of that class and size.
    ephemeral = render_valid(
        MODEL_CHART, values_files=[TUTORIAL_MODEL], set_values=["storageClass=fast-ssd", "storageQuantity=200Gi"]
    )
    claim = pod_specs(ephemeral)[0][1]["volumes"][0]["ephemeral"]["volumeClaimTemplate"]["spec"]
    assert claim["storageClassName"] == "fast-ssd" and claim["resources"]["requests"]["storage"] == "200Gi"


@pytest.mark.parametrize(
    "chart, values, sets, message",
    [
        (MODEL_CHART, TUTORIAL_MODEL, ["modelId=x/y"], r"modelId"),
        (MODEL_CHART, TUTORIAL_MODEL, ["allowOverwrite=maybe"], r"allowOverwrite"),
        (MODEL_CHART, TUTORIAL_MODEL, ["bucketModelPath=Bad Bucket/x"], r"bucketModelPath"),
        (MODEL_CHART, TUTORIAL_MODEL, ["transferWorkers=0"], r"transferWorkers"),
        (MODEL_CHART, TUTORIAL_MODEL, ["modelID="], r"modelID is required"),
        (MODEL_CHART, TUTORIAL_MODEL, ["bucketModelPath="], r"bucketModelPath is required"),
        (MODEL_CHART, TUTORIAL_MODEL, ["bucketCredentialsSecret.name="], r"bucketCredentialsSecret"),
        (DATA_CHART, TUTORIAL_DATA, ["dataScript="], r"dataScript is required"),
        (DATA_CHART, TUTORIAL_DATA, ["bucketDataDir="], r"bucketDataDir is required"),
        (DATA_CHART, TUTORIAL_DATA, ["dataKind=chat"], r"dataKind"),
        (DATA_CHART, TUTORIAL_DATA, ["pipPackage={pandas}"], r"pipPackage"),
        (DATA_CHART, TUTORIAL_DATA, ["image.pullPolicy=Sometimes"], r"pullPolicy"),
    ],
)
def test_bad_values_fail_naming_the_key(chart, values, sets, message):
    with pytest.raises(UserError, match=message):
        render_chart(chart, values_files=[values], set_values=sets)


@pytest.mark.parametrize("chart, values", [(MODEL_CHART, TUTORIAL_MODEL), (DATA_CHART, TUTORIAL_DATA)])
def test_release_names_are_validated(chart, values):
    with pytest.raises(UserError, match="release name 'Deliver-Model' is invalid"):
        render_chart(chart, values_files=[values], release_name="Deliver-Model")
    # Helm accepts dots; a Job's pod label does not, so the chart refuses with its own message.
    with pytest.raises(
        UserError,
        match=r"release name \\?\"deliver\.model\\?\" is invalid: use lowercase letters, "
        r"digits and '-' \(at most 53 characters\)",
    ):
        render_chart(chart, values_files=[values], release_name="deliver.model")


# ---------------------------------------------------------------- end to end: run the rendered containers


def run_pod(
    rendered,
    tmp_path: Path,
    secrets: dict[tuple[str, str], str],
    extra_env: dict | None = None,
    drop_env: tuple[str, ...] = (),
) -> list[tuple[str, subprocess.CompletedProcess]]:
    """Run the rendered pod's containers here, init containers first, stopping at the first failure.

    Volumes become folders under tmp_path (ConfigMaps written out), container paths in arguments and
    environment values are mapped to them, and secretKeyRefs are looked up in `secrets` (a missing one
    is a KeyError: the chart asked for a Secret the test did not provide).
    """
    ((_, spec),) = pod_specs(rendered)
    config_maps = {cm["metadata"]["name"]: cm.get("data", {}) for cm in rendered.of_kind("ConfigMap")}
    folders = {}
    for volume in spec["volumes"]:
        folder = tmp_path / "volumes" / volume["name"]
        folder.mkdir(parents=True, exist_ok=True)
        if "configMap" in volume:
            for key, text in config_maps[volume["configMap"]["name"]].items():
                (folder / key).write_text(text)
        folders[volume["name"]] = folder
    base = {k: v for k, v in os.environ.items() if not k.startswith(("BUCKET_STORAGE_", "AWS_")) and k not in drop_env}
    results = []
    for container in spec.get("initContainers", []) + spec["containers"]:
        # The local runner's rule: mount points become the folders; a path that exists here is the test's own.
        mapped = PathMapper({m["mountPath"]: folders[m["name"]] for m in container.get("volumeMounts", [])})

        env = dict(base)
        for item in container.get("env", []):
            if "value" in item:
                env[item["name"]] = mapped(item["value"])
            else:
                ref = item["valueFrom"]["secretKeyRef"]
                env[item["name"]] = secrets[(ref["name"], ref["key"])]
        env.update(extra_env or {})
        command = [mapped(part) for part in argv(container)]
        assert command[0] == "llmft"
        result = subprocess.run([LLMFT, *command[1:]], env=env, capture_output=True, text=True, timeout=300)
        results.append((container["name"], result))
        if result.returncode != 0:
            break
    return results


@pytest.fixture
def secrets(s3_env):
    return {
        ("minio-credentials", "minio-access-key"): s3_env["BUCKET_STORAGE_ACCESS_KEY"],
        ("minio-credentials", "minio-secret-key"): s3_env["BUCKET_STORAGE_SECRET_KEY"],
        ("hf-token", "hf-token"): "hf_granted",
    }


def local_files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def bucket_tree(location: str, tmp_path: Path) -> dict[str, bytes]:
    target = tmp_path / "from-bucket" / location.replace("/", "_")
    download_tree(parse_location(location), target)  # refuses a tree without a manifest
    return local_files(target)


def test_tutorial_model_delivery_end_to_end_from_the_hub(bucket, s3_env, secrets, tiny_model_dir, tmp_path):
    """The tutorial's model override, run as rendered, against the Hub stand-in serving a tiny 'TinyLlama'."""
    repo = tmp_path / "repo"
    shutil.copytree(tiny_model_dir, repo)
    (repo / "original").mkdir()
    (repo / "original" / "consolidated.00.pth").write_bytes(os.urandom(40_000))
    destination = f"{bucket}/models/tiny-llama/tinyllama-1.1b-chat-v1.0"
    with HubStandIn() as hub:
        hub.add_repo("TinyLlama/TinyLlama-1.1B-Chat-v1.0", repo, gated=True, tokens=("hf_granted",))
        sets = [
            f"bucketStorageHost={s3_env['BUCKET_STORAGE_HOST']}",
            f"bucketModelPath={destination}",
            "hfTokenSecret.name=hf-token",
        ]
        rendered = render_valid(
            MODEL_CHART, values_files=[TUTORIAL_MODEL], set_values=sets, release_name="deliver-tiny-llama-model"
        )
        hub_env = {"HF_ENDPOINT": hub.endpoint}
        offline = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN")
        ((name, result),) = run_pod(rendered, tmp_path / "run1", secrets, hub_env, offline)
        assert result.returncode == 0, result.stderr
        assert bucket_tree(destination, tmp_path) == local_files(tiny_model_dir)  # original/ excluded
        assert "copied 7 file(s)" in result.stdout

        # The Job's retry (or a second apply) skips what is complete.
        ((name, again),) = run_pod(rendered, tmp_path / "run2", secrets, hub_env, offline)
        assert again.returncode == 0, again.stderr
        assert "copied 0 file(s)" in again.stdout and "skipped 7 already complete" in again.stdout

        # Without the token Secret the gated model fails with a one-line error.
        no_token = render_chart(MODEL_CHART, values_files=[TUTORIAL_MODEL], set_values=sets[:2])
        ((name, failed),) = run_pod(no_token, tmp_path / "run3", secrets, hub_env, offline)
        assert failed.returncode == 2
        assert (
            failed.stderr.strip()
            .splitlines()[-1]
            .startswith("error: model TinyLlama/TinyLlama-1.1B-Chat-v1.0 is gated")
        )


def test_tiny_model_override_end_to_end_from_a_folder(bucket, s3_env, secrets, tiny_model_dir, tmp_path):
    destination = f"{bucket}/models/tiny-random-llama"
    rendered = render_valid(
        MODEL_CHART,
        values_files=[TINY_MODEL],
        set_values=[
            f"modelID={tiny_model_dir}",
            f"bucketModelPath={destination}",
            f"bucketStorageHost={s3_env['BUCKET_STORAGE_HOST']}",
        ],
    )
    ((name, result),) = run_pod(rendered, tmp_path, secrets)
    assert result.returncode == 0, result.stderr
    assert bucket_tree(destination, tmp_path) == local_files(tiny_model_dir)
    assert read_manifest(parse_location(destination)) is not None


def test_synthetic_data_override_end_to_end(bucket, s3_env, secrets, tmp_path):
    destination = f"{bucket}/datasets/tiny-synthetic"
    rendered = render_valid(
        DATA_CHART,
        values_files=[SYNTHETIC_DATA],
        set_values=[f"bucketDataDir={destination}", f"bucketStorageHost={s3_env['BUCKET_STORAGE_HOST']}"],
    )
    results = run_pod(rendered, tmp_path, secrets)
    assert [name for name, _ in results] == ["data-script", "validate-and-upload"]
    for name, result in results:
        assert result.returncode == 0, f"{name}: {result.stderr}"
    uploaded = bucket_tree(destination, tmp_path)
    assert sorted(uploaded) == ["tiny-synthetic-eval.jsonl", "tiny-synthetic-train.jsonl"]
    records = [json.loads(line) for text in uploaded.values() for line in text.decode().splitlines()]
    assert 250 <= len(records) <= 400
    assert {"role": "user", "content": "What is 3 plus 4?"} in [r["messages"][0] for r in records]
    summary = results[1][1].stderr
    assert "tiny-synthetic-train.jsonl: SFT" in summary and "length in characters: p50" in summary


BAD_SCRIPT = """
import json, os
out = os.path.join(os.environ["DATASETS_DIR"], "mixed.jsonl")
good = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
with open(out, "w") as f:
    for i in range(30):
        if i % 10 == 3:
            f.write('{"messages": [{"role": "user", "content": "no answer"}]}\\n')
        elif i == 7:
            f.write("this is not json\\n")
        else:
            f.write(json.dumps(good) + "\\n")
"""


def test_bad_lines_fail_the_job_or_are_skipped_with_rejects(bucket, s3_env, secrets, tmp_path):
    destination = f"{bucket}/datasets/mixed"
    values = {
        "dataScript": BAD_SCRIPT,
        "bucketDataDir": destination,
        "bucketStorageHost": s3_env["BUCKET_STORAGE_HOST"],
    }
    failing = run_pod(render_valid(DATA_CHART, values=values), tmp_path / "strict", secrets)
    name, result = failing[-1]
    assert name == "validate-and-upload" and result.returncode == 2
    assert "mixed.jsonl:4: `messages` must end with a" in result.stderr
    assert "mixed.jsonl:8: invalid JSON" in result.stderr
    assert "4 invalid line(s) in the data, nothing uploaded" in result.stderr
    assert list_objects(parse_location(destination)) == {}

    skipping = run_pod(render_valid(DATA_CHART, values={**values, "skipInvalid": True}), tmp_path / "skip", secrets)
    assert all(r.returncode == 0 for _, r in skipping), skipping[-1][1].stderr
    assert "dropped 4 invalid line(s)" in skipping[-1][1].stdout
    uploaded = bucket_tree(destination, tmp_path)
    assert sorted(uploaded) == ["mixed.jsonl", "mixed.rejects.jsonl"]
    assert len(uploaded["mixed.jsonl"].decode().splitlines()) == 26
    rejects = [json.loads(line) for line in uploaded["mixed.rejects.jsonl"].decode().splitlines()]
    assert [r["line"] for r in rejects] == [4, 8, 14, 24]
    assert rejects[1]["text"] == "this is not json" and "invalid JSON" in rejects[1]["reason"]


# ---------------------------------------------------------------- documentation stays in step with values.yaml

FREE_FORM = {"resources", "labels", "annotations", "nodeSelector", "affinity"}


def documented_keys(values: dict) -> set[str]:
    keys = set()
    for key, value in values.items():
        if isinstance(value, dict) and value and key not in FREE_FORM:
            keys.update(f"{key}.{child}" for child in value)
        else:
            keys.add(key)
    return keys


@pytest.mark.parametrize("chart", [MODEL_CHART, DATA_CHART], ids=lambda c: c.name)
def test_readme_parameter_table_and_values_comments_match_values_yaml(chart):
    text = (chart / "values.yaml").read_text()
    values = yaml.safe_load(text)
    table = {line.split("`")[1] for line in (chart / "README.md").read_text().splitlines() if line.startswith("| `")}
    assert table == documented_keys(values)
    lines = text.splitlines()
    for index, line in enumerate(lines):
        if line and not line[0].isspace() and not line.startswith("#"):
            assert index > 0 and lines[index - 1].startswith("#"), f"{chart.name}: no comment above {line!r}"
