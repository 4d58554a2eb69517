"""YAML the user wrote (configs, values files, secrets files): a key given twice, bytes that are not UTF-8,
a folder where a file belongs and broken syntax are each one line naming the file and line, exit status 2."""

from __future__ import annotations

import pytest

from llmft.charts import load_values_file
from llmft.cli import main
from llmft.errors import UserError
from llmft.finetune.config import load_config

CONFIG = """method: sft
training_args:
  learning_rate: 1.0e-4
  max_steps: 5
  learning_rate: 2.0e-4
"""


def test_a_key_given_twice_names_both_lines(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG)
    with pytest.raises(UserError) as caught:
        load_config(path)
    assert str(caught.value) == (
        f"{path}:5: the key 'learning_rate' appears twice in one mapping (lines 3 and 5); "
        "the second would silently replace the first: keep one"
    )


def test_the_same_key_in_different_mappings_is_fine(tmp_path):
    from llmft.yamlfile import read_yaml

    path = tmp_path / "values.yaml"
    path.write_text("a: {seed: 1}\nb: {seed: 2}\nbase: &base {x: 1}\nc:\n  <<: *base\n  y: 2\n")
    assert read_yaml(path) == {"a": {"seed": 1}, "b": {"seed": 2}, "base": {"x": 1}, "c": {"x": 1, "y": 2}}


def test_values_file_with_a_duplicate_key(tmp_path):
    path = tmp_path / "values.yaml"
    path.write_text("basemodel: a/b\ncheckpointsRemote: x/y\nbasemodel: c/d\n")
    with pytest.raises(UserError, match=r"values.yaml:3: the key 'basemodel' appears twice .*lines 1 and 3"):
        load_values_file(path)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"method: sft\n# caf\xe9\n", r"config.yaml:2: not UTF-8 text \(byte 0xe9\); save the file as UTF-8"),
        (b"method: sft\ntraining_args: [1\n", r"config.yaml:3: not valid YAML"),
    ],
)
def test_cli_reports_file_and_line_with_exit_status_2(tmp_path, capsys, content, message):
    path = tmp_path / "config.yaml"
    path.write_bytes(content)
    assert main(["sft", str(path)]) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert len(captured.err.strip().splitlines()) == 1
    assert __import__("re").search(message, captured.err), captured.err


def test_a_folder_given_as_the_config(tmp_path, capsys):
    assert main(["sft", str(tmp_path)]) == 2
    assert f"config file {tmp_path} is a folder, not a file; give the file's path" in capsys.readouterr().err
