"""Chat templates and where each assistant turn lies in the rendered text.

A `ChatFormat` is a Jinja chat template plus its end-of-turn token (the token that closes an
assistant turn and stops generation). `keep-original` uses the model's own template and finds its
end-of-turn token by rendering a probe conversation.

`assistant_spans` renders a conversation and returns the character ranges of every assistant
turn: its content plus its end-of-turn token, nothing of the template around it. The loss mask is
built from these ranges (see `llmft.finetune.data.encode`), so the model learns each answer and
learns to stop, and never learns to write the user's turns or the template's headers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from llmft.errors import UserError

TEMPLATE_KEY = "finetuning_config.data_conf.chat_template_name"

CHAT_ML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

LLAMA_3 = (
    "{% if bos_token %}{{ bos_token }}{% endif %}"
    "{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] + '<|eot_id|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)


@dataclass(frozen=True)
class ChatFormat:
    """A chat template, its end-of-turn token and the special tokens it needs in the vocabulary."""

    name: str
    template: str | None  # None: keep the tokenizer's own
    end_of_turn: str | None  # None: detected from the tokenizer's template
    special_tokens: tuple[str, ...] = field(default_factory=tuple)


FORMATS = {
    "keep-original": ChatFormat("keep-original", None, None),
    "chat-ml": ChatFormat("chat-ml", CHAT_ML, "<|im_end|>", ("<|im_start|>", "<|im_end|>")),
    "llama-3": ChatFormat("llama-3", LLAMA_3, "<|eot_id|>",
                          ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")),
}


def template_names() -> list[str]:
    return list(FORMATS)


def render(tokenizer, messages: list[dict], add_generation_prompt: bool = False) -> str:
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    if not isinstance(text, str):  # some versions return a list for batched input
        text = text[0]
    return text


def apply_chat_format(tokenizer, name: str) -> tuple[ChatFormat, list[str]]:
    """Install the template `name` on `tokenizer`; return the resolved format and the tokens added.

    Tokens the template needs are registered as special tokens (never split); those that were not
    in the vocabulary are returned, so the caller resizes the embeddings.
    """
    if name not in FORMATS:
        raise UserError(f"{TEMPLATE_KEY}: must be one of {', '.join(FORMATS)}, got {name!r}")
    chosen = FORMATS[name]
    if chosen.template is None:
        if not tokenizer.chat_template:
            raise UserError(
                f"{TEMPLATE_KEY}: keep-original, but the model's tokenizer has no chat template; "
                "choose chat-ml or llama-3")
        return ChatFormat(name, tokenizer.chat_template, detect_end_of_turn(tokenizer)), []
    vocab = tokenizer.get_vocab()
    added = [token for token in chosen.special_tokens if token not in vocab]
    tokenizer.add_special_tokens({"extra_special_tokens": list(chosen.special_tokens)},
                                 replace_extra_special_tokens=False)
    tokenizer.chat_template = chosen.template
    return chosen, added


def detect_end_of_turn(tokenizer) -> str:
    """The special token that closes an assistant turn in the tokenizer's own template."""
    probe = "llmft-probe-answer"
    text = render(tokenizer, [{"role": "user", "content": "hello"}, {"role": "assistant", "content": probe}])
    at = text.rfind(probe)
    if at < 0:
        raise UserError(f"{TEMPLATE_KEY}: keep-original, but the model's chat template drops the assistant's "
                        "answer from the rendered text; choose chat-ml or llama-3")
    suffix = text[at + len(probe):].lstrip(" ")
    candidates = set(getattr(tokenizer, "all_special_tokens", [])) | set(tokenizer.get_added_vocab())
    matches = [token for token in candidates if token and suffix.startswith(token)]
    if matches:
        return max(matches, key=len)
    if tokenizer.eos_token and tokenizer.eos_token in suffix:
        return tokenizer.eos_token
    raise UserError(f"{TEMPLATE_KEY}: keep-original, but no end-of-turn token follows the assistant's answer "
                    f"in the model's chat template (it renders {suffix[:40]!r}); choose chat-ml or llama-3")


def assistant_spans(tokenizer, chat_format: ChatFormat, messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
    """Render `messages`; return the text and each assistant turn's (start, end) character range.

    A turn's range starts where the assistant's content starts (after the generation prompt) and
    ends after its end-of-turn token. Works for any template that renders earlier turns the same
    way when later turns follow (every template here does; a template that rewrites history is
    reported as an error).
    """
    text = render(tokenizer, messages)
    spans = []
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt = render(tokenizer, messages[:index], add_generation_prompt=True)
        upto = render(tokenizer, messages[: index + 1])
        if not text.startswith(prompt) or not text.startswith(upto):
            raise UserError(
                f"{TEMPLATE_KEY}: the {chat_format.name} chat template renders earlier turns differently once "
                "later turns are added, so assistant turns cannot be located for completions-only training; "
                "choose chat-ml or llama-3, or set sft_args.train_on_completions_only: false")
        start = len(prompt)
        end_token = text.rfind(chat_format.end_of_turn, start, len(upto))
        if end_token < 0:
            raise UserError(f"{TEMPLATE_KEY}: the {chat_format.name} template does not end assistant turns with "
                            f"{chat_format.end_of_turn!r}; choose chat-ml or llama-3")
        spans.append((start, end_token + len(chat_format.end_of_turn)))
    return text, spans
