"""The battery: every `llmft` subcommand given the mistakes users make. Each one ends with exit status 2,
one message that names the file, key or argument and what to do (an invalid config lists each problem
on a line of its own), and never a Python traceback.

Runs `llmft.cli.main` in this process (what the console script calls); the bucket endpoint points at
a closed local port, so nothing here reaches a server.
"""

from __future__ import annotations

import json

import pytest

from llmft.cli import main

# (arguments, text the one-line message must contain). Paths are relative to the fixture folder below.
CASES = [
    # fine-tuning configs
    (["sft", "nope.yaml"], "config file nope.yaml does not exist"),
    (["sft", "emptydir"], "config file emptydir is a folder, not a file"),
    (["dpo", "latin1.yaml"], "latin1.yaml:2: not UTF-8 text"),
    (["sft", "dupkey.yaml"], "dupkey.yaml:4: the key 'learning_rate' appears twice"),
    (["sft", "broken.yaml"], "broken.yaml:3: not valid YAML"),
    (["sft", "list.yaml"], "the config must be a mapping of sections"),
    (["train", "nope.yaml"], "config file nope.yaml does not exist"),
    (["train", "unknown-key.yaml"], "finetuning_config.training_args.learnign_rate"),
    (["train", "unknown-key.yaml"], "did you mean learning_rate?"),
    (["sft", "output-is-a-file.yaml"], "finetuning_config.training_args.output_dir: file.txt is a file"),
    (["sft", "packing-yes.yaml"], "sft_args.packing: must be true or false (a boolean, not the string 'yes')"),
    (["sft", "zero-steps.yaml"], "training_args.max_steps: must be -1 or a positive integer, got 0"),
    (["sft", "best-metric.yaml"], "metric_for_best_model: no evaluation of this method writes it; use one of"),
    (["sft", "scheduler-kwargs.yaml"], "lr_scheduler_kwargs: the linear scheduler does not take num_cycles"),
    (["preview-data", "nope.yaml"], "config file nope.yaml does not exist"),
    (["config-schema", "nope"], "invalid choice: 'nope'"),
    # data
    (["validate-data", "nope.jsonl"], "nope.jsonl does not exist"),
    (["validate-data", "good.jsonl", "--tokenizer", "./nope"], "--tokenizer: nope is not a folder"),
    (["validate-data", "good.jsonl", "--tokenizer", "./notok"], "--tokenizer: notok has no tokenizer files"),
    (["validate-data", "good.jsonl", "--tokenizer", "./file.txt"], "--tokenizer: file.txt is not a folder"),
    (["validate-data", "good.jsonl", "--kind", "nope"], "invalid choice: 'nope'"),
    (["prepare-data", "nope", "default-bucket/x"], "nope is not a folder"),
    (["prepare-data", "fulldir", "default-bucket/x"], "fulldir holds files that are not JSON lines"),
    (["run-data-script", "nope.py", "--output-dir", "out"], "data script nope.py does not exist"),
    # models
    (["merge-adapter", "./nope", "./nope2", "./out"], "merge-adapter BASE: no model at nope"),
    (["merge-adapter", "./notok", "./notok", "./notok"], "merge-adapter OUT: notok is the BASE folder"),
    (["merge-adapter", "./notok", "./adapter", "./fulldir"], "merge-adapter OUT: fulldir is not empty"),
    (["merge-adapter", "./notok", "./adapter", "./file.txt"], "merge-adapter OUT: file.txt is a file"),
    (["merge-adapter", "./notok", "./adapter", "./notok/merged"], "lies inside the BASE folder"),
    (["download-model", "./nope", "default-bucket/models/x"], "source folder nope does not exist"),
    (["download-model", "./fulldir", "../etc"], "destination ../etc is a local path"),
    (["tiny-model", "file.txt"], "tiny-model DIR: file.txt is a file"),
    (["tiny-model", "fulldir"], "tiny-model DIR: fulldir is not empty"),
    (["tiny-model", "out", "--arch", "nope"], "--arch 'nope' is not supported"),
    (["serve", "./nope"], "nope is not a model folder"),
    # storage
    (["storage", "cp", "./nope", "default-bucket/x"], "nope does not exist"),
    (["storage", "ls", "./local"], "is a local path; `llmft storage ls` lists bucket locations"),
    (["storage", "nope"], "invalid choice: 'nope'"),
    (["storage", "cp", "./fulldir", "./file.txt"], "file.txt is a file, so a folder cannot be copied onto it"),
    (["storage", "cp", "./good.jsonl", "./file.txt"], "./file.txt already exists and differs from what would be"),
    # distributed helpers
    (["estimate-memory", "--params", "abc"], "a parameter count such as 8e9, got 'abc'"),
    (["estimate-memory", "--params", "-5"], "must be positive, got '-5'"),
    (["accelerate-config", "nope", "--out", "x"], "invalid choice: 'nope'"),
    # reports and the local runner
    (["report", "./emptydir"], "./emptydir has no metrics.jsonl"),
    (["local", "charts/nope", "-f", "x.yaml"], "charts/nope is not a chart folder (no Chart.yaml)"),
    (["local", "{charts}/llm-finetune", "-f", "nope.yaml"], "values file nope.yaml does not exist"),
    (
        ["local", "{charts}/llm-finetune", "-f", "dupkey-values.yaml", "--dry-run"],
        "dupkey-values.yaml:3: the key 'basemodel' appears twice",
    ),
    # chart values: `--set KEY=null` deletes a key, which the schema names (not a nil pointer in a template)
    (
        [
            "local",
            "{charts}/download-model-to-bucket",
            "-f",
            "{original}/download-model-to-bucket--tutorial-01-tiny-llama-to-minio.yaml",
            "--set",
            "bucketCredentialsSecret=null",
            "--dry-run",
        ],
        "missing property 'bucketCredentialsSecret'",
    ),
    (
        [
            "local",
            "{charts}/download-model-to-bucket",
            "-f",
            "{overrides}/download-model-to-bucket/tutorial-01-tiny-llama-to-minio.yaml",
            "--set",
            "image=null",
            "--dry-run",
        ],
        "missing property 'image'",
    ),
    (
        [
            "local",
            "{charts}/download-data-to-bucket",
            "-f",
            "{original}/download-data-to-bucket--tutorial-01-argilla-to-minio.yaml",
            "--set",
            "hfTokenSecret=null",
            "--dry-run",
        ],
        "missing property 'hfTokenSecret'",
    ),
    (
        [
            "local",
            "{charts}/llm-finetune",
            "-f",
            "{overrides}/llm-finetune/tutorial-01-finetune-lora.yaml",
            "--set",
            "bucketCredentialsSecret=null",
            "--dry-run",
        ],
        "missing property 'bucketCredentialsSecret'",
    ),
    (
        ["local", "{charts}/llm-inference-vllm", "--set", "model=hf://a/b", "--set", "service=null", "--dry-run"],
        "missing property 'service'",
    ),
    (
        [
            "local",
            "{charts}/llm-evaluate",
            "-f",
            "{overrides}/llm-evaluate/tutorial-01-evaluate-sweep.yaml",
            "--set",
            "gpuResourceName=null",
            "--dry-run",
        ],
        "missing property 'gpuResourceName'",
    ),
    (
        [
            "local",
            "{charts}/llm-tune",
            "-f",
            "{overrides}/llm-tune/tutorial-01-lora-search.yaml",
            "--set",
            "studyStorage=null",
            "--dry-run",
        ],
        "missing property 'studyStorage'",
    ),
    (
        [
            "local",
            "{charts}/llm-tune",
            "-f",
            "{overrides}/llm-tune/tutorial-01-lora-search.yaml",
            "--set",
            "finetuning_config.training_args.push_to_hub=true",
            "--dry-run",
        ],
        "finetuning_config.training_args.push_to_hub: unknown key, got true (the engine never pushes to the Hub",
    ),
    (
        [
            "local",
            "{charts}/llm-finetune",
            "-f",
            "{overrides}/llm-finetune/tutorial-01-finetune-lora.yaml",
            "--set",
            "checkpointsRemote=not a path",
            "--dry-run",
        ],
        "checkpointsRemote: \"not a path\" is not a bucket name (3-63 lowercase letters, digits, '.' or '-'): write "
        "bucket/path/in/bucket or s3://bucket/path, or start a local path with ./ or /",
    ),
    # the original tutorial's files (tests/fixtures/original-tutorial): read, or refused naming the new spelling
    (
        [
            "local",
            "{charts}/download-model-to-bucket",
            "-f",
            "{original}/download-model-to-bucket--tutorial-01-tiny-llama-to-minio.yaml",
            "--set",
            "modelID=a/b",
            "--dry-run",
        ],
        "modelId and modelID are both given (modelId is the original tutorial's spelling of modelID): "
        "keep only modelID",
    ),
    (
        [
            "local",
            "{charts}/download-model-to-bucket",
            "-f",
            "{original}/download-model-to-bucket--tutorial-01-tiny-llama-to-minio.yaml",
            "--set",
            "bucketModelPath=default-bucket/models/x",
            "--dry-run",
        ],
        "bucketPath and bucketModelPath are both given",
    ),
    (
        [
            "local",
            "{charts}/llm-finetune",
            "-f",
            "{original}/llm-finetune--tutorial-01-finetune-lora.yaml",
            "--dry-run",
        ],
        'chat_template_name: a template name of the original engine, got "mistral-with-system" (the original '
        "engine's `[INST] ... [/INST]` template with `<<SYS>>` blocks is not offered; use keep-original",
    ),
    (
        [
            "local",
            "{charts}/llm-finetune",
            "-f",
            "{original}/llm-finetune--tutorial-01-finetune-lora.yaml",
            "--set",
            "finetuning_config.data_conf.chat_template_name=keep-original",
            "--dry-run",
        ],
        "finetuningImage: a key of the original tutorial's chart; set image.repository and image.tag instead",
    ),
    (
        [
            "local",
            "{charts}/llm-finetune",
            "-f",
            "{overrides}/llm-finetune/tutorial-01-finetune-lora.yaml",
            "--set",
            "finetuning_config.training_args.push_to_hub=true",
            "--dry-run",
        ],
        "finetuning_config.training_args.push_to_hub: unknown key, got true (the engine never pushes to the Hub",
    ),
    (
        [
            "local",
            "{charts}/llm-finetune",
            "-f",
            "{overrides}/llm-finetune/tutorial-01-finetune-lora.yaml",
            "--set",
            "finetuning_config.run_conf.model_args.torch_dtype=float64",
            "--dry-run",
        ],
        'finetuning_config.run_conf.model_args.torch_dtype: unknown key, got "float64" (use run_conf.model_args.dtype',
    ),
    (
        [
            "local",
            "{charts}/llm-inference-vllm",
            "-f",
            "{original}/llm-inference-vllm--tinyllama-original-keys.yaml",
            "--dry-run",
        ],
        "; a Hugging Face Hub model is written hf://TinyLlama/TinyLlama-1.1B-Chat-v1.0",
    ),
    (
        [
            "local",
            "{charts}/llm-inference-vllm",
            "--set",
            "model=hf://a/b",
            "--set",
            "image=rocm/vllm:rocm6.4.1",
            "--dry-run",
        ],
        "write it as image.repository and image.tag: --set image.repository=rocm/vllm --set image.tag=rocm6.4.1",
    ),
    (
        [
            "local",
            "{charts}/llm-inference-vllm",
            "--set",
            "model=hf://a/b",
            "--set",
            "served_model_name=a",
            "--set",
            "vllm_engine_args.served-model-name=b",
            "--dry-run",
        ],
        "served_model_name and vllm_engine_args.served-model-name are both given",
    ),
    (
        [
            "local",
            "{charts}/download-data-to-bucket",
            "-f",
            "{overrides}/download-data-to-bucket/tutorial-01-argilla-to-minio.yaml",
            "--set",
            "dataScript=null",
            "--dry-run",
        ],
        "missing property 'dataScript'",
    ),
    (
        [
            "local",
            "{charts}/llm-inference-vllm",
            "--set",
            "model=hf://a/b",
            "--set",
            "downloaderImage=null",
            "--dry-run",
        ],
        "missing property 'downloaderImage'",
    ),
    (
        [
            "local",
            "{charts}/llm-finetune",
            "-f",
            "{overrides}/llm-finetune/tutorial-01-finetune-lora.yaml",
            "--set",
            "finetuning_config.training_args.bf16=false",
            "--dry-run",
        ],
        "finetuning_config.training_args.bf16: unknown key, got false (precision is run_conf.model_args.dtype",
    ),
    (
        ["sft", "original-template.yaml"],
        "finetuning_config.data_conf.chat_template_name: a template name of the "
        'original engine, got "simplified-llama31" (use llama-3',
    ),
    (
        ["train", "original-precision.yaml"],
        "run_conf.model_args.dtype: the precision keys disagree (training_args.bf16: true, "
        'run_conf.model_args.torch_dtype: "float32")',
    ),
]


@pytest.fixture(scope="module")
def probe_dir(tmp_path_factory):
    """Files that users get wrong: a folder for a file, Latin-1 bytes, a key twice, broken YAML, ..."""
    root = tmp_path_factory.mktemp("probe")
    (root / "file.txt").write_text("x")
    (root / "emptydir").mkdir()
    (root / "fulldir").mkdir()
    (root / "fulldir" / "a").write_text("hi")
    (root / "notok").mkdir()
    (root / "notok" / "config.json").write_text("{}")
    (root / "adapter").mkdir()
    (root / "adapter" / "adapter_config.json").write_text("{}")
    (root / "latin1.yaml").write_bytes(b"method: dpo\n# caf\xe9\n")
    (root / "dupkey.yaml").write_text("method: sft\ntraining_args:\n  learning_rate: 1.0e-4\n  learning_rate: 2\n")
    (root / "broken.yaml").write_text("method: sft\ntraining_args: [1\n")
    (root / "list.yaml").write_text("- method: sft\n")
    (root / "unknown-key.yaml").write_text("method: sft\ntraining_args:\n  learnign_rate: 1.0e-4\n")
    (root / "output-is-a-file.yaml").write_text(
        json.dumps(
            {
                "method": "sft",
                "data_conf": {"training_data": {"datasets": [{"path": "good.jsonl"}]}},
                "training_args": {"output_dir": "file.txt"},
                "peft_conf": {"peft_type": "NO_PEFT"},
                "run_conf": {"model": "./notok"},
            }
        )
    )
    for name, section, values in (
        ("packing-yes", "sft_args", {"packing": "yes"}),
        ("zero-steps", "training_args", {"max_steps": 0}),
        ("best-metric", "training_args", {"metric_for_best_model": "eval_accuracy", "eval_strategy": "steps"}),
        (
            "scheduler-kwargs",
            "training_args",
            {"lr_scheduler_type": "linear", "lr_scheduler_kwargs": {"num_cycles": 2}},
        ),
    ):
        config = {
            "method": "sft",
            "data_conf": {
                "training_data": {"datasets": [{"path": "good.jsonl"}]},
                "validation_data": {"type": "AUTO_SPLIT", "ratio": 0.5},
            },
            "training_args": {"output_dir": "out"},
            "peft_conf": {"peft_type": "NO_PEFT"},
            "run_conf": {"model": "./notok"},
        }
        config.setdefault(section, {}).update(values)
        (root / f"{name}.yaml").write_text(json.dumps(config))
    (root / "original-precision.yaml").write_text(
        json.dumps(
            {  # the original engine's keys, disagreeing
                "method": "sft",
                "data_conf": {"training_data": {"datasets": [{"path": "good.jsonl"}]}},
                "training_args": {"output_dir": "out", "bf16": True},
                "peft_conf": {"peft_type": "NO_PEFT"},
                "run_conf": {"model": "./notok", "model_args": {"torch_dtype": "float32"}},
            }
        )
    )
    (root / "original-template.yaml").write_text(
        json.dumps(
            {
                "method": "sft",
                "data_conf": {
                    "training_data": {"datasets": [{"path": "good.jsonl"}]},
                    "chat_template_name": "simplified-llama31",
                },
                "training_args": {"output_dir": "out"},
                "peft_conf": {"peft_type": "NO_PEFT"},
                "run_conf": {"model": "./notok"},
            }
        )
    )
    (root / "dupkey-values.yaml").write_text("basemodel: a/b\ncheckpointsRemote: x/y\nbasemodel: c/d\n")
    (root / "good.jsonl").write_text(
        json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}) + "\n"
    )
    return root


@pytest.fixture
def in_probe_dir(probe_dir, monkeypatch):
    """Commands run from the probe folder, with a bucket endpoint on a closed port: nothing is reached."""
    monkeypatch.chdir(probe_dir)
    monkeypatch.setenv("BUCKET_STORAGE_HOST", "http://127.0.0.1:9")
    monkeypatch.setenv("BUCKET_STORAGE_ACCESS_KEY", "probe")
    monkeypatch.setenv("BUCKET_STORAGE_SECRET_KEY", "probe-secret")
    monkeypatch.setenv("LLMFT_TRANSFER_ATTEMPTS", "1")  # an unreachable endpoint fails at once


@pytest.mark.parametrize("arguments, expected", CASES, ids=[" ".join(args) for args, _ in CASES])
def test_a_mistake_is_one_clear_line_with_exit_status_2(arguments, expected, in_probe_dir, capsys):
    from harness import CHARTS, OVERRIDES, REPO

    original = REPO / "tests" / "fixtures" / "original-tutorial"
    arguments = [argument.format(charts=CHARTS, overrides=OVERRIDES, original=original) for argument in arguments]
    try:
        status = main(arguments)
    except SystemExit as exit:  # argparse's own usage errors
        status = exit.code
    err = capsys.readouterr().err
    assert status == 2, err
    assert "Traceback" not in err
    # One message: `error: ...` (a config's problems follow it one per line) or argparse's `llmft X: error: ...`.
    messages = [line for line in err.splitlines() if line.startswith(("error:", "llmft"))]
    assert len(messages) == 1, err
    assert expected in err[err.index(messages[0]) :], err


def test_a_failure_that_may_pass_exits_1_so_a_job_retries(in_probe_dir, capsys):
    """An unreachable bucket is no mistake in the input: one clear line, but exit status 1 (the charts'
    podFailurePolicy fails a Job at once only on 2), so the pod is restarted and the work resumes."""
    assert main(["storage", "ls", "default-bucket/x"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: cannot reach bucket storage at http://127.0.0.1:9") and "Traceback" not in err
