"""Plain-text causal LM data (`task: text`): continued pre-training and domain adaptation.

Each text becomes its tokens followed by the end-of-text token, and every token carries loss. A text
longer than `sft_args.max_seq_length` is cut into consecutive pieces of at most that many tokens (each
a sample of its own; nothing is left out, the count is logged and in summary.json). With
`sft_args.packing` the samples share rows through `llmft.finetune.packing`: positions restart and a
block-diagonal mask keeps each document from attending to (or predicting across) another.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from llmft.finetune.data import TextRecord
from llmft.progress import Progress

log = logging.getLogger("llmft.finetune.text")


@dataclass
class TextReport:
    """What tokenisation did to the texts, for the log and summary.json."""

    texts: int = 0
    samples: int = 0
    tokens: int = 0
    split_texts: int = 0
    first_split: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "texts": self.texts,
            "samples": self.samples,
            "tokens": self.tokens,
            "texts_split_into_pieces": self.split_texts,
            "first_split": self.first_split,
        }


def encode_texts(
    records: list[TextRecord], tokenizer, max_seq_length: int, label: str
) -> tuple[list[dict], TextReport]:
    """input_ids and labels (the same: loss on every token) of every text, cut to `max_seq_length` pieces."""
    report = TextReport(texts=len(records))
    examples = []
    eos = tokenizer.eos_token_id
    progress = Progress(f"tokenize {label}", len(records), unit="texts")
    for record in records:
        progress.update(1)
        ids = list(tokenizer(record.text, add_special_tokens=True)["input_ids"])
        if eos is not None and (not ids or ids[-1] != eos):
            ids.append(eos)  # the model learns where a document ends
        if len(ids) > max_seq_length:
            report.split_texts += 1
            if len(report.first_split) < 5:
                report.first_split.append(record.where)
        for start in range(0, len(ids), max_seq_length):
            piece = ids[start : start + max_seq_length]
            examples.append({"input_ids": piece, "labels": list(piece)})
            report.tokens += len(piece)
    progress.close()
    report.samples = len(examples)
    if report.split_texts:
        log.info(
            "%s: %d of %d texts are longer than sft_args.max_seq_length=%d tokens and were cut into pieces "
            "(first at %s)",
            label,
            report.split_texts,
            len(records),
            max_seq_length,
            ", ".join(report.first_split),
        )
    return examples, report
