"""Chat templates and loss masks: for every template, exactly each assistant turn's text plus its
end-of-turn token carries loss; special tokens are added; pad token strategies work."""

from __future__ import annotations

import shutil

import pytest
from chat_template_cases import labelled_runs

from llmft.errors import UserError
from llmft.finetune.data import IGNORE_INDEX, encode
from llmft.finetune.model import end_of_turn_ids, load_tokenizer, prepare_tokenizer

CONVERSATION = [
    {"role": "system", "content": "You answer in one short sentence."},
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "The capital is Paris."},
    {"role": "user", "content": "And of Italy?"},
    {"role": "assistant", "content": "Rome, of course!"},
]
END_OF_TURN = {"keep-original": "</s>", "chat-ml": "<|im_end|>", "llama-3": "<|eot_id|>"}


@pytest.mark.parametrize("name", ["keep-original", "chat-ml", "llama-3"])
def test_only_assistant_text_and_end_of_turn_carry_loss(tiny_model_dir, name):
    tokenizer = load_tokenizer(tiny_model_dir)
    setup = prepare_tokenizer(tokenizer, name, "bos-repurpose")
    assert setup.chat_format.end_of_turn == END_OF_TURN[name]
    example = encode(tokenizer, setup.chat_format, CONVERSATION, completions_only=True)
    runs = [tokenizer.decode(run) for run in labelled_runs(example)]
    eot = END_OF_TURN[name]
    assert runs == [f"The capital is Paris.{eot}", f"Rome, of course!{eot}"]
    # The end-of-turn token itself (one special token, never split) is what teaches the model to stop.
    for run in labelled_runs(example):
        assert run[-1] == tokenizer.convert_tokens_to_ids(eot)
    # Nothing of the user turns, the system prompt or the template's headers is trained.
    pairs = zip(example["input_ids"], example["labels"], strict=True)
    trained = tokenizer.decode([token for token, label in pairs if label != IGNORE_INDEX])
    assert "France" not in trained and "assistant" not in trained and "short sentence" not in trained


@pytest.mark.parametrize("name", ["keep-original", "chat-ml", "llama-3"])
def test_whole_sequence_training_labels_every_token(tiny_model_dir, name):
    tokenizer = load_tokenizer(tiny_model_dir)
    setup = prepare_tokenizer(tokenizer, name, "bos-repurpose")
    example = encode(tokenizer, setup.chat_format, CONVERSATION, completions_only=False)
    assert example["labels"] == example["input_ids"]
    assert tokenizer.decode(example["input_ids"]) == tokenizer.apply_chat_template(CONVERSATION, tokenize=False)


def test_templates_add_their_special_tokens_once(tiny_model_dir):
    tokenizer = load_tokenizer(tiny_model_dir)
    before = len(tokenizer)
    setup = prepare_tokenizer(tokenizer, "llama-3", "bos-repurpose")
    assert setup.added_tokens == ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
    assert len(tokenizer) == before + 3
    # Each is one token, never split by the BPE.
    assert len(tokenizer("<|eot_id|>", add_special_tokens=False)["input_ids"]) == 1
    assert tokenizer.convert_tokens_to_ids("<|eot_id|>") in end_of_turn_ids(tokenizer, setup.chat_format)
    assert tokenizer.eos_token_id in end_of_turn_ids(tokenizer, setup.chat_format)


def test_keep_original_without_a_template_is_an_error(tiny_model_dir, tmp_path):
    tokenizer = load_tokenizer(tiny_model_dir)
    tokenizer.chat_template = None
    with pytest.raises(
        UserError, match="keep-original, but the model's tokenizer has no chat template; choose chat-ml or llama-3"
    ):
        prepare_tokenizer(tokenizer, "keep-original", "bos-repurpose")


@pytest.fixture(scope="module")
def no_pad_model(tiny_model_dir, tmp_path_factory):
    """The tiny model's tokenizer saved without a pad token."""
    folder = tmp_path_factory.mktemp("no-pad") / "model"
    shutil.copytree(tiny_model_dir, folder)
    tokenizer = load_tokenizer(folder)
    tokenizer.pad_token = None
    tokenizer.save_pretrained(folder)
    return folder


@pytest.mark.parametrize(
    "strategy,expected", [("bos-repurpose", "<s>"), ("eos-repurpose", "</s>"), ("add-new", "<pad>")]
)
def test_missing_pad_token_strategies(no_pad_model, strategy, expected):
    tokenizer = load_tokenizer(no_pad_model)
    assert tokenizer.pad_token is None
    setup = prepare_tokenizer(tokenizer, "chat-ml", strategy)
    assert tokenizer.pad_token == expected
    assert setup.pad_strategy == strategy


def test_unk_repurpose_without_unk_token_says_what_to_do(no_pad_model):
    tokenizer = load_tokenizer(no_pad_model)
    with pytest.raises(
        UserError,
        match="missing_pad_token_strategy: the tokenizer has no pad token and no unk token to reuse; use add-new",
    ):
        prepare_tokenizer(tokenizer, "chat-ml", "unk-repurpose")


def test_fold_into_first_user_joins_the_system_message_to_the_first_user_turn():
    from llmft.finetune.templates import fold_system_message

    system = {"role": "system", "content": "Be brief."}
    user = {"role": "user", "content": "Hi"}
    answer = {"role": "assistant", "content": "Hello"}
    assert fold_system_message([system, user, answer]) == [{"role": "user", "content": "Be brief.\n\nHi"}, answer]
    assert fold_system_message([user, answer]) == [user, answer]  # nothing to fold
    assert fold_system_message([system, answer]) == [system, answer]  # no user turn to fold into: unchanged
