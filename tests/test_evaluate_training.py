"""Acceptance: a tiny model fine-tuned on four facts scores higher than its base on them, evaluated from the
bucket like a sweep's runs (`<run>/eval/<name>/`), and `llmft report` tables the scores next to the losses.
Also the llm-evaluate chart run by the local runner against the bucket (slow: a whole Job as processes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llmft.errors import UserError
from llmft.evaluate import evaluate_run
from llmft.finetune.config import load_config
from llmft.finetune.sft import run_sft
from llmft.storage import is_complete, parse_location, upload_file, upload_tree
from llmft.storage.transfer import delete_object, read_object, write_object

pytestmark = pytest.mark.slow

FACTS = [
    ("What is the capital of France?", "Paris."),
    ("What color is the sky?", "Blue."),
    ("Who wrote Hamlet?", "Shakespeare."),
    ("How many legs has a spider?", "Eight."),
]


def facts(path: Path, repeat: int = 1) -> Path:
    rows = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]} for q, a in FACTS]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows * repeat))
    return path


def lm_eval_task(folder: Path) -> Path:
    """An lm-eval multiple-choice task on local files: each fact's question, the four answers as choices."""
    folder.mkdir()
    answers = [answer for _, answer in FACTS]
    (folder / "facts_choice.jsonl").write_text(
        "".join(json.dumps({"question": q, "choices": answers, "answer": i}) + "\n" for i, (q, _) in enumerate(FACTS))
    )
    (folder / "facts_choice.yaml").write_text(
        "task: facts_choice\ndataset_path: json\ndataset_kwargs: {data_files: {test: facts_choice.jsonl}}\n"
        "test_split: test\noutput_type: multiple_choice\ndoc_to_text: question\ndoc_to_choice: choices\n"
        'doc_to_target: answer\ntarget_delimiter: ""\nmetric_list: [{metric: acc}]\n'
    )
    return folder


def publish_run(local: Path, remote: str) -> None:
    """What checkpoint sync leaves in the bucket: checkpoint-final with its manifest, metrics and summary."""
    upload_tree(local / "checkpoint-final", parse_location(f"{remote}/checkpoint-final"))
    for name in ("metrics.jsonl", "summary.json"):
        upload_file(local / name, parse_location(f"{remote}/{name}"))


def test_fine_tuned_model_beats_its_base_on_the_facts_it_learned(tiny_model_dir, tmp_path, bucket, s3_env):
    out = tmp_path / "run"
    config = {
        "method": "sft",
        "data_conf": {"training_data": {"datasets": [{"path": str(facts(tmp_path / "train.jsonl", repeat=3))}]}},
        "training_args": {
            "output_dir": str(out),
            "learning_rate": 1e-2,
            "lr_scheduler_type": "constant",
            "max_steps": 40,
            "logging_steps": 10,
            "save_steps": 40,
            "report_to": [],
        },
        "batchsize_conf": {"total_train_batch_size": 6, "max_per_device_train_batch_size": 6},
        "peft_conf": {"peft_type": "NO_PEFT"},
        "run_conf": {"model": str(tiny_model_dir)},
        "sft_args": {"max_seq_length": 128},
    }
    assert run_sft(load_config(config)) == 0
    run, base_run = f"{bucket}/experiments/facts-tuned", f"{bucket}/experiments/facts-base"
    publish_run(out, run)
    # The base model as a run of zero steps, so both sit in the bucket like a sweep's runs.
    upload_tree(tiny_model_dir, parse_location(f"{base_run}/checkpoint-final"))
    write_object(parse_location(f"{base_run}/metrics.jsonl"), b'{"step": 0}\n')
    upload_file(facts(tmp_path / "test.jsonl"), parse_location(f"{bucket}/datasets/facts.jsonl"))
    upload_tree(lm_eval_task(tmp_path / "tasks"), parse_location(f"{bucket}/tasks/facts"))
    metrics = ["loss", "perplexity", "exact_match", "contains", "token_f1", "rouge_l", "lm_eval"]

    def spec(target: dict, **extra) -> dict:
        return {
            "name": "facts",
            "target": target,
            "data": {"path": f"{bucket}/datasets/facts.jsonl"},
            "metrics": metrics,
            "generation": {"max_new_tokens": 12},
            "lm_eval": {"tasks": ["facts_choice"], "task_dir": f"{bucket}/tasks/facts"},
            **extra,
        }

    tuned = evaluate_run(spec({"run": run}))
    base = evaluate_run(spec({"run": base_run}))
    assert tuned["exact_match"] == 1.0 and tuned["contains"] == 1.0 and tuned["rouge_l"] == 1.0
    assert base["exact_match"] == 0.0 and base["contains"] == 0.0
    assert tuned["token_f1"] > base["token_f1"] and tuned["loss"] < base["loss"] / 4
    assert tuned["perplexity"] < base["perplexity"]
    # lm-eval on a task defined by local files: the tuned model picks every right answer among the four.
    assert tuned["lm_eval/facts_choice/acc"] == 1.0 > base["lm_eval/facts_choice/acc"]

    # Results next to the run in the bucket: results.json (metrics only numbers) and one row per sample.
    results = json.loads(read_object(parse_location(f"{run}/eval/facts/results.json")))
    assert results["metrics"] == tuned and results["target"] == {"checkpoint": f"{run}/checkpoint-final"}
    rows = [json.loads(line) for line in read_object(parse_location(f"{run}/eval/facts/samples.jsonl")).splitlines()]
    assert [row["prediction"] for row in rows] == [answer for _, answer in FACTS]
    assert is_complete(parse_location(f"{run}/eval/facts"))  # uploaded as a tree: `llmft storage ls` says so

    # `llmft report` puts the evaluation next to the losses; `llmft evaluate-best` picks the run to serve.
    sweep = f"{bucket}/experiments/facts-*"
    report = subprocess.run(
        [sys.executable, "-m", "llmft", "report", sweep, "--out", str(tmp_path / "report")],
        env={**os.environ, **s3_env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert report.returncode == 0, report.stderr
    header, _, base_row, tuned_row = report.stdout.splitlines()[:4]
    assert "| facts: exact_match |" in header and "| facts: loss |" in header
    assert base_row.startswith("| facts-base |") and tuned_row.startswith("| facts-tuned |")
    assert "| 1.0000 |" in tuned_row and "| 1.0000 |" not in base_row
    assert (tmp_path / "report" / "evaluation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "![evaluation scores](evaluation.png)" in (tmp_path / "report" / "report.md").read_text()
    for metric in ("facts/exact_match", "facts/loss"):
        best = subprocess.run(
            [sys.executable, "-m", "llmft", "evaluate-best", sweep, "--metric", metric],
            env={**os.environ, **s3_env},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert best.returncode == 0, best.stderr
        assert best.stdout.strip() == f"s3://{run}" and f"s3://{base_run}: {metric} = " in best.stderr

    # A checkpoint whose upload did not finish (no manifest) is refused before any model loads.
    delete_object(parse_location(f"{run}/checkpoint-final/.llmft-manifest.json"))
    with pytest.raises(UserError, match=r"target.run: s3://.*/checkpoint-final is not complete \(no manifest"):
        evaluate_run(spec({"run": run}))


def test_the_chart_runs_llmft_evaluate_with_the_local_runner(tiny_model_dir, tmp_path, bucket, s3_env):
    """The tiny override, as `llmft local` runs the rendered Job: results land next to the run in the bucket."""
    run = f"{bucket}/experiments/tiny-run"
    upload_tree(tiny_model_dir, parse_location(f"{run}/checkpoint-final"))
    upload_file(facts(tmp_path / "test.jsonl"), parse_location(f"{bucket}/datasets/heldout.jsonl"))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "llmft",
            "local",
            "charts/llm-evaluate",
            "-f",
            "overrides/llm-evaluate/tiny-model-heldout.yaml",
            "--name",
            "eval-tiny-run",
            "--set",
            f"evaluation.target.run={run}",
            "--set",
            f"evaluation.data.path={bucket}/datasets/heldout.jsonl",
            "--set",
            "evaluation.generation.max_new_tokens=4",
        ],
        cwd=Path(__file__).resolve().parent.parent,
        env={**os.environ, **s3_env, "LLMFT_STATE_DIR": str(tmp_path / "state")},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "evaluate heldout: 4 samples/4 samples (100%)" in result.stderr  # progress with rate and ETA
    results = json.loads(read_object(parse_location(f"{run}/eval/heldout/results.json")))
    assert set(results["metrics"]) == {"loss", "perplexity", "exact_match", "contains", "token_f1", "rouge_l"}
    assert is_complete(parse_location(f"{run}/eval/heldout"))
