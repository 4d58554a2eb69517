"""`llmft preview-data`: what SFT training will see, sample by sample, before anything trains.

The config's data is read, mixed and split by the recipe's own steps (`llmft.finetune.recipe.
read_data`), and tokenised by `llmft.finetune.data.encode_records`, the one path SFT training
uses; only the tokenizer is loaded (no model weights). Each shown sample marks its trained text
(the tokens whose label is not -100) between `[[` and `]]`.
"""

from __future__ import annotations

import itertools
import json
import tempfile
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from llmft.errors import UserError
from llmft.finetune import data
from llmft.finetune import model as modeling
from llmft.finetune.config import CommonConfig, SftConfig

TRAINED_OPEN, TRAINED_CLOSE = "[[", "]]"


@dataclass
class SplitSummary:
    """Counts for one split (training or validation data)."""

    label: str
    samples: int = 0
    kept: int = 0
    trained_tokens: int = 0
    masked_tokens: int = 0
    left_out: list[str] = field(default_factory=list)  # file:line: why
    refused: int = 0

    def lines(self) -> list[str]:
        total = self.trained_tokens + self.masked_tokens
        share = f" ({100 * self.trained_tokens / total:.1f}%)" if total else ""
        head = (
            f"{self.label}: {self.samples} samples, {self.kept} kept: {total} tokens, "
            f"{self.trained_tokens} trained{share}, {self.masked_tokens} masked"
        )
        if not self.left_out:
            return [head]
        return [head, f"  left out: {len(self.left_out)}"] + [f"    {item}" for item in self.left_out]


def load_tokenizer_only(config: SftConfig):
    """The run's tokenizer (run_conf.tokenizer, else the model's), fetched without the weights when it can."""
    from llmft.staging.validate import download_tokenizer_files
    from llmft.storage import parse_location

    run_conf = config.run_conf
    location = run_conf.tokenizer or run_conf.model
    what = "finetuning_config.run_conf." + ("tokenizer" if run_conf.tokenizer else "model")
    if location.startswith("hf://") or parse_location(location).is_local:
        folder = modeling.fetch_model(location, what, marker="tokenizer_config.json")
    else:
        folder = Path(tempfile.mkdtemp(prefix="llmft-tokenizer-"))
        download_tokenizer_files(parse_location(location), folder)
    return modeling.load_tokenizer(folder, run_conf.model_args.trust_remote_code)


def marked_text(tokenizer, example: dict) -> str:
    """The decoded sample with each run of trained tokens between `[[` and `]]`."""
    pairs = zip(example["input_ids"], example["labels"], strict=True)
    runs = itertools.groupby(pairs, key=lambda pair: pair[1] != data.IGNORE_INDEX)
    return "".join(_piece(tokenizer, [token for token, _ in run], trained) for trained, run in runs)


def _piece(tokenizer, ids: list[int], trained: bool) -> str:
    text = tokenizer.decode(ids)
    return f"{TRAINED_OPEN}{text}{TRAINED_CLOSE}" if trained else text


def preview(config: CommonConfig, count: int, out=print, json_path: str | None = None) -> list[SplitSummary]:
    """Show the first `count` training samples as training tokenises them; summarise every split."""
    from llmft.finetune import recipe

    if not isinstance(config, SftConfig):
        raise UserError(
            f"finetuning_config.method: preview-data shows SFT data (labels per token), got "
            f"{config.method!r}; `llmft validate-data --tokenizer` checks DPO files"
        )
    if config.task != "chat":
        raise UserError(
            f"finetuning_config.task: preview-data shows chat data (the trained spans of each turn), got "
            f"{config.task!r}: task text trains every token, a classifier its label (docs/tasks.md)"
        )
    train_records, eval_records = recipe.read_data(config, kind="sft")
    tokenizer = load_tokenizer_only(config)
    setup = modeling.prepare_tokenizer(
        tokenizer, config.data_conf.chat_template_name, config.data_conf.missing_pad_token_strategy
    )
    sft_args = config.sft_args
    out(
        f"chat template: {setup.chat_format.name}, end of turn {setup.chat_format.end_of_turn!r}; "
        f"train_on_completions_only: {str(sft_args.train_on_completions_only).lower()}; trained text is shown "
        f"between {TRAINED_OPEN} and {TRAINED_CLOSE}"
    )
    summaries = []
    with open(json_path, "w", encoding="utf-8") if json_path else nullcontext() as sink:
        for label, records in (("training data", train_records), ("validation data", eval_records)):
            summary = SplitSummary(label)
            for item in data.encode_records(
                records,
                tokenizer,
                setup.chat_format,
                sft_args.max_seq_length,
                sft_args.train_on_completions_only,
                config.data_conf.system_message_handling,
            ):
                _tally(summary, item)
                if label == "training data" and summary.samples <= count:
                    _show(out, tokenizer, summary.samples, item)
                if sink:
                    sink.write(json.dumps(_row(tokenizer, label, item), ensure_ascii=False) + "\n")
            summaries.append(summary)
    out("")
    for summary in summaries:
        for line in summary.lines():
            out(line)
    return summaries


def _tally(summary: SplitSummary, item: data.Encoded) -> None:
    summary.samples += 1
    if item.left_out:
        summary.left_out.append(f"{item.record.where}: {item.left_out}")
        summary.refused += item.refused
        return
    assert item.example is not None, "only a left-out record has no example"
    summary.kept += 1
    trained = sum(label != data.IGNORE_INDEX for label in item.example["labels"])
    summary.trained_tokens += trained
    summary.masked_tokens += len(item.example["labels"]) - trained


def _show(out, tokenizer, number: int, item: data.Encoded) -> None:
    out("")
    example = item.example
    if example is None:  # refused by the chat template
        out(f"--- sample {number} ({item.record.where}): left out: {item.left_out}")
        return
    labels = example["labels"]
    trained = sum(label != data.IGNORE_INDEX for label in labels)
    state = f"left out: {item.left_out}" if item.left_out else f"{trained} trained, {len(labels) - trained} masked"
    out(f"--- sample {number} ({item.record.where}): {len(labels)} tokens, {state}")
    out(marked_text(tokenizer, example).rstrip("\n"))


def _row(tokenizer, label: str, item: data.Encoded) -> dict:
    example = item.example
    return {
        "where": item.record.where,
        "split": label.split()[0],
        "left_out": item.left_out,
        "input_ids": example["input_ids"] if example else None,
        "labels": example["labels"] if example else None,
        "text": tokenizer.decode(example["input_ids"]) if example else None,
    }
