"""The sequence-classification recipe: `task: sequence-classification` from text and label columns.

Reads top to bottom like the SFT recipe, with the same shared steps (`llmft.finetune.recipe`): check the
machine, restore streamed checkpoints, pick the checkpoint to resume, read the labelled texts and fix the
label set (an unknown label fails here, before any model is loaded), load the tokenizer (no chat
template), tokenise (texts longer than `sft_args.max_seq_length` are left out and counted, never
truncated), load the model with `AutoModelForSequenceClassification` and the label set as
`id2label` / `label2id`, wrap it with LoRA (task type SEQ_CLS; the new head is trained in full) or train
it in full, train with transformers' Trainer, evaluate (accuracy, macro F1, per-class counts in
metrics.jsonl), write the finals and summary.json last.
"""

from __future__ import annotations

import logging

from llmft.errors import UserError
from llmft.finetune import model as modeling
from llmft.finetune import recipe, throughput
from llmft.finetune.config import SftConfig
from llmft.finetune.data import MAX_PROBLEMS_PER_FILE, LabeledRecord, LengthReport
from llmft.progress import Progress

log = logging.getLogger("llmft.finetune.classification")

KIND = "sequence-classification"


def run_classification(config: SftConfig, callbacks: list | tuple = ()) -> int:
    """Train a sequence classifier; return the exit status. `callbacks` are extra TrainerCallbacks."""
    run = recipe.start_run(config)
    if run is None:
        return 0

    # Data and labels first: every bad row and every unknown label is reported before a model is loaded.
    train_records, eval_records = recipe.read_data(config, kind=KIND)
    labels = label_set(config.sft_args.labels, train_records, eval_records)
    log.info("labels (id order): %s", ", ".join(labels))
    model_dir, tokenizer, setup = recipe.prepare_tokenizer(config, run, chat=False)
    max_length = config.sft_args.max_seq_length
    train_examples, train_report = encode_labeled(train_records, tokenizer, labels, max_length, "training data")
    eval_examples, eval_report = encode_labeled(eval_records, tokenizer, labels, max_length, "validation data")

    plan = recipe.plan_batches(config, run)
    args = training_arguments(config, plan, run.output_dir)

    recipe.seed_everything(config)  # the new head's initial weights
    model = modeling.load_classifier(model_dir, config, plan.dtype, labels)
    resized = modeling.resize_embeddings(model, tokenizer)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id  # decoders find the last token of each row by it
    if config.peft_conf.lora() is not None:
        recipe.seed_everything(config)  # LoRA's initial weights
        model = modeling.apply_lora(model, config, resized)

    trainer = build_trainer(model, tokenizer, args, train_examples, eval_examples, labels)
    recipe.attach_callbacks(trainer, config, run, plan, tokenizer, None, callbacks)
    result, runtime = recipe.train(trainer, run)
    final_eval = last_evaluation(trainer) or (trainer.evaluate() if eval_examples else {})
    report = recipe.throughput_report(trainer, runtime, reference_forward=False)

    finals = recipe.write_finals(config, trainer, model_dir, run.output_dir, tokenizer, None, run.state.is_main_process)
    summary = None
    if run.state.is_main_process:
        summary = recipe.base_summary(
            config, trainer, result, runtime, plan, setup, resized, run.resume_from, finals, report
        )
        summary["data"] = {"training": train_report.as_dict(), "validation": eval_report.as_dict()}
        summary["labels"] = labels
        if finals["adapter"]:
            summary["notes"] = [
                "the adapter holds the classification head trained in full besides the LoRA matrices: serve "
                "the merged model (run_conf.merge_adapter: true, or `llmft merge-adapter`), which loads with "
                "AutoModelForSequenceClassification"
            ]
        summary["final_eval_loss"] = final_eval.get("eval_loss", summary["final_eval_loss"])
        summary["final_eval_accuracy"] = final_eval.get("eval_accuracy")
        summary["final_eval_f1"] = final_eval.get("eval_f1")
        summary["final_eval_per_class"] = {
            label: {
                "support": final_eval.get(f"eval_support/{label}"),
                "predicted": final_eval.get(f"eval_predicted/{label}"),
            }
            for label in labels
        }
    return recipe.finish(run, trainer, summary)


def last_evaluation(trainer) -> dict:
    """The evaluation row logged at the last step, if the schedule evaluated there (else {})."""
    for row in reversed(trainer.state.log_history):
        if "eval_loss" in row:
            return row if row.get("step") == trainer.state.global_step else {}
    return {}


def label_set(configured: list | None, train: list[LabeledRecord], validation: list[LabeledRecord]) -> list[str]:
    """The label names in id order; every record's label must be one of them.

    With `sft_args.labels`, that list; else the training labels, sorted (numerically when they are all
    integers, so labels 0..n-1 keep their ids). A label outside the set, in training or validation data,
    is an error listing where.
    """
    if configured is not None:
        names = [str(label) for label in configured]
        if len(set(names)) != len(names):
            raise UserError(f"finetuning_config.sft_args.labels: a label appears twice, got {configured}")
        where_fixed = "finetuning_config.sft_args.labels"
    else:
        found = {record.label for record in train}
        ordered = sorted(found) if all(isinstance(label, int) for label in found) else sorted(map(str, found))
        names = [str(label) for label in ordered]
        where_fixed = "the training data"
        if len(names) < 2:
            raise UserError(
                f"the training data has {len(names)} label(s) ({', '.join(names)}); a classifier needs at "
                "least two: add samples of the other classes, or list them in finetuning_config.sft_args.labels"
            )
    known = set(names)
    unknown = [record for record in (*train, *validation) if str(record.label) not in known]
    if unknown:
        shown = [f"{record.where}: label {record.label!r}" for record in unknown[:MAX_PROBLEMS_PER_FILE]]
        if len(unknown) > len(shown):
            shown.append(f"... and {len(unknown) - len(shown)} more")
        raise UserError(
            f"{len(unknown)} sample(s) have a label outside the label set of {where_fixed} "
            f"({', '.join(names)}); fix the rows, or list every label in finetuning_config.sft_args.labels:\n  "
            + "\n  ".join(shown)
        )
    return names


def encode_labeled(
    records: list[LabeledRecord], tokenizer, labels: list[str], max_length: int, label: str
) -> tuple[list[dict], LengthReport]:
    """input_ids and the label id of every record; texts longer than `max_length` are left out and counted."""
    ids = {name: index for index, name in enumerate(labels)}
    report = LengthReport()
    examples = []
    progress = Progress(f"tokenize {label}", len(records), unit="samples")
    for record in records:
        progress.update(1)
        input_ids = tokenizer(record.text, add_special_tokens=True)["input_ids"]
        if len(input_ids) > max_length:
            report.left_out(len(input_ids), record.where)
            continue
        examples.append({"input_ids": input_ids, "labels": ids[str(record.label)]})
    progress.close()
    report.conclude(label, len(records), len(examples), "sft_args.max_seq_length", max_length, "text")
    return examples, report


def training_arguments(config: SftConfig, plan: recipe.Plan, output_dir):
    from transformers import TrainingArguments

    return recipe.make_arguments(
        TrainingArguments,
        **recipe.common_training_kwargs(config, plan, output_dir),
        include_num_input_tokens_seen="non_padding",
    )


def compute_metrics(labels: list[str]):
    """The Trainer's `compute_metrics`: accuracy, macro F1 (over the classes present as reference or
    prediction) and per class the true count (`support/<label>`) and the predicted count."""
    import numpy as np

    from llmft.evaluate.metrics import aggregate_classification

    def metrics(prediction) -> dict[str, float]:
        logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
        predicted = np.asarray(logits).argmax(axis=-1)
        references = np.asarray(prediction.label_ids)
        rows = [
            {"reference": labels[int(ref)], "predicted": labels[int(pred)]}
            for ref, pred in zip(references, predicted, strict=True)
        ]
        results, counts = aggregate_classification(rows, ("accuracy", "macro_f1"), labels)
        out = {"accuracy": results.get("accuracy", 0.0), "f1": results.get("macro_f1", 0.0)}
        for name in labels:
            out[f"support/{name}"] = counts["per_class"][name]["support"]
            out[f"predicted/{name}"] = counts["per_class"][name]["predicted"]
        return out

    return metrics


def build_trainer(model, tokenizer, args, train_examples: list[dict], eval_examples: list[dict], labels: list[str]):
    """transformers' Trainer on pre-tokenised examples, padding each batch to its longest text."""
    from datasets import Dataset
    from transformers import DataCollatorWithPadding, Trainer

    return throughput.counting(Trainer)(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(train_examples),
        eval_dataset=Dataset.from_list(eval_examples) if eval_examples else None,
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=compute_metrics(labels),
    )
