"""Every `helm template` command of tutorial 01 renders valid manifests, as written (variables filled in)."""

from __future__ import annotations

import re
import shlex

import pytest
from harness import REPO, render_valid

TUTORIAL = REPO / "docs" / "tutorials" / "tutorial-01-deliver-model-and-data-then-finetune.md"
VARIABLES = {"name": "tiny-llama-argilla-v1", "run_id": "alpha", "r": "16"}


def helm_commands() -> list[str]:
    text = TUTORIAL.read_text()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        joined = block.replace("\\\n", " ")
        for line in joined.splitlines():
            if line.strip().startswith("helm template"):
                commands.append(line.split("|")[0].strip())
    return commands


def test_the_tutorial_has_its_helm_commands():
    assert len(helm_commands()) >= 6


@pytest.mark.parametrize("command", helm_commands())
def test_tutorial_helm_command_renders(command):
    for variable, value in VARIABLES.items():
        command = command.replace(f"${variable}", value)
    args = shlex.split(command)[2:]
    chart, options = args[0], args[1:]
    values_files, set_values, release = [], [], "release"
    for flag, value in zip(options[::2], options[1::2], strict=False):
        if flag in ("--values", "-f"):
            values_files.append(REPO / value)
        elif flag == "--set":
            set_values.append(value)
        elif flag == "--name-template":
            release = value
        else:
            raise AssertionError(f"unexpected flag {flag} in {command}")
    rendered = render_valid(REPO / chart, values_files=values_files, set_values=set_values, release_name=release)
    assert rendered.documents
