"""Scoring with the model's weights on this machine: held-out loss, generated answers, class predictions.

- Loss: each conversation is tokenised by `llmft.finetune.data.encode_records`, the one tokenisation path
  of training (same chat template, same loss mask: assistant turns with their end-of-turn token under
  `completions_only`), and scored as the sum of its trained tokens' cross-entropy and their count.
- Generation: the prompt is rendered with the model's own chat template (`add_generation_prompt`), and
  generated with the checkpoint's generation_config (whose eos ids include the end-of-turn token, so an
  answer stops where a turn ends), overridden only by `generation` (max_new_tokens, temperature).
- Classification: `AutoModelForSequenceClassification`, the argmax class.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

from llmft.errors import UserError
from llmft.evaluate.data import Sample
from llmft.evaluate.spec import EvalSpec

log = logging.getLogger("llmft.evaluate")


def _device_and_dtype():
    import torch

    if torch.cuda.is_available():
        return "cuda", torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return "cpu", torch.float32


def _batches(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class CausalLM:
    """A chat model folder loaded for loss and generation."""

    def __init__(self, folder: Path, spec: EvalSpec):
        import torch
        from transformers import AutoModelForCausalLM

        from llmft.finetune.model import load_tokenizer
        from llmft.finetune.templates import apply_chat_format

        self.torch = torch
        self.spec = spec
        self.tokenizer = load_tokenizer(folder)
        if not self.tokenizer.chat_template:
            raise UserError(
                f"target: the model at {folder} has no chat template, so its prompts cannot be rendered "
                "as in training; evaluate a checkpoint written by `llmft sft` (it carries its template) "
                "or a chat model"
            )
        self.chat_format, _ = apply_chat_format(self.tokenizer, "keep-original")
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.device, dtype = _device_and_dtype()
        self.model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).to(self.device).eval()

    def loss(self, samples: list[Sample]) -> list[dict]:
        """Per sample: `loss_sum` and `loss_tokens` (or `loss_left_out` with the reason)."""
        from llmft.finetune.data import IGNORE_INDEX, Record, encode_records

        records = [Record(sample.conversation, sample.where) for sample in samples]
        encoded = list(
            encode_records(
                records,
                self.tokenizer,
                self.chat_format,
                self.spec.loss.max_seq_length,
                self.spec.loss.completions_only,
            )
        )  # system messages: folded on reading
        refused = [f"{item.record.where}: {item.left_out}" for item in encoded if item.refused]
        if refused:
            raise UserError(
                "the chat template cannot render these evaluation conversations:\n  " + "\n  ".join(refused)
            )
        rows: list[dict] = [{} for _ in samples]
        kept = [(index, item.example) for index, item in enumerate(encoded) if not item.left_out]
        for index, item in enumerate(encoded):
            if item.left_out:
                rows[index] = {"loss_left_out": item.left_out}
        for batch in _batches(kept, self.spec.loss.batch_size):
            width = max(len(example["input_ids"]) for _, example in batch)
            pad = self.tokenizer.pad_token_id
            ids = [ex["input_ids"] + [pad] * (width - len(ex["input_ids"])) for _, ex in batch]
            labels = [ex["labels"] + [IGNORE_INDEX] * (width - len(ex["labels"])) for _, ex in batch]
            mask = [[1] * len(ex["input_ids"]) + [0] * (width - len(ex["input_ids"])) for _, ex in batch]
            torch = self.torch
            with torch.no_grad():
                logits = self.model(
                    input_ids=torch.tensor(ids, device=self.device),
                    attention_mask=torch.tensor(mask, device=self.device),
                ).logits.float()
            targets = torch.tensor(labels, device=self.device)[:, 1:]
            losses = torch.nn.functional.cross_entropy(
                logits[:, :-1].transpose(1, 2), targets, ignore_index=IGNORE_INDEX, reduction="none"
            )
            trained = targets != IGNORE_INDEX
            for row, (index, _) in enumerate(batch):
                rows[index] = {
                    "loss_sum": float(losses[row][trained[row]].sum()),
                    "loss_tokens": int(trained[row].sum()),
                }
        return rows

    def generate(self, samples: list[Sample]) -> list[str]:
        """Answers to each sample's prompt, decoded without special tokens."""
        import copy

        from llmft.finetune.templates import render

        settings = self.spec.generation
        config = copy.deepcopy(self.model.generation_config)
        config.max_new_tokens = settings.max_new_tokens
        config.do_sample = settings.temperature > 0
        config.temperature = settings.temperature if settings.temperature > 0 else None
        config.top_p = config.top_p if settings.temperature > 0 else None
        config.top_k = config.top_k if settings.temperature > 0 else None
        if config.pad_token_id is None:
            config.pad_token_id = self.tokenizer.pad_token_id
        prompts = [render(self.tokenizer, sample.prompt, add_generation_prompt=True) for sample in samples]
        self.tokenizer.padding_side = "left"
        try:
            inputs = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        finally:
            self.tokenizer.padding_side = "right"
        inputs = {key: value.to(self.device) for key, value in inputs.items()}
        with self.torch.no_grad():
            output = self.model.generate(**inputs, generation_config=config)
        new_tokens = output[:, inputs["input_ids"].shape[1] :]
        return [text.strip() for text in self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]


class Classifier:
    """A sequence-classification model folder; a fresh head when `data.labels` differs from it in size."""

    def __init__(self, folder: Path, spec: EvalSpec, names: list[str], model_config: dict):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.torch = torch
        self.names = names
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.device, dtype = _device_and_dtype()
        options = {
            "num_labels": len(names),
            "id2label": dict(enumerate(names)),
            "label2id": {name: i for i, name in enumerate(names)},
        }
        if len(model_config.get("id2label") or {}) not in (0, len(names)):
            options["ignore_mismatched_sizes"] = True
            log.warning(
                "the model's head has %d classes, data.labels %d: a fresh head is made (untrained, its "
                "scores mean nothing until it is trained)",
                len(model_config["id2label"]),
                len(names),
            )
        self.model = AutoModelForSequenceClassification.from_pretrained(folder, dtype=dtype, **options)
        self.model.to(self.device).eval()
        self.batch_size = spec.generation.batch_size
        self.max_length = min(spec.loss.max_seq_length, getattr(self.tokenizer, "model_max_length", 10**6))

    def predict(self, samples: list[Sample]) -> list[str]:
        inputs = self.tokenizer(
            [sample.text for sample in samples],
            return_tensors="pt",
            padding=True,
            truncation=True,
            max_length=self.max_length,
        )
        inputs = {key: value.to(self.device) for key, value in inputs.items()}
        with self.torch.no_grad():
            predicted = self.model(**inputs).logits.argmax(dim=-1).tolist()
        return [self.names[index] for index in predicted]
