"""`llmft prepare-data` and `llmft run-data-script`, and the data scripts in the overrides.

Uploads go to the real S3 server; the tutorial's Argilla transform is tested offline
on rows made up here in that data set's schema.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml
from harness import OVERRIDES

from llmft.dataformats import sft_problems
from llmft.errors import UserError
from llmft.staging.data_script import run_data_script
from llmft.staging.prepare_data import prepare_data
from llmft.storage import download_tree, parse_location, read_manifest
from llmft.storage.transfer import TransferSettings

FAST = TransferSettings(workers=4, attempts=1, backoff_seconds=0.1)
LLMFT = str(Path(sys.executable).parent / "llmft")


def sft(question: str, answer: str) -> dict:
    return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}


def dpo(prompt: str, chosen: str, rejected: str) -> dict:
    return {
        "prompt_messages": [{"role": "user", "content": prompt}],
        "chosen_messages": [{"role": "assistant", "content": chosen}],
        "rejected_messages": [{"role": "assistant", "content": rejected}],
    }


def write_jsonl(path: Path, rows: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def uploaded(location: str, tmp_path: Path) -> dict[str, str]:
    target = tmp_path / "back" / location.replace("/", "_")
    shutil.rmtree(target, ignore_errors=True)
    download_tree(parse_location(location), target)
    return {p.relative_to(target).as_posix(): p.read_text() for p in sorted(target.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------- prepare-data


def test_valid_files_upload_with_same_names_and_manifest(bucket, tmp_path):
    data = tmp_path / "datasets"
    write_jsonl(data / "chat.jsonl", [sft(f"q{i}", "a" * i) for i in range(1, 11)])
    write_jsonl(data / "prefs" / "pairs.json", [dpo("p", "good", "bad")] * 3)
    report = prepare_data(data, f"{bucket}/datasets", settings=FAST)
    assert [(r.kind, r.records) for r in report.files] == [("sft", 10), ("dpo", 3)]
    back = uploaded(f"{bucket}/datasets", tmp_path)
    assert back == {
        "chat.jsonl": (data / "chat.jsonl").read_text(),
        "prefs/pairs.json": (data / "prefs" / "pairs.json").read_text(),
    }
    # Summary numbers: 10 conversations of 2 + i characters.
    chars = report.files[0].chars["conversation"]
    assert sorted(chars) == [2 + i + (1 if i >= 10 else 0) for i in range(1, 11)]
    assert report.files[0].roles == {"user": 10, "assistant": 10}


def test_invalid_lines_fail_with_file_line_and_upload_nothing(bucket, tmp_path):
    data = tmp_path / "datasets"
    rows = [sft("q", "a")] * 30
    rows[2] = "{broken"
    for index in range(5, 30, 2):
        rows[index] = {"messages": [{"role": "user", "content": "q"}, {"role": "robot", "content": "a"}]}
    write_jsonl(data / "d.jsonl", rows)
    with pytest.raises(UserError) as caught:
        prepare_data(data, f"{bucket}/datasets/x", max_errors=5, settings=FAST)
    message = str(caught.value)
    assert message.startswith("14 invalid line(s) in the data, nothing uploaded:")
    assert f"{data / 'd.jsonl'}:3: invalid JSON" in message
    assert f"{data / 'd.jsonl'}:6: `messages[1]`.role must be one of system, user, assistant, got 'robot'" in message
    assert "... and 9 more invalid line(s)" in message
    assert "--skip-invalid" in message
    assert read_manifest(parse_location(f"{bucket}/datasets/x")) is None


def test_skip_invalid_uploads_good_lines_and_rejects_next_to_them(bucket, tmp_path):
    data = tmp_path / "datasets"
    write_jsonl(data / "d.jsonl", [sft("q1", "a1"), "nope", sft("q2", "a2"), {"messages": []}, sft("q3", "a3")])
    report = prepare_data(data, f"{bucket}/ds", skip_invalid=True, settings=FAST)
    assert report.invalid_count == 2 and report.rejects == ["d.rejects.jsonl"]
    back = uploaded(f"{bucket}/ds", tmp_path)
    assert [json.loads(line)["messages"][0]["content"] for line in back["d.jsonl"].splitlines()] == ["q1", "q2", "q3"]
    rejects = [json.loads(line) for line in back["d.rejects.jsonl"].splitlines()]
    assert [(r["line"], r["text"]) for r in rejects] == [(2, "nope"), (4, '{"messages": []}')]
    assert "non-empty list" in rejects[1]["reason"]
    # The user's own file is untouched.
    assert len((data / "d.jsonl").read_text().splitlines()) == 5

    # Delivered again after the script was fixed: the stale rejects file goes away.
    write_jsonl(data / "d.jsonl", [sft("q1", "a1")])
    prepare_data(data, f"{bucket}/ds", skip_invalid=True, settings=FAST)
    assert sorted(uploaded(f"{bucket}/ds", tmp_path)) == ["d.jsonl"]


def test_a_shared_datasets_folder_keeps_earlier_deliveries(bucket, tmp_path):
    write_jsonl(tmp_path / "one" / "a.jsonl", [sft("q", "a")])
    write_jsonl(tmp_path / "two" / "b.jsonl", [sft("q", "b")])
    prepare_data(tmp_path / "one", f"{bucket}/datasets", settings=FAST)
    prepare_data(tmp_path / "two", f"{bucket}/datasets", settings=FAST)
    assert sorted(read_manifest(parse_location(f"{bucket}/datasets")).files) == ["a.jsonl", "b.jsonl"]
    assert sorted(uploaded(f"{bucket}/datasets", tmp_path)) == ["a.jsonl", "b.jsonl"]


def test_folder_problems_are_named(tmp_path):
    with pytest.raises(UserError, match="is not a folder"):
        prepare_data(tmp_path / "missing", "./out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no .jsonl files in"):
        prepare_data(tmp_path / "empty", "./out")
    write_jsonl(tmp_path / "mixed" / "a.jsonl", [sft("q", "a")])
    (tmp_path / "mixed" / "a.parquet").write_bytes(b"PAR1")
    with pytest.raises(UserError, match=r"not JSON lines \(a.parquet\)"):
        prepare_data(tmp_path / "mixed", "./out")
    write_jsonl(tmp_path / "all-bad" / "a.jsonl", ["x", "y"])
    with pytest.raises(UserError, match="no valid record left in"):
        prepare_data(tmp_path / "all-bad", str(tmp_path / "out"), skip_invalid=True)


def test_token_lengths_with_a_tokenizer_from_the_bucket(bucket, tmp_path, tiny_model_dir):
    from transformers import AutoTokenizer

    from llmft.storage import upload_tree

    upload_tree(tiny_model_dir, parse_location(f"{bucket}/models/tiny"))
    conversation = sft("What is 2 plus 2?", "2 plus 2 is 4.")
    data = write_jsonl(tmp_path / "datasets" / "d.jsonl", [conversation] * 3)
    report = prepare_data(data.parent, f"{bucket}/datasets", tokenizer=f"{bucket}/models/tiny", settings=FAST)
    expected = len(
        AutoTokenizer.from_pretrained(tiny_model_dir).apply_chat_template(conversation["messages"], tokenize=True)[
            "input_ids"
        ]
    )
    assert report.files[0].tokens["conversation"] == [expected] * 3


def test_cli_prints_summary_and_upload(bucket, s3_env, tmp_path):
    data = tmp_path / "datasets"
    write_jsonl(data / "d.jsonl", [sft("q", "a"), "bad"])
    result = subprocess.run(
        [LLMFT, "prepare-data", str(data), f"{bucket}/d", "--skip-invalid"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "uploaded 1 data file(s) with 1 record(s)" in result.stdout
    assert "dropped 1 invalid line(s), see d.rejects.jsonl" in result.stdout
    assert "d.jsonl: SFT, 1 valid record(s), 1 invalid line(s)" in result.stderr


# ---------------------------------------------------------------- run-data-script


def make_wheel(folder: Path, name: str = "llmft_test_helper") -> Path:
    """A minimal pure-Python wheel, so pip can install it without network access."""
    wheel = folder / f"{name}-1.0-py3-none-any.whl"
    files = {
        f"{name}/__init__.py": b"ANSWER = 42\n",
        f"{name}-1.0.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n".encode(),
        f"{name}-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
        b"Tag: py3-none-any\n",
    }
    record = "".join(
        f"{path},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},{len(data)}\n"
        for path, data in files.items()
    )
    files[f"{name}-1.0.dist-info/RECORD"] = (record + f"{name}-1.0.dist-info/RECORD,,\n").encode()
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, data in files.items():
            archive.writestr(path, data)
    return wheel


def test_data_script_with_pip_packages_writes_to_datasets_dir(tmp_path):
    wheel = make_wheel(tmp_path)
    script = tmp_path / "data.py"
    script.write_text(
        "import json, os, llmft_test_helper\n"
        "with open(os.path.join(os.environ['DATASETS_DIR'], 'x.jsonl'), 'w') as f:\n"
        "    f.write(json.dumps({'messages': [{'role': 'user', 'content': 'q'},"
        " {'role': 'assistant', 'content': str(llmft_test_helper.ANSWER)}]}) + '\\n')\n"
    )
    written = run_data_script(script, tmp_path / "downloads" / "datasets", [str(wheel)])
    assert [p.name for p in written] == ["x.jsonl"]
    assert '"42"' in written[0].read_text()
    # Installed into the script's own folder, not into this environment.
    assert (tmp_path / "downloads" / ".script-packages" / "llmft_test_helper" / "__init__.py").is_file()
    with pytest.raises(ImportError):
        __import__("llmft_test_helper")


def test_data_script_failures_are_named(tmp_path):
    script = tmp_path / "data.py"
    script.write_text("raise SystemExit(3)\n")
    with pytest.raises(UserError, match="failed with exit status 3"):
        run_data_script(script, tmp_path / "out")
    script.write_text("print('forgot to write')\n")
    with pytest.raises(UserError, match="wrote no .jsonl file to"):
        run_data_script(script, tmp_path / "out")
    with pytest.raises(UserError, match="does not exist"):
        run_data_script(tmp_path / "nope.py", tmp_path / "out")
    with pytest.raises(UserError, match="pip could not install pipPackages"):
        run_data_script(script, tmp_path / "out", [str(tmp_path / "missing-1.0-py3-none-any.whl")])


# ---------------------------------------------------------------- the overrides' data scripts


def override_script(name: str) -> str:
    return yaml.safe_load((OVERRIDES / "download-data-to-bucket" / name).read_text())["dataScript"]


def argilla_row(
    kind="human",
    prompt="Explain recursion briefly.",
    answer="Recursion is a function calling itself.",
    with_generation_prompt=True,
):
    """A row in the schema of argilla/10k_prompts_ranked_mistral_large_responses (made up here)."""
    row = {
        "prompt": prompt,
        "quality": [{"user_id": "u1", "value": "4", "status": "submitted"}],
        "metadata": '{"source": "sharegpt"}',
        "avg_rating": 4.0,
        "num_responses": 1,
        "agreement_ratio": 1.0,
        "raw_responses": [4],
        "kind": kind,
        "cluster_description": "Programming",
        "topic": "Software Development",
        "generations": [answer],
        "raw_generation_responses": [answer],
        "model_name": "mistral-large-2402",
    }
    if with_generation_prompt:
        row["generation_prompt"] = [[{"role": "system", "content": ""}, {"role": "user", "content": prompt}]]
    return row


def test_argilla_transform_is_a_pure_function_on_the_data_sets_rows():
    namespace: dict = {"__name__": "argilla_script"}  # not __main__: nothing is downloaded
    exec(compile(override_script("tutorial-01-argilla-to-minio.yaml"), "dataScript", "exec"), namespace)
    to_record = namespace["to_record"]

    record = to_record(argilla_row(), 7)
    assert record == {
        "dataset": "argilla-mistral-large-human-prompts",
        "id": "argilla-mistral-large-human-prompts_7",
        "messages": [
            {"role": "user", "content": "Explain recursion briefly."},
            {"role": "assistant", "content": "Recursion is a function calling itself."},
        ],
    }
    assert sft_problems(record) == []  # the empty system prompt is dropped, so the record is valid
    assert to_record(argilla_row(kind="synthetic"), 1) is None
    assert to_record(argilla_row(answer=None), 2) is None
    assert to_record(argilla_row(answer="   "), 3) is None
    assert (
        to_record(argilla_row(with_generation_prompt=False), 4)["messages"][0]["content"]
        == "Explain recursion briefly."
    )
    row = argilla_row()
    to_record(row, 5)
    assert row == argilla_row()  # pure: the input is not modified
    assert namespace["OUTPUT"].endswith("/argilla-mistral-large-human-prompts.jsonl")


def test_synthetic_script_is_deterministic_valid_and_small(tmp_path):
    script = tmp_path / "data.py"
    script.write_text(override_script("tiny-synthetic-to-minio.yaml"))
    first = run_data_script(script, tmp_path / "a")
    second = run_data_script(script, tmp_path / "b")
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in second]
    report = prepare_data(tmp_path / "a", str(tmp_path / "out"))
    assert {r.path.rsplit("/", 1)[-1]: r.records for r in report.files} == {
        "tiny-synthetic-eval.jsonl": 29,
        "tiny-synthetic-train.jsonl": 267,
    }
    assert all(r.kind == "sft" and not r.invalid for r in report.files)
