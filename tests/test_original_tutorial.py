"""The original tutorial's own files, as users bring them (tests/fixtures/original-tutorial, copies of
github.com/silogen/ai-workloads named in each file's first line), replayed through this suite's charts
(render, strict Kubernetes validation, lint) and the engine's config check.

Each file either works as written or fails at `helm template` with one message naming the key and its new
spelling; docs/tutorials/original-tutorial-files.md lists what each needs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from harness import CHARTS, REPO, lint_chart, pod_specs, render_valid

from llmft.charts import render_chart
from llmft.errors import UserError
from llmft.finetune.config import load_config

ORIGINAL = REPO / "tests" / "fixtures" / "original-tutorial"
MODEL_FILE = ORIGINAL / "download-model-to-bucket--tutorial-01-tiny-llama-to-minio.yaml"
DATA_FILE = ORIGINAL / "download-data-to-bucket--tutorial-01-argilla-to-minio.yaml"
FINETUNE_FILES = [
    ORIGINAL / "llm-finetune--tutorial-01-finetune-lora.yaml",
    ORIGINAL / "llm-finetune--tutorial-01-finetune-full-param.yaml",
]
VLLM_FILE = ORIGINAL / "llm-inference-vllm--tinyllama-original-keys.yaml"
# What the original finetune files need here (the docs say so): the engine has no `mistral-with-system`
# template, and the original chart's image and AIM manifest keys are not this chart's. `--set KEY=null`
# removes a key of a values file.
FINETUNE_FIXES = [
    "finetuning_config.data_conf.chat_template_name=keep-original",
    "finetuningImage=null",
    "aimManifest=null",
]


def test_the_fixtures_are_unchanged_copies_naming_their_source():
    for path in sorted(ORIGINAL.glob("*.yaml")):
        first = path.read_text().splitlines()[0]
        assert first.startswith("# Source: github.com/silogen/ai-workloads @ c32f131"), path.name


def test_original_model_delivery_file_works_as_written():
    """modelId / bucketPath are the original spellings of modelID / bucketModelPath."""
    rendered = render_valid(
        "download-model-to-bucket", values_files=[MODEL_FILE], release_name="deliver-tiny-llama-model"
    )
    ((_, spec),) = pod_specs(rendered)
    assert spec["containers"][0]["args"][:2] == [
        "hf://TinyLlama/TinyLlama-1.1B-Chat-v1.0",
        "default-bucket/models/tiny-llama/tinyllama-1.1b-chat-v1.0",
    ]
    assert "--exclude" in spec["containers"][0]["args"]
    assert lint_chart(CHARTS / "download-model-to-bucket", yaml.safe_load(MODEL_FILE.read_text())) == []


def test_original_data_delivery_file_works_as_written():
    rendered = render_valid("download-data-to-bucket", values_files=[DATA_FILE], release_name="deliver-argilla-data")
    (config_map,) = rendered.of_kind("ConfigMap")
    script = next(iter(config_map["data"].values()))
    assert 'dataset.to_json("/downloads/datasets/argilla-mistral-large-human-prompts.jsonl")' in script
    assert lint_chart(CHARTS / "download-data-to-bucket", yaml.safe_load(DATA_FILE.read_text())) == []


@pytest.mark.parametrize("values", FINETUNE_FILES, ids=lambda p: p.name)
def test_original_finetune_file_fails_naming_the_template_to_use(values):
    with pytest.raises(UserError) as caught:
        render_chart(CHARTS / "llm-finetune", values_files=[values], release_name="tiny-llama-argilla-v1")
    assert (
        'chat_template_name: a template name of the original engine, got "mistral-with-system" (the original '
        "engine's `[INST] ... [/INST]` template with `<<SYS>>` blocks is not offered; use keep-original"
    ) in str(caught.value)


@pytest.mark.parametrize("values", FINETUNE_FILES, ids=lambda p: p.name)
def test_original_finetune_file_with_the_named_fixes_renders_and_the_engine_reads_its_keys(values):
    """bf16: true with torch_dtype: bfloat16 is dtype bf16; push_to_hub: false and use_cache: false are what
    the engine always does. The rendered engine config passes the engine's own check."""
    sets = FINETUNE_FIXES + ["checkpointsRemote=default-bucket/experiments/tiny-llama-argilla-v1"]
    rendered = render_valid(
        "llm-finetune", values_files=[values], set_values=sets, release_name="tiny-llama-argilla-v1"
    )
    config_map = next(cm for cm in rendered.of_kind("ConfigMap") if "finetuning_config.yaml" in cm.get("data", {}))
    engine_config = yaml.safe_load(config_map["data"]["finetuning_config.yaml"])
    assert engine_config["training_args"]["bf16"] is True  # passed on as written; the engine reads it
    config = load_config(engine_config)
    assert config.run_conf.model_args.dtype == "bf16"
    assert config.run_conf.model == "default-bucket/models/tiny-llama/tinyllama-1.1b-chat-v1.0"
    supplied = yaml.safe_load(values.read_text())
    for key in ("finetuningImage", "aimManifest"):
        supplied.pop(key)
    supplied["finetuning_config"]["data_conf"]["chat_template_name"] = "keep-original"
    assert lint_chart(CHARTS / "llm-finetune", supplied) == []


def test_precision_keys_that_disagree_are_one_problem_naming_both():
    data = yaml.safe_load(FINETUNE_FILES[0].read_text())["finetuning_config"]
    data["data_conf"]["chat_template_name"] = "keep-original"
    data["run_conf"].update(model="default-bucket/models/x", model_args={"torch_dtype": "float32"})
    with pytest.raises(UserError) as caught:
        load_config(data)
    assert (
        "finetuning_config.run_conf.model_args.dtype: the precision keys disagree (training_args.bf16: true, "
        'run_conf.model_args.torch_dtype: "float32") (keep only run_conf.model_args.dtype)'
    ) in str(caught.value)


def test_original_vllm_keys_render_with_an_hf_model_and_a_bare_hub_id_fails_naming_hf():
    rendered = render_valid(
        "llm-inference-vllm",
        values_files=[VLLM_FILE],
        set_values=["model=hf://TinyLlama/TinyLlama-1.1B-Chat-v1.0"],
        release_name="tiny-llama",
    )
    (deployment,) = rendered.of_kind("Deployment")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--no-enable-chunked-prefill" in args
    assert args[args.index("--served-model-name") + 1] == "TinyLlama/TinyLlama-1.1B-Chat-v1.0"
    supplied = dict(yaml.safe_load(VLLM_FILE.read_text()), model="hf://TinyLlama/TinyLlama-1.1B-Chat-v1.0")
    assert lint_chart(CHARTS / "llm-inference-vllm", supplied) == []
    with pytest.raises(UserError) as caught:
        render_chart(CHARTS / "llm-inference-vllm", values_files=[VLLM_FILE], release_name="tiny-llama")
    assert "a Hugging Face Hub model is written hf://TinyLlama/TinyLlama-1.1B-Chat-v1.0" in str(caught.value)


def test_the_tutorials_vllm_command_renders():
    name = "tiny-llama-argilla-v1"
    rendered = render_valid(
        "llm-inference-vllm",
        set_values=[
            f"model=s3://default-bucket/experiments/{name}/checkpoint-final",
            f"vllm_engine_args.served_model_name={name}",
        ],
        release_name=name,
    )
    assert rendered.of_kind("Service")[0]["metadata"]["name"] == f"llm-inference-vllm-{name}"


# The argilla dataset's shape, as the original script reads it: `generation_prompt` holds one list of messages
# (always with an empty system message first), `generations` the answers, `kind` who wrote the prompt.
STANDIN_SITECUSTOMIZE = textwrap.dedent("""
    import os
    import sys
    if os.environ.get("ORIGINAL_TUTORIAL_STANDIN") and sys.argv[0].endswith(".py"):  # the data script only
        import datasets

        _hub_load = datasets.load_dataset

        def load_dataset(path, *args, **kwargs):
            if path != "argilla/10k_prompts_ranked_mistral_large_responses":
                return _hub_load(path, *args, **kwargs)
            rows = [{"generation_prompt": [[{"role": "system", "content": ""},
                                            {"role": "user", "content": f"Question {i}?"}]],
                     "generations": [f"Answer {i}."], "kind": "human" if i % 4 else "synthetic"}
                    for i in range(12)]
            return datasets.Dataset.from_list(rows)

        datasets.load_dataset = load_dataset
""")


def test_original_data_script_runs_locally_inside_the_state_dir(bucket, s3_env, tmp_path):
    """`llmft local` runs the original script unchanged: its hard-coded /downloads/datasets/ path lands in the
    run's volume, not in /downloads. Only the Hub call (`datasets.load_dataset` of the argilla dataset) is
    replaced, by a sitecustomize on PYTHONPATH returning rows of the dataset's shape: there is no network here,
    and tests/hub_standin.py serves models, not datasets."""
    standin = tmp_path / "standin"
    standin.mkdir()
    (standin / "sitecustomize.py").write_text(STANDIN_SITECUSTOMIZE)
    state = tmp_path / "state"
    env = dict(
        os.environ,
        LLMFT_STATE_DIR=str(state),
        ORIGINAL_TUTORIAL_STANDIN="1",
        PYTHONPATH=os.pathsep.join([str(standin), os.environ.get("PYTHONPATH", "")]),
    )
    destination = f"{bucket}/datasets/"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "llmft",
            "local",
            str(CHARTS / "download-data-to-bucket"),
            "-f",
            str(DATA_FILE),
            "--set",
            f"bucketStorageHost={s3_env['BUCKET_STORAGE_HOST']}",
            "--set",
            f"bucketDataDir={destination}",
            "--name",
            "deliver-argilla-data",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert not Path("/downloads/datasets/argilla-mistral-large-human-prompts.jsonl").exists()
    listing = subprocess.run(
        [
            sys.executable,
            "-m",
            "llmft",
            "storage",
            "cp",
            f"{destination}argilla-mistral-large-human-prompts.jsonl",
            str(tmp_path / "got.jsonl"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert listing.returncode == 0, listing.stderr
    records = [json.loads(line) for line in (tmp_path / "got.jsonl").read_text().splitlines()]
    assert len(records) == 9  # the human-written prompts
    # Every record keeps its empty system message as the script wrote it; the engine drops it when it reads
    # the file and counts it (see test_finetune_data / validate-data).
    assert all(r["messages"][0] == {"role": "system", "content": ""} for r in records)
    assert "empty system messages dropped (harmless): 9 record(s)" in result.stderr


@pytest.mark.parametrize(
    "chart, sets",
    [
        ("download-model-to-bucket", ["modelID=/no-such-model-folder", "bucketModelPath={bucket}/models/x"]),
        ("download-data-to-bucket", ["dataScript=import sys; sys.exit(0)", "bucketDataDir={bucket}/datasets/"]),
    ],
    ids=["download-model", "download-data"],
)
def test_local_runner_treats_exit_status_2_of_a_staging_job_as_final(chart, sets, bucket, s3_env, tmp_path):
    """podFailurePolicy FailJob on exit status 2: one pod, not backoffLimit + 1 (the chart's default is 3)."""
    env = dict(os.environ, LLMFT_STATE_DIR=str(tmp_path / "state"))
    arguments = [part for item in sets for part in ("--set", item.format(bucket=bucket))]
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "llmft",
            "local",
            str(CHARTS / chart),
            *arguments,
            "--set",
            f"bucketStorageHost={s3_env['BUCKET_STORAGE_HOST']}",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr
    assert "failed with exit code 2, which its podFailurePolicy treats as final" in result.stderr
    assert "starting a new pod" not in result.stderr
    assert len([line for line in result.stderr.splitlines() if line.startswith("error:")]) == 1
