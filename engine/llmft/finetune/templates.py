"""Chat templates and where each assistant turn lies in the rendered text.

A `ChatFormat` is a Jinja chat template plus its end-of-turn token (the token that closes an
assistant turn and stops generation). `keep-original` uses the model's own template and finds its
end-of-turn token by rendering a probe conversation.

`assistant_spans` renders a conversation and returns the character ranges of every assistant
turn: what the template made of its content plus its end-of-turn token, nothing of the template
around it. The loss mask is built from these ranges (see `llmft.finetune.data.encode`), so the
model learns each answer and learns to stop, and never learns to write the user's turns, the
template's headers, its generation prompt or scaffolding it inserts by itself (Qwen3's empty
`<think></think>` block).

Real templates do not render growing prefixes of a conversation consistently (Phi-3 appends EOS
after the last turn, Qwen3 drops earlier turns' think blocks, Mistral moves the system message to
the last user turn), so turns are found without that assumption: for each assistant turn the
conversation is rendered once more with that turn's content replaced by a sentinel; the text
before the sentinel up to the generation prompt and the text after it (starting with the
end-of-turn token) are the template's own and are located in the real rendering, and what lies
between is the turn. Templates with `{% generation %}` markers are trusted instead (transformers'
`return_assistant_tokens_mask`). See docs/chat-templates.md.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from llmft.errors import UserError

TEMPLATE_KEY = "finetuning_config.data_conf.chat_template_name"
SYSTEM_KEY = "finetuning_config.data_conf.system_message_handling"
SYSTEM_FIX = f"set {SYSTEM_KEY}: fold-into-first-user (the system message becomes the start of the first user turn)"
# Letters and digits only: survives trim, strip, split and case-sensitive checks in any template.
SENTINEL = "LLMFTSENTINEL{}X"
GENERATION_MARKER = re.compile(r"{%-?\s*generation\s*-?%}")

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
    template: str
    end_of_turn: str
    special_tokens: tuple[str, ...] = field(default_factory=tuple)


# The model's own template; its end-of-turn token is detected from the tokenizer (apply_chat_format).
KEEP_ORIGINAL = "keep-original"

# The templates this engine installs on a tokenizer.
FORMATS = {
    "chat-ml": ChatFormat("chat-ml", CHAT_ML, "<|im_end|>", ("<|im_start|>", "<|im_end|>")),
    "llama-3": ChatFormat("llama-3", LLAMA_3, "<|eot_id|>", ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")),
}


# The original engine's template names (silogen/ai-workloads, config_doc_sft.md) that this engine does not
# offer, each with the name to use instead. `chat-ml` and `keep-original` are spelled the same here.
ORIGINAL_NAMES = {
    "mistral-with-system": "the original engine's `[INST] ... [/INST]` template with `<<SYS>>` blocks is not offered; "
    "use keep-original (the model's own template, e.g. TinyLlama-Chat's) or chat-ml",
    "simplified-llama31": "use llama-3 (the same turns; message content is not trimmed)",
    "poro": "the `<|user|>`/`<|assistant|>` template is not offered; use chat-ml or keep-original",
}


class TemplateRefusal(UserError):
    """The chat template cannot render this conversation as training needs it.

    Raised without a location; the reader of the data adds `file:line` with `at`.
    """

    def at(self, where: str) -> UserError:
        return UserError(f"{where}: {self}")


def template_names() -> list[str]:
    return [KEEP_ORIGINAL, *FORMATS]


def _template_errors() -> tuple[type[BaseException], ...]:
    from jinja2.exceptions import TemplateError

    # raise_exception() in a template raises TemplateError; templates that index or concatenate what a
    # conversation lacks raise the others.
    return TemplateError, TypeError, ValueError, KeyError, IndexError, AttributeError


def render(tokenizer, messages: list[dict], add_generation_prompt: bool = False) -> str:
    """The template's text for `messages`; an error inside the template is a `TemplateRefusal`."""
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    except _template_errors() as error:
        raise refusal(error, messages) from None
    if not isinstance(text, str):  # some versions return a list for batched input
        text = text[0]
    return text


def refusal(error: BaseException, messages: list[dict]) -> TemplateRefusal:
    """`the chat template refused this conversation: <its message>` and the fix that fits."""
    message = str(error).strip() or type(error).__name__
    has_system = any(m.get("role") == "system" for m in messages)
    if has_system and "system" in message.lower():
        fix = SYSTEM_FIX
    else:
        fix = f"fix the conversation, or choose another {TEMPLATE_KEY}"
    return TemplateRefusal(f"the chat template refused this conversation: {message}; {fix}")


def fold_system_message(messages: list[dict]) -> list[dict]:
    """`system_message_handling: fold-into-first-user`: the leading system message becomes the start
    of the first user turn (separated by a blank line), for templates without a system role."""
    if not messages or messages[0].get("role") != "system":
        return messages
    system, rest = messages[0], messages[1:]
    for index, message in enumerate(rest):
        if message.get("role") == "user":
            folded = dict(message, content=f"{system['content']}\n\n{message['content']}")
            return rest[:index] + [folded] + rest[index + 1 :]
    return messages


def apply_chat_format(tokenizer, name: str) -> tuple[ChatFormat, list[str]]:
    """Install the template `name` on `tokenizer`; return the resolved format and the tokens added.

    Tokens the template needs are registered as special tokens (never split); those that were not
    in the vocabulary are returned, so the caller resizes the embeddings.
    """
    if name == KEEP_ORIGINAL:
        if not tokenizer.chat_template:
            raise UserError(
                f"{TEMPLATE_KEY}: keep-original, but the model's tokenizer has no chat template; "
                "choose chat-ml or llama-3"
            )
        return ChatFormat(name, tokenizer.chat_template, detect_end_of_turn(tokenizer)), []
    if name not in FORMATS:
        raise UserError(f"{TEMPLATE_KEY}: must be one of {', '.join(template_names())}, got {name!r}")
    chosen = FORMATS[name]
    vocab = tokenizer.get_vocab()
    added = [token for token in chosen.special_tokens if token not in vocab]
    tokenizer.add_special_tokens(
        {"extra_special_tokens": list(chosen.special_tokens)}, replace_extra_special_tokens=False
    )
    tokenizer.chat_template = chosen.template
    return chosen, added


def detect_end_of_turn(tokenizer) -> str:
    """The special token that closes an assistant turn in the tokenizer's own template."""
    probe = "llmft-probe-answer"
    try:
        text = render(tokenizer, [{"role": "user", "content": "hello"}, {"role": "assistant", "content": probe}])
    except TemplateRefusal as error:
        raise UserError(
            f"{TEMPLATE_KEY}: keep-original, but the model's chat template cannot render a one-turn "
            f"conversation ({error}); choose chat-ml or llama-3"
        ) from None
    at = text.rfind(probe)
    if at < 0:
        raise UserError(
            f"{TEMPLATE_KEY}: keep-original, but the model's chat template drops the assistant's "
            "answer from the rendered text; choose chat-ml or llama-3"
        )
    suffix = text[at + len(probe) :].lstrip(" ")
    candidates = set(getattr(tokenizer, "all_special_tokens", [])) | set(tokenizer.get_added_vocab())
    matches = [token for token in candidates if token and suffix.startswith(token)]
    if matches:
        return max(matches, key=len)
    if tokenizer.eos_token and tokenizer.eos_token in suffix:
        return tokenizer.eos_token
    raise UserError(
        f"{TEMPLATE_KEY}: keep-original, but no end-of-turn token follows the assistant's answer "
        f"in the model's chat template (it renders {suffix[:40]!r}); choose chat-ml or llama-3"
    )


def has_generation_markers(template: str | None) -> bool:
    """True when the template marks the trained text itself with `{% generation %}`."""
    return bool(template and GENERATION_MARKER.search(template))


def generation_marked_tokens(tokenizer, messages: list[dict]) -> tuple[list[int], list[int]]:
    """Token ids and, per token, 1 where the template's `{% generation %}` blocks put it."""
    try:
        encoded = tokenizer.apply_chat_template(
            messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
        )
    except _template_errors() as error:
        raise refusal(error, messages) from None
    return list(encoded["input_ids"]), list(encoded["assistant_masks"])


def check_system_placement(tokenizer, messages: list[dict]) -> None:
    """Refuse a conversation whose system message the template drops or places after an assistant turn.

    Either way the model would be trained on assistant turns that never saw the system message
    (Mistral v0.3 puts it into the last user turn).
    """
    systems = [i for i, m in enumerate(messages) if m["role"] == "system"]
    assistants = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    if not systems or not assistants:
        return
    first = systems[0]
    marked = [
        dict(m, content=SENTINEL.format(f"S{i}")) if i in (first, assistants[0]) else m for i, m in enumerate(messages)
    ]
    text = render(tokenizer, marked)
    system_at = text.find(SENTINEL.format(f"S{first}"))
    answer_at = text.find(SENTINEL.format(f"S{assistants[0]}"))
    if system_at < 0:
        raise TemplateRefusal(
            f"the chat template refused this conversation: it leaves the system message out of "
            f"the rendered text, so no turn would be trained with it; {SYSTEM_FIX}"
        )
    if answer_at >= 0 and system_at > answer_at:
        raise TemplateRefusal(
            "the chat template refused this conversation: it places the system message after "
            "the first assistant turn, so the turns before it would be trained without it; "
            f"{SYSTEM_FIX}"
        )


def assistant_spans(tokenizer, chat_format: ChatFormat, messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
    """Render `messages`; return the text and each assistant turn's (start, end) character range.

    A turn's range starts after the generation prompt (and after scaffolding the template inserts
    whatever the content, unless the content itself holds it) and ends after its end-of-turn token.
    """
    text = render(tokenizer, messages)
    spans: list[tuple[int, int]] = []
    for index, message in enumerate(messages):
        if message["role"] == "assistant":
            spans.append(_turn_span(tokenizer, chat_format, messages, index, text, spans[-1][1] if spans else 0))
    return text, spans


def _turn_span(
    tokenizer, chat_format: ChatFormat, messages: list[dict], index: int, text: str, previous_end: int
) -> tuple[int, int]:
    turn = sum(1 for m in messages[: index + 1] if m["role"] == "assistant")
    sentinel = SENTINEL.format(index)
    marked = render(tokenizer, messages[:index] + [dict(messages[index], content=sentinel)] + messages[index + 1 :])
    if marked.count(sentinel) != 1:
        what = "leaves out" if sentinel not in marked else "repeats"
        raise TemplateRefusal(
            f"the chat template refused this conversation: it {what} assistant turn {turn}, so "
            f"the turn cannot be located for completions-only training; choose another "
            f"{TEMPLATE_KEY} or set finetuning_config.sft_args.train_on_completions_only: false"
        )
    at = marked.index(sentinel)
    head, tail = marked[:at], marked[at + len(sentinel) :]
    end_of_turn = chat_format.end_of_turn
    if not tail.startswith(end_of_turn):
        raise TemplateRefusal(
            f"the chat template refused this conversation: it does not close assistant turn {turn} with the "
            f"end-of-turn token {end_of_turn!r} (it renders {tail[:30]!r} after it), so the model would not learn "
            f"to stop; choose another {TEMPLATE_KEY}"
        )
    opener_end = _generation_prompt_end(tokenizer, messages[:index], head, previous_end)
    content_end = len(text) - len(tail)
    if not (text.endswith(tail) and text.startswith(head[:opener_end]) and opener_end <= content_end):
        raise TemplateRefusal(
            f"the chat template refused this conversation: it renders the rest of the conversation differently "
            f"depending on the content of assistant turn {turn}, so the turn cannot be located for "
            f"completions-only training; choose another {TEMPLATE_KEY} or set "
            "finetuning_config.sft_args.train_on_completions_only: false"
        )
    if opener_end == len(head):  # no generation prompt: the model writes the separator before the content too
        opener_end = len(head.rstrip(" "))
    start = opener_end
    scaffold = head[opener_end:]
    if scaffold and text.startswith(scaffold, start) and not _content_holds(messages[index]["content"], scaffold):
        start += len(scaffold)  # e.g. Qwen3's empty think block: the template's, not the data's
    return start, content_end + len(end_of_turn)


def _generation_prompt_end(tokenizer, history: list[dict], head: str, lower: int) -> int:
    """Where the generation prompt before this turn ends in `head` (the text before the turn's content).

    The generation prompt is what `add_generation_prompt=True` adds to the history; without one
    (or when the template opens history turns differently) the turn starts where its content does.
    """
    try:
        with_prompt = render(tokenizer, history, add_generation_prompt=True)
        without = render(tokenizer, history)
    except TemplateRefusal:
        return len(head)
    prompt = with_prompt[len(os.path.commonprefix([with_prompt, without])) :]
    found = head.rfind(prompt, lower) if prompt.strip() else -1
    return len(head) if found < 0 else found + len(prompt)


def _content_holds(content: str, scaffold: str) -> bool:
    """True when the data itself wrote the scaffold (ignoring whitespace), e.g. its own think block."""
    return "".join(scaffold.split()) in "".join(content.split())
