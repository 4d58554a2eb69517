"""Assistant-only loss masks for the real chat templates of popular model families (issue 13).

For every template kept under tests/data/chat_templates/ (Llama 3/3.1/3.2, Qwen2.5, Qwen3, Mistral
v0.3, Gemma 2/3, Phi-3/3.5/4/4-mini, DeepSeek-R1 distill, SmolLM2, TinyLlama/Zephyr, ChatML
variants): exactly each assistant turn's content and its end-of-turn token carry loss, nothing
else; the template's own refusals are data errors with file:line and the fix; `llmft sft`,
`llmft dpo`, `llmft validate-data --tokenizer` and `llmft preview-data` report them without a
traceback; and a 2-step SFT per template ends with a generation_config that stops on its
end-of-turn token.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml
from chat_template_cases import (
    FAMILIES,
    family_meta,
    family_tokenizer,
    labelled_runs,
    write_family_model,
)

from llmft.cli import main
from llmft.errors import UserError
from llmft.finetune.data import IGNORE_INDEX, encode
from llmft.finetune.model import prepare_tokenizer
from llmft.finetune.templates import (
    ChatFormat,
    TemplateRefusal,
    fold_system_message,
    render,
)

SYSTEM = {"role": "system", "content": "You answer in one short sentence."}
TURNS = [
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "The capital is Paris."},
    {"role": "user", "content": "And of Italy?"},
    {"role": "assistant", "content": "Rome, of course!"},
    {"role": "user", "content": "Thanks. Which is bigger?"},
    {"role": "assistant", "content": "Paris has more people."},
]
CONVERSATIONS = {"system-and-turns": [SYSTEM, *TURNS], "no-system": TURNS, "one-turn": TURNS[:2]}
REFUSALS = {
    "raises": "the chat template refused this conversation: System role not supported; set "
    "finetuning_config.data_conf.system_message_handling: fold-into-first-user",
    "after-assistant-turns": "the chat template refused this conversation: it leaves the system message out of "
    "the rendered text, so no turn would be trained with it; set "
    "finetuning_config.data_conf.system_message_handling: fold-into-first-user",
}
FOLD = "fold-into-first-user"


def setup_family(tiny_model_dir, name):
    tokenizer = family_tokenizer(tiny_model_dir, name)
    return tokenizer, prepare_tokenizer(tokenizer, "keep-original", "bos-repurpose").chat_format


def trained_texts(tokenizer, chat_format, messages, handling="keep") -> list[str]:
    example = encode(tokenizer, chat_format, messages, True, handling)
    return [tokenizer.decode(run) for run in labelled_runs(example)]


# ------------------------------------------------------------------------------------------ the mask oracle


@pytest.mark.parametrize("shape", CONVERSATIONS)
@pytest.mark.parametrize("name", FAMILIES)
def test_exactly_each_assistant_turn_and_its_end_of_turn_carry_loss(tiny_model_dir, name, shape):
    meta = family_meta(name)
    tokenizer, chat_format = setup_family(tiny_model_dir, name)
    assert chat_format.end_of_turn == meta["end_of_turn"]  # keep-original finds each family's own
    messages = CONVERSATIONS[shape]
    handling = "keep"
    if messages[0]["role"] == "system" and meta["system_message"] != "kept":
        with pytest.raises(TemplateRefusal) as refused:
            encode(tokenizer, chat_format, messages, True)
        assert str(refused.value).startswith(REFUSALS[meta["system_message"]])
        handling = FOLD  # the documented fix makes the conversation trainable
    example = encode(tokenizer, chat_format, messages, True, handling)

    eot = meta["end_of_turn"]
    answers = [m["content"] for m in messages if m["role"] == "assistant"]
    runs = labelled_runs(example)
    # One run per assistant turn: its content (after the separator the model itself writes, Mistral's
    # space) and its end-of-turn token, in order; nothing of system, user, headers or generation prompts.
    assert [tokenizer.decode(run).lstrip(" ") for run in runs] == [answer + eot for answer in answers]
    assert all(run[-1] == tokenizer.convert_tokens_to_ids(eot) for run in runs)
    template_tokens = {tokenizer.convert_tokens_to_ids(t) for t in meta["special_tokens"]} - {
        tokenizer.convert_tokens_to_ids(eot)
    }
    trained = [t for t, label in zip(example["input_ids"], example["labels"], strict=False) if label != IGNORE_INDEX]
    assert not template_tokens & set(trained)
    # The ids are the template's full rendering (what the model sees), tokenised once.
    shown = fold_system_message(messages) if handling == FOLD else messages
    assert tokenizer.decode(example["input_ids"]) == render(tokenizer, shown)


@pytest.mark.parametrize("name", FAMILIES)
def test_whole_sequence_training_needs_no_spans(tiny_model_dir, name):
    tokenizer, chat_format = setup_family(tiny_model_dir, name)
    example = encode(tokenizer, chat_format, TURNS, completions_only=False)
    assert example["labels"] == example["input_ids"]
    assert tokenizer.decode(example["input_ids"]) == render(tokenizer, TURNS)


# ------------------------------------------------------------------------------------------ template quirks


THINKING = [
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "<think>\nThe user greets me.\n</think>\n\nHello!"},
    {"role": "user", "content": "What is 2+2?"},
    {"role": "assistant", "content": "<think>\nAdd them.\n</think>\n\n4"},
]


def test_qwen3_trains_the_think_block_the_data_wrote_and_not_the_empty_one_it_inserts(tiny_model_dir):
    tokenizer, chat_format = setup_family(tiny_model_dir, "qwen3")
    # The last turn keeps its reasoning (trained); Qwen3 renders the earlier turn without it.
    assert trained_texts(tokenizer, chat_format, THINKING) == [
        "Hello!<|im_end|>",
        "<think>\nAdd them.\n</think>\n\n4<|im_end|>",
    ]
    # Without reasoning Qwen3 inserts an empty think block before the last answer: scaffolding, not trained.
    plain = [
        THINKING[0],
        {"role": "assistant", "content": "Hello!"},
        THINKING[2],
        {"role": "assistant", "content": "4"},
    ]
    assert "<think>\n\n</think>\n\n4<|im_end|>" in render(tokenizer, plain)
    assert trained_texts(tokenizer, chat_format, plain) == ["Hello!<|im_end|>", "4<|im_end|>"]
    # ... unless the data put that empty block there itself.
    own = [THINKING[0], {"role": "assistant", "content": "<think>\n\n</think>\n\nHello!"}]
    assert trained_texts(tokenizer, chat_format, own) == ["<think>\n\n</think>\n\nHello!<|im_end|>"]


def test_deepseek_r1_trains_what_its_template_keeps_of_a_reasoning_turn(tiny_model_dir):
    tokenizer, chat_format = setup_family(tiny_model_dir, "deepseek-r1-distill")
    # The template drops `...</think>` from every assistant turn; the answer after it is what is trained.
    assert trained_texts(tokenizer, chat_format, THINKING) == [
        "\n\nHello!<｜end▁of▁sentence｜>",
        "\n\n4<｜end▁of▁sentence｜>",
    ]


def test_trimming_templates_train_the_trimmed_answer(tiny_model_dir):
    tokenizer, chat_format = setup_family(tiny_model_dir, "llama-3")
    messages = [TURNS[0], {"role": "assistant", "content": "  Paris.  "}]
    assert trained_texts(tokenizer, chat_format, messages) == ["Paris.<|eot_id|>"]


def test_phi3_eos_after_the_last_turn_is_not_trained(tiny_model_dir):
    tokenizer, chat_format = setup_family(tiny_model_dir, "phi-3")
    assert render(tokenizer, TURNS[:2]).endswith("<|end|>\n<|endoftext|>")  # the template's own, not a turn's
    assert trained_texts(tokenizer, chat_format, TURNS[:2]) == ["The capital is Paris.<|end|>"]


def test_generation_markers_in_a_template_decide_what_is_trained(tiny_model_dir):
    tokenizer = family_tokenizer(tiny_model_dir, "chatml")
    # This template trains the answers but, by its own markers, not their end-of-turn token: the
    # markers win over the engine's own alignment (which would train `<|im_end|>` too).
    tokenizer.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'assistant' %}{{ '<|im_start|>assistant\n' }}"
        "{% generation %}{{ m['content'] }}{% endgeneration %}{{ '<|im_end|>\n' }}"
        "{% else %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endif %}{% endfor %}"
    )
    chat_format = prepare_tokenizer(tokenizer, "keep-original", "bos-repurpose").chat_format
    assert trained_texts(tokenizer, chat_format, TURNS[:4]) == ["The capital is Paris.", "Rome, of course!"]


# ------------------------------------------------------------------------------------------ refusals


def refusal_for(tokenizer, chat_format, messages, completions_only=True) -> str:
    with pytest.raises(TemplateRefusal) as refused:
        encode(tokenizer, chat_format, messages, completions_only)
    return str(refused.value)


def test_a_template_that_places_the_system_message_after_the_answers_is_refused(tiny_model_dir):
    tokenizer = family_tokenizer(tiny_model_dir, "chatml")
    tokenizer.chat_template = (
        "{% for m in messages if m['role'] != 'system' %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] "
        "+ '<|im_end|>\n' }}{% endfor %}{% for m in messages if m['role'] == 'system' %}{{ m['content'] }}"
        "{% endfor %}"
    )
    chat_format = prepare_tokenizer(tokenizer, "keep-original", "bos-repurpose").chat_format
    assert refusal_for(tokenizer, chat_format, [SYSTEM, *TURNS[:2]]) == (
        "the chat template refused this conversation: it places the system message after the first assistant turn, "
        "so the turns before it would be trained without it; set "
        "finetuning_config.data_conf.system_message_handling: fold-into-first-user (the system message becomes the "
        "start of the first user turn)"
    )
    folded = encode(tokenizer, chat_format, [SYSTEM, *TURNS[:2]], True, FOLD)
    assert [tokenizer.decode(run) for run in labelled_runs(folded)] == ["The capital is Paris.<|im_end|>"]


def test_a_template_that_leaves_the_last_turn_open_is_refused_for_completions_only(tiny_model_dir):
    tokenizer = family_tokenizer(tiny_model_dir, "chatml")
    # Qwen1.5-Chat's template: no end-of-turn token after the last message unless a prompt follows.
    tokenizer.chat_template = (
        "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content']}}"
        "{% if (loop.last and add_generation_prompt) or not loop.last %}{{ '<|im_end|>' + '\n'}}{% endif %}"
        "{% endfor %}{% if add_generation_prompt and messages[-1]['role'] != 'assistant' %}"
        "{{ '<|im_start|>assistant\n' }}{% endif %}"
    )
    with pytest.raises(UserError, match="keep-original, but no end-of-turn token follows the assistant's answer"):
        prepare_tokenizer(tokenizer, "keep-original", "bos-repurpose")
    chat_format = ChatFormat("keep-original", tokenizer.chat_template, "<|im_end|>")
    assert refusal_for(tokenizer, chat_format, TURNS[:2]) == (
        "the chat template refused this conversation: it does not close assistant turn 1 with the end-of-turn token "
        "'<|im_end|>' (it renders '' after it), so the model would not learn to stop; choose another "
        "finetuning_config.data_conf.chat_template_name"
    )
    # Whole-sequence training never looks for turns.
    example = encode(tokenizer, chat_format, TURNS[:2], completions_only=False)
    assert example["labels"] == example["input_ids"]


def test_an_error_a_template_raises_is_a_refusal_with_its_message(tiny_model_dir):
    tokenizer, chat_format = setup_family(tiny_model_dir, "gemma-2")
    wrong_order = [TURNS[0], TURNS[0], TURNS[1]]
    assert refusal_for(tokenizer, chat_format, wrong_order) == (
        "the chat template refused this conversation: Conversation roles must alternate "
        "user/assistant/user/assistant/...; fix the conversation, or choose another "
        "finetuning_config.data_conf.chat_template_name"
    )


# ------------------------------------------------------------------------------------------ the commands


@pytest.fixture(autouse=True)
def quiet_cli_logging(monkeypatch):
    """`main()` in this process must not leave a stderr handler behind for the next test's captured stderr."""
    import logging

    root = logging.getLogger()
    monkeypatch.setattr(root, "_llmft_configured", True, raising=False)
    monkeypatch.setattr(
        root,
        "handlers",
        [h for h in root.handlers if not isinstance(h, logging.StreamHandler) or type(h).__module__ != "logging"],
    )


def chat_lines(*conversations) -> str:
    return "".join(json.dumps({"messages": c}) + "\n" for c in conversations)


@pytest.fixture(scope="module")
def gemma2_model(tiny_model_dir, tmp_path_factory) -> Path:
    return write_family_model(tiny_model_dir, "gemma-2", tmp_path_factory.mktemp("gemma-2") / "model")


def sft_yaml(tmp_path: Path, model: Path, dataset: Path, **data_conf) -> Path:
    config = {
        "method": "sft",
        "data_conf": {"training_data": {"datasets": [{"path": str(dataset)}]}, **data_conf},
        "training_args": {
            "output_dir": str(tmp_path / "out"),
            "max_steps": 2,
            "save_steps": 100,
            "learning_rate": 1e-3,
            "report_to": [],
        },
        "batchsize_conf": {"total_train_batch_size": 2, "max_per_device_train_batch_size": 2},
        "peft_conf": {"peft_type": "NO_PEFT"},
        "run_conf": {"model": str(model)},
        "sft_args": {"max_seq_length": 256},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_sft_reports_a_refused_conversation_with_file_line_and_the_fix_before_loading_a_model(
    gemma2_model, tmp_path, capsys, monkeypatch
):
    import llmft.finetune.model as modeling

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(modeling, "load_model", no_model)
    dataset = tmp_path / "train.jsonl"
    dataset.write_text(chat_lines(TURNS[:2], [SYSTEM, *TURNS[:2]], TURNS[:4]))
    assert main(["sft", str(sft_yaml(tmp_path, gemma2_model, dataset))]) == 2
    error = capsys.readouterr().err
    assert "Traceback" not in error
    assert (
        f"{dataset}:2: the chat template refused this conversation: System role not supported; set "
        "finetuning_config.data_conf.system_message_handling: fold-into-first-user" in error
    )
    assert f"{dataset}:1" not in error and f"{dataset}:3" not in error


def test_dpo_reports_a_refused_pair_with_file_line(gemma2_model, tmp_path, capsys):
    dataset = tmp_path / "pairs.jsonl"
    dataset.write_text(
        json.dumps(
            {
                "prompt_messages": [SYSTEM, TURNS[0]],
                "chosen_messages": [TURNS[1]],
                "rejected_messages": [{"role": "assistant", "content": "Lyon."}],
            }
        )
        + "\n"
    )
    config = yaml.safe_load(sft_yaml(tmp_path, gemma2_model, dataset).read_text())
    config["method"] = "dpo"
    del config["sft_args"]
    path = tmp_path / "dpo.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["dpo", str(path)]) == 2
    error = capsys.readouterr().err
    assert "Traceback" not in error
    assert f"{dataset}:1: the chat template refused this conversation: System role not supported" in error


def test_dpo_folds_the_system_message_into_the_prompt_when_asked(tiny_model_dir):
    from llmft.finetune.data import PreferenceRecord
    from llmft.finetune.dpo import encode_pairs

    tokenizer, _ = setup_family(tiny_model_dir, "gemma-2")
    record = PreferenceRecord([SYSTEM, TURNS[0]], [TURNS[1]], [{"role": "assistant", "content": "Lyon."}], "p.jsonl:7")
    with pytest.raises(UserError, match="^p.jsonl:7: the chat template refused this conversation: System role"):
        encode_pairs([record], tokenizer, 256, "training data")
    rows, report = encode_pairs([record], tokenizer, 256, "training data", FOLD)
    assert report.kept == 1
    assert rows[0]["prompt"] == [{"role": "user", "content": f"{SYSTEM['content']}\n\n{TURNS[0]['content']}"}]


def test_validate_data_with_a_tokenizer_lists_refused_conversations_as_invalid_lines(gemma2_model, tmp_path, capsys):
    dataset = tmp_path / "train.jsonl"
    dataset.write_text(chat_lines(TURNS[:2], [SYSTEM, *TURNS[:2]]))
    assert main(["validate-data", str(dataset), "--tokenizer", str(gemma2_model)]) == 1
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert f"{dataset}:2: the chat template refused this conversation: System role not supported" in captured.err
    assert "SFT, 1 valid record(s), 1 invalid line(s)" in captured.out


def test_prepare_data_refuses_or_sets_aside_conversations_the_template_refuses(gemma2_model, tmp_path):
    from llmft.staging.prepare_data import prepare_data

    folder = tmp_path / "datasets"
    folder.mkdir()
    (folder / "train.jsonl").write_text(chat_lines(TURNS[:2], [SYSTEM, *TURNS[:2]]))
    with pytest.raises(UserError) as failed:
        prepare_data(folder, str(tmp_path / "dest"), tokenizer=str(gemma2_model))
    assert f"{folder / 'train.jsonl'}:2: the chat template refused this conversation: System role not supported" in str(
        failed.value
    )
    assert not (tmp_path / "dest").exists()  # nothing delivered
    report = prepare_data(folder, str(tmp_path / "dest"), tokenizer=str(gemma2_model), skip_invalid=True)
    assert report.rejects == ["train.rejects.jsonl"]
    assert (tmp_path / "dest" / "train.jsonl").read_text() == chat_lines(TURNS[:2])


def test_preview_data_shows_what_training_trains_without_the_model_weights(gemma2_model, tmp_path, capsys):
    model = tmp_path / "tokenizer-only"
    shutil.copytree(gemma2_model, model)
    for weights in model.glob("*.safetensors"):
        weights.unlink()  # only the tokenizer is needed
    dataset = tmp_path / "train.jsonl"
    long_answer = {"role": "assistant", "content": " ".join(["word"] * 300)}
    dataset.write_text(chat_lines(TURNS[:4], [SYSTEM, *TURNS[:2]], [TURNS[0], long_answer]))
    config = sft_yaml(tmp_path, model, dataset, system_message_handling=FOLD)
    out = tmp_path / "preview.jsonl"
    assert main(["preview-data", str(config), "-n", "1", "--json", str(out)]) == 0
    shown = capsys.readouterr().out
    assert (
        f"--- sample 1 ({dataset}:1): " in shown
        and "[[The capital is Paris.<end_of_turn>]]" in shown
        and "[[Rome, of course!<end_of_turn>]]" in shown
    )
    assert "--- sample 2" not in shown  # -n 1
    assert "training data: 3 samples, 2 kept:" in shown
    assert re.search(rf"{re.escape(str(dataset))}:3: \d+ tokens, longer than sft_args.max_seq_length=256", shown)

    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [row["where"] for row in rows] == [f"{dataset}:{n}" for n in (1, 2, 3)]
    # The rows are exactly what the SFT recipe's encode produces (the folded system message included).
    tokenizer, chat_format = setup_family(model, "gemma-2")
    expected = encode(tokenizer, chat_format, [SYSTEM, *TURNS[:2]], True, FOLD)
    assert rows[1]["input_ids"] == expected["input_ids"] and rows[1]["labels"] == expected["labels"]
    assert rows[1]["text"].startswith("<bos><start_of_turn>user\nYou answer in one short sentence.\n\nWhat is")
    assert rows[2]["left_out"].endswith("longer than sft_args.max_seq_length=256")


def test_preview_data_exits_one_when_training_would_fail(gemma2_model, tmp_path, capsys):
    dataset = tmp_path / "train.jsonl"
    dataset.write_text(chat_lines([SYSTEM, *TURNS[:2]]))
    assert main(["preview-data", str(sft_yaml(tmp_path, gemma2_model, dataset))]) == 1
    shown = capsys.readouterr().out
    assert f"{dataset}:1: the chat template refused this conversation: System role not supported" in shown
    assert "would fail" in shown


# ------------------------------------------------------------------------------------------ training


@pytest.mark.slow
def test_two_sft_steps_per_template_stop_generation_on_its_end_of_turn(tiny_model_dir, tmp_path_factory):
    """One process, one tiny model: a 2-step SFT per template; the final model stops on its end-of-turn."""
    from llmft.finetune.config import load_config
    from llmft.finetune.sft import run_sft

    failures = []
    for name in FAMILIES:
        root = tmp_path_factory.mktemp(name)
        model = write_family_model(tiny_model_dir, name, root / "model")
        dataset = root / "train.jsonl"
        dataset.write_text(chat_lines(*CONVERSATIONS.values()))
        handling = "keep" if family_meta(name)["system_message"] == "kept" else FOLD
        config = load_config(
            yaml.safe_load(
                sft_yaml(
                    root, model, dataset, chat_template_name="keep-original", system_message_handling=handling
                ).read_text()
            )
        )
        if run_sft(config) != 0:
            failures.append(f"{name}: exit status")
            continue
        final = root / "out" / "checkpoint-final"
        eos = json.loads((final / "generation_config.json").read_text())["eos_token_id"]
        eos = [eos] if isinstance(eos, int) else eos
        eot = family_tokenizer(tiny_model_dir, name).convert_tokens_to_ids(family_meta(name)["end_of_turn"])
        if eot not in eos:
            failures.append(f"{name}: generation stops on {eos}, not on the end-of-turn token {eot}")
        if json.loads((root / "out" / "summary.json").read_text())["steps"] != 2:
            failures.append(f"{name}: not 2 steps")
    assert failures == []
