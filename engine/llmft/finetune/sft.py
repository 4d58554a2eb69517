"""The SFT recipe: `llmft sft CONFIG` from a validated config to the output folder.

Reads top to bottom: check the machine, restore streamed checkpoints, pick the checkpoint to
resume, read and validate the data (before any model is loaded), prepare the tokenizer and chat
template, tokenise with loss masks, resolve the batch size, load the model (resize embeddings,
LoRA), train with TRL's SFTTrainer, write the finals and summary.json last. The steps shared
with DPO live in `llmft.finetune.recipe`.
"""

from __future__ import annotations

import logging

from llmft.finetune import data, recipe, throughput
from llmft.finetune import model as modeling
from llmft.finetune.config import SftConfig

log = logging.getLogger("llmft.finetune.sft")


def run_sft(config: SftConfig, callbacks: list | tuple = ()) -> int:
    """Run supervised fine-tuning; return the exit status. `callbacks` are extra TrainerCallbacks."""
    if config.task == "sequence-classification":
        from llmft.finetune.classification import run_classification

        return run_classification(config, callbacks)
    run = recipe.start_run(config)
    if run is None:
        return 0

    # Data first: every bad line is reported before a model is loaded.
    text = config.task == "text"
    train_records, eval_records = recipe.read_data(config, kind="text" if text else "sft")
    model_dir, tokenizer, setup = recipe.prepare_tokenizer(config, run, chat=not text)

    train_examples, train_report, eval_examples, eval_report = encode(
        config, tokenizer, setup, train_records, eval_records
    )

    plan = recipe.plan_batches(config, run)
    args = training_arguments(config, plan, run.output_dir)

    # The model.
    model, resized, generation_config = recipe.load_model(model_dir, config, plan.dtype, tokenizer, setup)
    if config.peft_conf.lora() is not None:
        recipe.seed_everything(config)  # LoRA's initial weights
        model = modeling.apply_lora(model, config, resized)

    trainer = build_trainer(config, model, tokenizer, args, train_examples, eval_examples)
    recipe.attach_callbacks(trainer, config, run, plan, tokenizer, generation_config, callbacks)
    result, runtime = recipe.train(trainer, run)
    report = recipe.throughput_report(trainer, runtime, reference_forward=False)

    finals = recipe.write_finals(
        config, trainer, model_dir, run.output_dir, tokenizer, generation_config, run.state.is_main_process
    )
    summary = None
    if run.state.is_main_process:
        summary = recipe.base_summary(
            config, trainer, result, runtime, plan, setup, resized, run.resume_from, finals, report
        )
        summary["data"] = {"training": train_report.as_dict(), "validation": eval_report.as_dict()}
    return recipe.finish(run, trainer, summary)


def encode(config: SftConfig, tokenizer, setup, train_records: list, eval_records: list) -> tuple:
    """Training and validation examples with their reports: plain texts (`task: text`) or conversations."""
    sft_args = config.sft_args
    if config.task == "text":
        from llmft.finetune.text_lm import encode_texts

        train_texts, train_counts = encode_texts(train_records, tokenizer, sft_args.max_seq_length, "training data")
        eval_texts, eval_counts = encode_texts(eval_records, tokenizer, sft_args.max_seq_length, "validation data")
        return train_texts, train_counts, eval_texts, eval_counts
    train_examples, train_report = data.encode_all(
        train_records,
        tokenizer,
        setup.chat_format,
        sft_args.max_seq_length,
        sft_args.train_on_completions_only,
        "training data",
        config.data_conf.system_message_handling,
    )
    eval_examples, eval_report = data.encode_all(
        eval_records,
        tokenizer,
        setup.chat_format,
        sft_args.max_seq_length,
        sft_args.train_on_completions_only,
        "validation data",
        config.data_conf.system_message_handling,
    )
    return train_examples, train_report, eval_examples, eval_report


def training_arguments(config: SftConfig, plan: recipe.Plan, output_dir):
    """TRL's SFTConfig: the shared training arguments plus SFT's own."""
    from trl import SFTConfig

    return recipe.make_arguments(
        SFTConfig,
        **recipe.common_training_kwargs(config, plan, output_dir),
        # Packed batches carry a 4D attention mask, whose sum is not a token count.
        include_num_input_tokens_seen="all" if config.sft_args.packing else "non_padding",
        max_length=config.sft_args.max_seq_length,
        packing=False,
        shuffle_dataset=False,
    )


def build_trainer(config: SftConfig, model, tokenizer, args, train_examples: list[dict], eval_examples: list[dict]):
    """TRL's SFTTrainer on pre-tokenised examples (input_ids + labels, masks already applied)."""
    from datasets import Dataset
    from trl import SFTTrainer

    train = Dataset.from_list(train_examples)
    evaluation = Dataset.from_list(eval_examples) if eval_examples else None
    collator = None
    if config.sft_args.packing:
        # Several samples per row, kept apart by llmft.finetune.packing's collator (block-diagonal mask
        # or variable-length attention); the rows carry position_ids, so no column may be dropped.
        from llmft.finetune.packing import PackedCollator, pack_samples

        max_length = config.sft_args.max_seq_length
        train = Dataset.from_list(pack_samples(train_examples, max_length))
        evaluation = Dataset.from_list(pack_samples(eval_examples, max_length)) if eval_examples else None
        collator = PackedCollator(model.config._attn_implementation, tokenizer.pad_token_id)
        args.remove_unused_columns = False
    # The counting subclass records the real (non-padding) tokens of every training batch for summary.json.
    return throughput.counting(SFTTrainer)(
        model=model,
        args=args,
        train_dataset=train,
        eval_dataset=evaluation,
        processing_class=tokenizer,
        data_collator=collator,
    )
