"""DPO end to end on the CPU with the tiny model: LoRA (on top of an SFT run) and full-parameter training
learn the preferences (TRL's rewards/margins rise, chosen log-probs rise relative to rejected), the
reference model is the adapter-disabled base (LoRA) or precomputed, bad configs and data fail early,
and the finetune chart renders DPO configs with the engine's schema."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from harness import CHARTS

from llmft.charts import render_chart
from llmft.cli import main
from llmft.errors import UserError
from llmft.finetune.config import config_json_schema, load_config
from llmft.finetune.dpo import run_dpo
from llmft.finetune.dpo_config import LOSS_TYPES
from llmft.finetune.outputs import adapter_is_lora_only
from llmft.finetune.sft import run_sft

PAIRS = [
    ("What is the capital of France?", "Paris.", "London."),
    ("What color is the sky?", "Blue.", "Green."),
    ("Who wrote Hamlet?", "Shakespeare.", "Dickens."),
    ("How many legs has a cat?", "Four.", "Three."),
]


def user(text):
    return [{"role": "user", "content": text}]


def assistant(text):
    return [{"role": "assistant", "content": text}]


def write_pairs(path: Path, repeat: int = 2, extra: list[dict] = ()) -> Path:
    """The pairs in both accepted forms: the tutorial's *_messages and TRL's conversational prompt/chosen/rejected."""
    rows = []
    for index, (question, chosen, rejected) in enumerate(PAIRS):
        if index % 2:
            rows.append({"prompt": user(question), "chosen": assistant(chosen), "rejected": assistant(rejected)})
        else:
            rows.append(
                {
                    "prompt_messages": user(question),
                    "chosen_messages": assistant(chosen),
                    "rejected_messages": assistant(rejected),
                }
            )
    path.write_text("".join(json.dumps(row) + "\n" for row in rows * repeat + list(extra)))
    return path


def dpo_config(output_dir: Path, model: str, dataset: str, peft: str = "LORA", **sections) -> dict:
    config = {
        "method": "dpo",
        "data_conf": {"training_data": {"datasets": [{"path": dataset}]}, "chat_template_name": "keep-original"},
        "training_args": {
            "output_dir": str(output_dir),
            "beta": 0.1,
            "loss_type": "sigmoid",
            "learning_rate": 5e-3 if peft == "LORA" else 1e-3,
            "lr_scheduler_type": "constant",
            "max_steps": 8,
            "logging_steps": 2,
            "save_steps": 100,
            "report_to": [],
        },
        "batchsize_conf": {"total_train_batch_size": 8, "max_per_device_train_batch_size": 8},
        "peft_conf": {"peft_type": "NO_PEFT"}
        if peft == "NO_PEFT"
        else {"peft_type": "LORA", "peft_kwargs": {"r": 8, "lora_alpha": 16, "lora_dropout": 0.0}},
        "run_conf": {"model": model},
    }
    for section, values in sections.items():
        config.setdefault(section, {}).update(values)
    return config


def dpo_rows(output_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]


def assert_learns_preferences(rows: list[dict]) -> None:
    """The issue's acceptance: margins rise, and chosen log-probs rise relative to rejected ones."""
    assert len(rows) >= 3
    for key in (
        "loss",
        "rewards/margins",
        "rewards/chosen",
        "rewards/rejected",
        "rewards/accuracies",
        "logps/chosen",
        "logps/rejected",
    ):
        assert key in rows[0], f"metrics.jsonl lacks TRL's {key}"
    margins = [row["rewards/margins"] for row in rows]
    gaps = [row["logps/chosen"] - row["logps/rejected"] for row in rows]
    assert margins[-1] > margins[0] + 0.2 and margins[-1] > 0.3, margins
    assert gaps[-1] > gaps[0] + 2, gaps
    assert rows[-1]["rewards/chosen"] > rows[-1]["rewards/rejected"]
    assert rows[-1]["rewards/accuracies"] == 1.0
    assert rows[-1]["loss"] < rows[0]["loss"]


@pytest.mark.slow
def test_lora_dpo_on_top_of_an_sft_run(tiny_model_dir, tmp_path):
    """A tiny SFT run, then LoRA DPO from its merged checkpoint-final (`run_conf.model` = an SFT output)."""
    from test_sft import sft_config, write_data

    sft_out = tmp_path / "sft"
    sft = sft_config(
        sft_out,
        str(tiny_model_dir),
        str(write_data(tmp_path / "sft.jsonl")),
        training_args={"max_steps": 2, "save_steps": 100, "logging_steps": 1, "learning_rate": 1e-3},
    )
    assert run_sft(load_config(sft)) == 0

    out = tmp_path / "dpo"
    dataset = write_pairs(tmp_path / "prefs.jsonl")
    assert (
        run_dpo(
            load_config(
                dpo_config(out, str(sft_out / "checkpoint-final"), str(dataset), run_conf={"merge_adapter": True})
            )
        )
        == 0
    )

    assert_learns_preferences(dpo_rows(out))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == "dpo" and summary["training"] == "lora" and summary["steps"] == 8
    assert summary["dpo"]["reference"] == "the base model with the LoRA adapter disabled (no second copy)"
    margins = summary["dpo"]["metrics"]["rewards/margins"]
    assert margins["last"] > margins["first"]
    assert summary["data"]["training"]["kept"] == 8
    # Servable outputs: a LoRA-only adapter and the merged model, each with the chat template.
    assert summary["outputs"] == {
        "final_model": "checkpoint-final",
        "adapter": "checkpoint-final-adapter",
        "merged": True,
    }
    assert adapter_is_lora_only(out / "checkpoint-final-adapter")
    for folder in ("checkpoint-final", "checkpoint-final-adapter"):
        assert (out / folder / "chat_template.jinja").is_file()
    # Both token counters agree: the Trainer's non-padding count and the throughput report's.
    assert summary["throughput"]["effective_tokens"] == summary["tokens_seen"] > 0


@pytest.mark.slow
def test_full_parameter_dpo_learns_and_precomputed_reference_gives_the_same_run(tiny_model_dir, tmp_path):
    long_pair = {
        "prompt_messages": user("word " * 300),
        "chosen_messages": assistant("yes"),
        "rejected_messages": assistant("no"),
    }
    dataset = write_pairs(tmp_path / "prefs.jsonl", extra=[long_pair])
    live, precomputed = tmp_path / "live", tmp_path / "precomputed"
    assert (
        run_dpo(
            load_config(
                dpo_config(
                    live,
                    str(tiny_model_dir),
                    str(dataset),
                    peft="NO_PEFT",
                    dpo_args={"max_length": 128},
                    training_args={"max_steps": 6},
                )
            )
        )
        == 0
    )
    assert (
        run_dpo(
            load_config(
                dpo_config(
                    precomputed,
                    str(tiny_model_dir),
                    str(dataset),
                    peft="NO_PEFT",
                    dpo_args={"max_length": 128},
                    training_args={"max_steps": 6, "precompute_ref_log_probs": True},
                )
            )
        )
        == 0
    )

    assert_learns_preferences(dpo_rows(live))
    summary = json.loads((live / "summary.json").read_text())
    assert summary["training"] == "full" and (live / "checkpoint-final" / "model.safetensors").is_file()
    assert summary["dpo"]["reference"] == "a frozen copy of the starting model"
    # The over-long pair is left out and reported, never truncated.
    assert summary["data"]["training"]["left_out_too_long"] == 1
    assert summary["data"]["training"]["first_left_out"] == [f"{dataset}:9"]
    # Precomputing the reference log-probs once gives the same training run as a live reference model.
    precomputed_summary = json.loads((precomputed / "summary.json").read_text())
    assert precomputed_summary["dpo"]["reference"] == "precomputed before training"
    for row, other in zip(dpo_rows(live), dpo_rows(precomputed), strict=True):
        for key in ("loss", "rewards/margins", "logps/chosen", "logps/rejected"):
            assert other[key] == pytest.approx(row[key], rel=1e-4, abs=1e-5), key


def test_reference_model_is_never_a_second_copy_with_lora(tiny_model_dir, tmp_path):
    """LoRA: TRL gets the base model and the LoRA config, so the reference is the adapter disabled: no
    ref_model, and no extra "ref" adapter. Full-parameter: a frozen copy, unless precomputed."""
    from llmft.finetune import dpo, recipe
    from llmft.finetune import model as modeling

    dataset = write_pairs(tmp_path / "prefs.jsonl")
    found = {}
    for name, peft, precompute in (
        ("lora", "LORA", False),
        ("full", "NO_PEFT", False),
        ("full-precomputed", "NO_PEFT", True),
    ):
        config = load_config(
            dpo_config(
                tmp_path / name,
                str(tiny_model_dir),
                str(dataset),
                peft=peft,
                training_args={"precompute_ref_log_probs": precompute},
            )
        )
        run = recipe.start_run(config)
        train, _ = recipe.read_data(config, kind="dpo")
        model_dir, tokenizer, setup = recipe.prepare_tokenizer(config, run)
        pairs, _ = dpo.encode_pairs(train, tokenizer, 2048, "training data")
        plan = recipe.plan_batches(config, run)
        model, resized, _ = recipe.load_model(model_dir, config, plan.dtype, tokenizer, setup)
        lora = modeling.lora_config(model, config, resized) if peft == "LORA" else None
        trainer = dpo.build_trainer(
            model, tokenizer, dpo.training_arguments(config, plan, run.output_dir), pairs, [], lora
        )
        found[name] = trainer
    lora_trainer = found["lora"]
    assert lora_trainer.ref_model is None
    assert list(lora_trainer.model.peft_config) == ["default"]  # no copied "ref" adapter
    assert dpo.reference_kind(lora_trainer, False).startswith("the base model with the LoRA adapter disabled")
    assert found["full"].ref_model is not None and found["full"].ref_model is not found["full"].model
    assert found["full-precomputed"].ref_model is None
    assert "ref_chosen_logps" in found["full-precomputed"].train_dataset.column_names


def test_bad_preference_data_fails_with_file_and_line_before_loading_a_model(tmp_path):
    dataset = write_pairs(
        tmp_path / "prefs.jsonl",
        extra=[
            {"prompt_messages": user("hi"), "chosen_messages": user("wrong role"), "rejected_messages": assistant("x")},
            {"messages": user("an SFT record")},
        ],
    )
    config = load_config(dpo_config(tmp_path / "out", str(tmp_path / "no-model-here"), str(dataset)))
    with pytest.raises(UserError) as error:
        run_dpo(config)
    message = str(error.value)
    assert f"{dataset}:9: `chosen_messages` must start with an assistant message" in message
    assert f"{dataset}:10: missing `prompt_messages`, `chosen_messages`, `rejected_messages`" in message


def bad(changes: dict) -> str:
    config = dpo_config(Path("./out"), "./model", "./prefs.jsonl")
    for dotted, value in changes.items():
        node = config
        *parents, last = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    with pytest.raises(UserError) as error:
        load_config(config)
    return str(error.value)


def test_loss_types_are_those_of_the_installed_trl():
    import dataclasses

    from trl import DPOConfig

    help_text = next(f for f in dataclasses.fields(DPOConfig) if f.name == "loss_type").metadata["help"]
    assert set(LOSS_TYPES) == set(re.findall(r"`'([a-z0-9_]+)'`", help_text))
    for loss in LOSS_TYPES:  # each one passes our config and TRL's own
        settings = {"loss_type": loss, "label_smoothing": 0.001 if loss == "exo_pair" else 0.0}
        config = load_config(dpo_config(Path("./out"), "./model", "./prefs.jsonl", training_args=settings))
        assert DPOConfig(output_dir="/tmp/x", bf16=False, loss_type=[config.training_args.loss_type]).loss_type == [
            loss
        ]


@pytest.mark.parametrize(
    "changes, expected",
    [
        (
            {"training_args.loss_type": "sigmod"},
            'finetuning_config.training_args.loss_type: must be one of "sigmoid", "hinge", "ipo"',
        ),
        ({"training_args.beta": 0}, "finetuning_config.training_args.beta: must be a number greater than 0, got 0"),
        ({"training_args.beta": -0.5}, "finetuning_config.training_args.beta: must be a number greater than 0"),
        (
            {"sft_args": {"max_seq_length": 512}},
            'finetuning_config.sft_args: unknown key, got {"max_seq_length": 512} (sft_args belongs to method: sft',
        ),
        ({"dpo_args.max_seq_length": 512}, "finetuning_config.dpo_args.max_seq_length: unknown key"),
        (
            {"training_args.loss_type": ["sigmoid", "sft"], "training_args.loss_weights": [1.0]},
            "finetuning_config.training_args.loss_weights: needs one weight per loss_type (2: sigmoid, sft), got [1.0]",
        ),
        (
            {"training_args.loss_type": "exo_pair"},
            "finetuning_config.training_args.label_smoothing: the exo_pair loss needs label_smoothing above 0",
        ),
        (
            {"data_conf.training_data.datasets": [{"path": "./p.jsonl", "column_map": {"input": "q"}}]},
            "finetuning_config.data_conf.training_data.datasets[0].column_map: maps instruction rows to SFT chat",
        ),
        ({"dpo_args.max_length": 0}, "finetuning_config.dpo_args.max_length: must be a positive integer, got 0"),
    ],
)
def test_bad_dpo_config_is_named_with_key_value_and_fix(changes, expected):
    message = bad(changes)
    assert expected in message, message


def test_sft_only_key_in_dpo_and_dpo_key_in_sft_are_rejected():
    from test_sft import sft_config

    sft = sft_config(Path("./out"), "./model", "./train.jsonl")
    sft["training_args"]["beta"] = 0.1
    with pytest.raises(UserError, match="finetuning_config.training_args.beta: unknown key"):
        load_config(sft)
    sft["training_args"].pop("beta")
    sft["dpo_args"] = {"max_length": 10}
    with pytest.raises(UserError, match="dpo_args belongs to method: dpo"):
        load_config(sft)


def test_config_schema_dpo_and_cli(tmp_path, capsys):
    import yaml

    result = subprocess.run(
        [sys.executable, "-m", "llmft", "config-schema", "dpo"], capture_output=True, text=True, check=True
    )
    schema = json.loads(result.stdout)
    assert schema == config_json_schema("dpo")
    properties = schema["properties"]
    assert "dpo_args" in properties and "sft_args" not in properties
    assert properties["method"]["const"] == "dpo"
    loss = properties["training_args"]["properties"]["loss_type"]
    assert list(LOSS_TYPES) in [option.get("enum") for option in loss["anyOf"]]

    config = dpo_config(tmp_path / "out", "./model", "./prefs.jsonl")
    (tmp_path / "dpo.yaml").write_text(yaml.safe_dump(config))
    assert main(["dpo", "--check", str(tmp_path / "dpo.yaml")]) == 0
    assert main(["sft", str(tmp_path / "dpo.yaml")]) == 2
    assert "method is 'dpo'; run `llmft dpo" in capsys.readouterr().err


def test_committed_config_reference_documents_dpo():
    from llmft.finetune.reference import config_reference

    committed = (Path(__file__).resolve().parent.parent / "docs" / "config-reference.md").read_text()
    assert committed == config_reference(), "docs/config-reference.md is stale: run `make docs`"
    dpo_part = committed[committed.index("# DPO (`method: dpo`)") :]
    for key in (
        "`beta`",
        "`loss_type`",
        "`precompute_ref_log_probs`",
        "`finetuning_config.dpo_args`",
        "`max_length`",
        "prompt_messages",
    ):
        assert key in dpo_part, key


# ------------------------------------------------------------------------------------------ the chart

CHART = CHARTS / "llm-finetune"


def test_chart_renders_a_dpo_config_and_rejects_sft_only_keys():
    # Helm's --set keeps 0.2 a string, so the number comes from a values mapping (as a values file would).
    rendered = render_chart(
        CHART,
        release_name="dpo",
        values={"finetuning_config": {"training_args": {"beta": 0.2}}},
        set_values=[
            "finetuning_config.method=dpo",
            "finetuning_config.training_args.loss_type=ipo",
            "finetuning_config.dpo_args.max_length=1024",
        ],
    )
    import yaml

    engine = yaml.safe_load(rendered.one("ConfigMap")["data"]["finetuning_config.yaml"])
    assert engine["method"] == "dpo" and engine["training_args"]["beta"] == 0.2
    assert engine["dpo_args"] == {"max_length": 1024}
    assert "sft_args" not in engine, "the chart's SFT defaults must not leak into a DPO config"
    with pytest.raises(UserError, match="loss_type"):
        render_chart(
            CHART,
            release_name="dpo",
            set_values=["finetuning_config.method=dpo", "finetuning_config.training_args.loss_type=sigmod"],
        )
    with pytest.raises(UserError, match="sft_args"):
        render_chart(
            CHART,
            release_name="dpo",
            set_values=["finetuning_config.method=dpo", "finetuning_config.sft_args.packing=true"],
        )
    with pytest.raises(UserError, match="beta"):
        render_chart(CHART, release_name="sft", values={"finetuning_config": {"training_args": {"beta": 0.2}}})
