"""The SFT recipe: `llmft sft CONFIG` from a validated config to the output folder.

Reads top to bottom: check the machine, restore streamed checkpoints, pick the checkpoint to
resume, read and validate the data (before any model is loaded), prepare the tokenizer and chat
template, tokenise with loss masks, resolve the batch size, load the model (resize embeddings,
LoRA), train with TRL's SFTTrainer, write the finals and summary.json last.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path

from llmft.errors import UserError
from llmft.finetune import batching, data, model as modeling, outputs
from llmft.finetune.config import SftConfig

log = logging.getLogger("llmft.finetune.sft")


def run_sft(config: SftConfig, callbacks: list | tuple = ()) -> int:
    """Run supervised fine-tuning; return the exit status. `callbacks` are extra TrainerCallbacks."""
    from accelerate import PartialState

    modeling.check_machine(config)
    state = PartialState()
    output_dir = Path(config.training_args.output_dir).expanduser()
    output_dir.mkdir(parents=True, exist_ok=True)
    run_conf = config.run_conf

    # Streamed checkpoints: bring the newest complete remote checkpoint home before anything else.
    sync = None
    if run_conf.checkpoints_remote:
        from llmft.sync import CheckpointSync

        sync = CheckpointSync(remote=run_conf.checkpoints_remote, output_dir=output_dir,
                              save_total_limit=config.training_args.save_total_limit or None)
        restored = sync.restore()
        if restored.final_complete:
            log.info("the run already finished in %s; nothing to do", run_conf.checkpoints_remote)
            return 0

    resume_from = resume_checkpoint(run_conf.resume_from_checkpoint, output_dir)
    if resume_from == "finished":
        log.info("%s/summary.json says this run finished; nothing to do (resume_from_checkpoint: none starts over)",
                 output_dir)
        return 0

    # Data first: every bad line is reported before a model is loaded.
    with tempfile.TemporaryDirectory(prefix="llmft-data-") as scratch:
        datasets = data.load_datasets(config.data_conf.training_data.datasets, Path(scratch))
        train_records, eval_records = data.split_validation(
            data.mix(datasets, config.data_conf.training_data), config.data_conf, Path(scratch))
    log.info("data: %d training and %d validation samples", len(train_records), len(eval_records))

    with state.local_main_process_first():
        model_dir = modeling.fetch_model(run_conf.model)
        tokenizer_dir = modeling.fetch_model(
            run_conf.tokenizer, "finetuning_config.run_conf.tokenizer", marker="tokenizer_config.json") if run_conf.tokenizer \
            else model_dir
    tokenizer = modeling.load_tokenizer(tokenizer_dir, run_conf.model_args.trust_remote_code)
    setup = modeling.prepare_tokenizer(tokenizer, config.data_conf.chat_template_name,
                                       config.data_conf.missing_pad_token_strategy)

    sft_args = config.sft_args
    train_examples, train_report = data.encode_all(
        train_records, tokenizer, setup.chat_format, sft_args.max_seq_length, sft_args.train_on_completions_only,
        "training data")
    eval_examples, eval_report = data.encode_all(
        eval_records, tokenizer, setup.chat_format, sft_args.max_seq_length, sft_args.train_on_completions_only,
        "validation data")

    plan = batching.resolve_batch_size(config.batchsize_conf, state.num_processes)
    learning_rate = batching.effective_learning_rate(config.training_args.learning_rate, config.overrides,
                                                     plan.total)
    dtype = modeling.resolve_dtype(config)
    args = training_arguments(config, plan, learning_rate, dtype, output_dir)
    log.info("batch: total %d = %d process(es) x %d per device x %d accumulation; learning rate %.3g; dtype %s",
             plan.total, plan.processes, plan.per_device, plan.accumulation, learning_rate, dtype)

    # The model.
    from transformers import set_seed

    model = modeling.load_model(model_dir, config, dtype)
    resized = modeling.resize_embeddings(model, tokenizer)
    modeling.set_generation_config(model, tokenizer, setup.chat_format)
    generation_config = model.generation_config
    lora = config.peft_conf.lora()
    if lora is not None:
        set_seed(config.training_args.seed)  # LoRA's initial weights
        model = modeling.apply_lora(model, config, resized)

    trainer = build_trainer(config, model, tokenizer, args, train_examples, eval_examples)
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # our progress line replaces its raw dicts
    for callback in outputs.make_callbacks(output_dir, state.is_main_process, tokenizer, generation_config):
        trainer.add_callback(callback)
    if "tensorboard" in config.training_args.report_targets() and state.is_main_process:
        from torch.utils.tensorboard import SummaryWriter
        from transformers.integrations import TensorBoardCallback

        trainer.add_callback(TensorBoardCallback(tb_writer=SummaryWriter(log_dir=str(output_dir / outputs.LOGS))))
    for callback in callbacks:
        trainer.add_callback(callback)
    if sync is not None:
        trainer.add_callback(sync.callback())

    if resume_from:
        log.info("resuming from %s", resume_from)
    started = time.monotonic()
    result = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    runtime = time.monotonic() - started

    finals = write_finals(config, trainer, model_dir, output_dir, tokenizer, generation_config, resized,
                          state.is_main_process)
    if state.is_main_process:
        summary = build_summary(config, trainer, result, runtime, plan, learning_rate, dtype, setup, resized,
                                train_report, eval_report, resume_from, finals)
        outputs.write_json(output_dir / outputs.SUMMARY, summary)
        log.info("done: %d steps, final loss %s, outputs in %s", trainer.state.global_step,
                 summary["final_train_loss"], output_dir)
    state.wait_for_everyone()
    if sync is not None:
        sync.finish()
    return 0


def resume_checkpoint(setting: str, output_dir: Path) -> Path | str | None:
    """The checkpoint to resume from: None (fresh), a folder, or "finished" (nothing left to do)."""
    if setting == "none":
        return None
    if setting == "auto":
        if outputs.run_is_complete(output_dir):
            return "finished"
        found = outputs.complete_checkpoints(output_dir)
        return found[-1][1] if found else None
    path = Path(setting).expanduser()
    if not (path / outputs.TRAINER_STATE).is_file():
        raise UserError(f"finetuning_config.run_conf.resume_from_checkpoint: {path} is not a complete checkpoint "
                        f"(no {outputs.TRAINER_STATE}); use auto or a checkpoint-<step> folder, got {setting!r}")
    return path


def training_arguments(config: SftConfig, plan, learning_rate: float, dtype: str, output_dir: Path):
    """TRL's SFTConfig from our config; Hugging Face's own checks become config errors."""
    from trl import SFTConfig

    t = config.training_args
    warmup = t.warmup_steps if t.warmup_steps is not None else (t.warmup_ratio or 0)
    report_to = [target for target in t.report_targets() if target != "tensorboard"] or "none"
    if "mlflow" in t.report_targets() and config.tracking is not None:
        os.environ["MLFLOW_TRACKING_URI"] = config.tracking.mlflow_server_uri
        os.environ["MLFLOW_EXPERIMENT_NAME"] = config.tracking.experiment_name
        if config.tracking.run_name:
            os.environ["MLFLOW_RUN_NAME"] = config.tracking.run_name
    try:
        return SFTConfig(
            output_dir=str(output_dir),
            per_device_train_batch_size=plan.per_device,
            gradient_accumulation_steps=plan.accumulation,
            per_device_eval_batch_size=plan.eval_per_device,
            learning_rate=learning_rate,
            num_train_epochs=config.overrides.num_train_epochs or t.num_train_epochs,
            max_steps=t.max_steps,
            lr_scheduler_type=t.lr_scheduler_type,
            lr_scheduler_kwargs=t.lr_scheduler_kwargs,
            warmup_steps=warmup,
            weight_decay=t.weight_decay,
            max_grad_norm=t.max_grad_norm,
            optim=t.optim,
            adam_beta1=t.adam_beta1,
            adam_beta2=t.adam_beta2,
            adam_epsilon=t.adam_epsilon,
            logging_strategy=t.logging_strategy,
            logging_steps=t.logging_steps,
            logging_first_step=t.logging_first_step,
            eval_strategy=t.eval_strategy,
            eval_steps=t.eval_steps,
            save_strategy=t.save_strategy,
            save_steps=t.save_steps,
            save_total_limit=t.save_total_limit,
            load_best_model_at_end=t.load_best_model_at_end,
            metric_for_best_model=t.metric_for_best_model,
            greater_is_better=t.greater_is_better,
            report_to=report_to,
            run_name=t.run_name,
            seed=t.seed,
            data_seed=t.data_seed,
            gradient_checkpointing=t.gradient_checkpointing,
            dataloader_num_workers=t.dataloader_num_workers,
            bf16=dtype == "bf16",
            fp16=dtype == "fp16",
            # Packed batches carry a 4D attention mask, whose sum is not a token count.
            include_num_input_tokens_seen="all" if config.sft_args.packing else "non_padding",
            max_length=config.sft_args.max_seq_length,
            packing=False,
            shuffle_dataset=False,
            disable_tqdm=True,
        )
    except ValueError as error:
        raise UserError(f"finetuning_config.training_args: {error}") from None


def build_trainer(config: SftConfig, model, tokenizer, args, train_examples: list[dict],
                  eval_examples: list[dict]):
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
    return SFTTrainer(model=model, args=args, train_dataset=train, eval_dataset=evaluation,
                      processing_class=tokenizer, data_collator=collator)


def write_finals(config: SftConfig, trainer, model_dir: Path, output_dir: Path, tokenizer, generation_config,
                 resized: bool, is_main: bool) -> dict:
    """checkpoint-final/ (full or merged) and checkpoint-final-adapter/ (LoRA); returns what was written."""
    from llmft.finetune.merge import merge_adapter

    final = output_dir / outputs.FINAL
    adapter = output_dir / outputs.FINAL_ADAPTER
    if config.peft_conf.lora() is None:
        trainer.save_model(str(final))  # gathers sharded weights on every process, writes on the main one
        if is_main:
            outputs.save_model_extras(final, tokenizer, generation_config)
        return {"final_model": outputs.FINAL, "adapter": None, "merged": False}
    trainer.save_model(str(adapter))
    written = {"final_model": None, "adapter": outputs.FINAL_ADAPTER, "merged": False}
    if is_main:
        outputs.save_model_extras(adapter, tokenizer, generation_config)
        if config.run_conf.merge_adapter:
            merge_adapter(model_dir, adapter, final)
            outputs.save_model_extras(final, tokenizer, generation_config)
            written.update(final_model=outputs.FINAL, merged=True)
    return written


def build_summary(config: SftConfig, trainer, result, runtime: float, plan, learning_rate: float, dtype: str,
                  setup, resized: bool, train_report, eval_report, resume_from, finals: dict) -> dict:
    output_dir = Path(config.training_args.output_dir)
    history = trainer.state.log_history
    train_losses = [row["loss"] for row in history if "loss" in row]
    eval_losses = [row["eval_loss"] for row in history if "eval_loss" in row]
    tokens = trainer.state.num_input_tokens_seen
    adapter_ok = None
    serve = finals["final_model"]
    if finals["adapter"]:
        adapter_ok = outputs.adapter_is_lora_only(output_dir / finals["adapter"])
    notes = []
    if finals["adapter"] and not adapter_ok:
        notes.append("the adapter also holds the resized embedding and output layers (the chat template added "
                     "tokens), so it cannot be served as a LoRA adapter on the base model: serve the merged model "
                     "(run_conf.merge_adapter: true, or `llmft merge-adapter`)")
    return {
        "status": "complete",
        "method": config.method,
        "training": "lora" if finals["adapter"] else "full",
        "steps": trainer.state.global_step,
        "max_steps": trainer.state.max_steps,
        "epochs": trainer.state.epoch,
        "first_train_loss": train_losses[0] if train_losses else None,
        "final_train_loss": train_losses[-1] if train_losses else None,
        "mean_train_loss": result.training_loss,
        "final_eval_loss": eval_losses[-1] if eval_losses else None,
        "tokens_seen": tokens,
        "runtime_seconds": round(runtime, 3),
        "tokens_per_second": round(tokens / runtime, 1) if runtime > 0 else None,
        "samples_per_second": result.metrics.get("train_samples_per_second"),
        "resumed_from": str(resume_from) if resume_from else None,
        "batch": {"total": plan.total, "processes": plan.processes, "per_device": plan.per_device,
                  "gradient_accumulation_steps": plan.accumulation},
        "learning_rate": learning_rate,
        "dtype": dtype,
        "data": {"training": train_report.as_dict(), "validation": eval_report.as_dict()},
        "chat_template": setup.chat_format.name,
        "end_of_turn_token": setup.chat_format.end_of_turn,
        "added_tokens": setup.added_tokens,
        "pad_token_strategy_applied": setup.pad_strategy,
        "resized_embeddings": resized,
        "outputs": finals,
        "serve": serve,
        "adapter_servable_alone": adapter_ok,
        "notes": notes,
        "config": config.model_dump(mode="json"),
    }
