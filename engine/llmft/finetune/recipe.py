"""The steps every training recipe shares (SFT and DPO), in the order a recipe calls them.

A recipe (`llmft.finetune.sft`, `llmft.finetune.dpo`) reads top to bottom and calls these:
`start_run` (machine check, streamed checkpoints, which checkpoint to resume), `read_data`
(every bad line before any model is loaded), `prepare_tokenizer`, `plan_batches`, `load_model`,
`common_training_kwargs` (the Hugging Face TrainingArguments every method shares),
`attach_callbacks` (progress lines, metrics.jsonl, trackers, checkpoint sync), `train`,
`write_finals` and `finish` (summary.json last). What differs between methods (how data is encoded,
which TRL trainer, method-specific arguments and summary fields) stays in the recipe.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from llmft import timeline
from llmft.errors import UserError
from llmft.finetune import batching, data, outputs, throughput, tracking
from llmft.finetune import model as modeling
from llmft.finetune.config import CommonConfig

log = logging.getLogger("llmft.finetune.recipe")


@dataclass
class Run:
    """A started run: the process state, where outputs go, the checkpoint sync, the resume point and the
    distributed preset the launch must have engaged (`launch_conf.distributed_type`)."""

    state: Any  # accelerate.PartialState
    output_dir: Path
    sync: Any | None  # llmft.sync.CheckpointSync when run_conf.checkpoints_remote is set
    resume_from: Path | None
    distributed_type: str | None = None


def start_run(config: CommonConfig) -> Run | None:
    """Check the machine, restore streamed checkpoints, pick the checkpoint to resume.

    Returns None when the run already finished (nothing to do).
    """
    if not timeline.started():  # called from Python, not by `llmft sft`/`llmft dpo`
        timeline.start(program=False)
    import datasets
    import torch
    from accelerate import PartialState

    # trl's dataset passes would print progress bars of their own; the recipe logs its own progress lines.
    datasets.disable_progress_bars()
    modeling.check_machine(config)
    check_scheduler_kwargs(config)
    # Without a GPU, processes started by `accelerate launch` join one (gloo) group only with cpu=True.
    state = PartialState(cpu=not torch.cuda.is_available())
    output_dir = Path(config.training_args.output_dir).expanduser()
    if output_dir.is_file():
        raise UserError(
            f"finetuning_config.training_args.output_dir: {output_dir} is a file; give the path of a folder"
        )
    output_dir.mkdir(parents=True, exist_ok=True)
    run_conf = config.run_conf

    # Streamed checkpoints: bring the newest complete remote checkpoint home before anything else.
    sync = checkpoint_sync(config)
    if sync is not None:
        restored = sync.restore()  # joins the download `llmft sft` started before its imports, if it did
        if restored.final_complete:
            assert run_conf.checkpoints_remote is not None, "a checkpoint sync streams to checkpoints_remote"
            check_same_config(
                config,
                _remote_summary(run_conf.checkpoints_remote),
                run_conf.checkpoints_remote,
                "use a new run_conf.checkpoints_remote (checkpointsRemote in the chart)",
            )
            log.info("the run already finished in %s; nothing to do", run_conf.checkpoints_remote)
            return None

    resume_from = resume_checkpoint(run_conf.resume_from_checkpoint, output_dir)
    if resume_from == "finished":
        check_same_config(
            config,
            json.loads((output_dir / outputs.SUMMARY).read_text()),
            str(output_dir),
            "use a new training_args.output_dir, or run_conf.resume_from_checkpoint: none to train "
            "there again from the start",
        )
        log.info(
            "%s/summary.json says this run finished; nothing to do (resume_from_checkpoint: none starts over)",
            output_dir,
        )
        return None
    return Run(state, output_dir, sync, resume_from, config.launch_conf.distributed_type)


def check_scheduler_kwargs(config: CommonConfig) -> None:
    """`lr_scheduler_kwargs` that the chosen scheduler does not take fail now, not when training starts.

    The scheduler's own signature (transformers' public scheduler functions) says what it takes;
    the Trainer fills the optimizer, warmup and step counts itself.
    """
    import inspect

    from transformers.optimization import TYPE_TO_SCHEDULER_FUNCTION, SchedulerType

    t = config.training_args
    if not t.lr_scheduler_kwargs:
        return
    parameters = inspect.signature(TYPE_TO_SCHEDULER_FUNCTION[SchedulerType(t.lr_scheduler_type)]).parameters
    if any(parameter.kind is inspect.Parameter.VAR_KEYWORD for parameter in parameters.values()):
        return  # takes anything (reduce_lr_on_plateau)
    filled = {"optimizer", "num_warmup_steps", "num_training_steps", "last_epoch"}
    accepted = sorted(set(parameters) - filled)
    unknown = sorted(set(t.lr_scheduler_kwargs) - set(accepted))
    if unknown:
        raise UserError(
            f"finetuning_config.training_args.lr_scheduler_kwargs: the {t.lr_scheduler_type} scheduler "
            f"does not take {', '.join(unknown)}; it takes {', '.join(accepted) or 'no arguments'}, "
            f"got {json.dumps(t.lr_scheduler_kwargs)}"
        )


def checkpoint_sync(config: CommonConfig):
    """The run's `CheckpointSync` (None without run_conf.checkpoints_remote); light to build (no imports)."""
    run_conf = config.run_conf
    if not run_conf.checkpoints_remote:
        return None
    from llmft.sync import CheckpointSync

    return CheckpointSync(
        remote=run_conf.checkpoints_remote,
        output_dir=Path(config.training_args.output_dir).expanduser(),
        save_total_limit=config.training_args.save_total_limit or None,
        logs_remote=run_conf.logs_remote,
        skip_download=run_conf.skip_checkpoint_download,
    )


# Where a run is and how it is started: the same run may be relaunched with these changed.
_RELAUNCH_KEYS = {
    ("training_args", "output_dir"),
    ("run_conf", "checkpoints_remote"),
    ("run_conf", "logs_remote"),
    ("run_conf", "skip_checkpoint_download"),
    ("run_conf", "resume_from_checkpoint"),
    ("launch_conf", "accelerate_config"),
}


def _flatten(value, path=()) -> dict[tuple, object]:
    if isinstance(value, dict) and value:
        return {key: leaf for name, item in value.items() for key, leaf in _flatten(item, (*path, name)).items()}
    return {path: value}


def check_same_config(config: CommonConfig, summary: dict | None, where: str, fix: str) -> None:
    """Refuse to call a finished run "done" for a config that differs from the one it was trained with."""
    if not summary or "config" not in summary:
        return
    before = _flatten(_with_current_defaults(config, summary["config"]))
    now = _flatten(config.model_dump(mode="json"))
    changed = [
        key
        for key in sorted(set(before) | set(now), key=str)
        if key not in _RELAUNCH_KEYS and before.get(key) != now.get(key)
    ]
    if changed:
        shown = "; ".join(
            f"{'.'.join(map(str, key))}: {json.dumps(before.get(key))} -> {json.dumps(now.get(key))}"
            for key in changed[:5]
        )
        more = f" (and {len(changed) - 5} more)" if len(changed) > 5 else ""
        raise UserError(
            f"{where} holds a finished run trained with a different config ({shown}{more}); nothing "
            f"was trained: to train this config {fix}"
        )


def _with_current_defaults(config: CommonConfig, recorded: dict) -> dict:
    """A recorded config as this version reads it: keys added since (dataset options, `task`) get their
    defaults, so a run finished before they existed is not "trained with a different config"."""
    from pydantic import ValidationError

    try:
        return type(config).model_validate(recorded).model_dump(mode="json")
    except ValidationError:
        return recorded


def _remote_summary(remote: str) -> dict | None:
    from llmft.storage import parse_location
    from llmft.storage.transfer import read_object

    data = read_object(parse_location(remote).child(outputs.SUMMARY), missing_ok=True)
    return json.loads(data) if data else None


def resume_checkpoint(setting: str, output_dir: Path) -> Path | Literal["finished"] | None:
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
        raise UserError(
            f"finetuning_config.run_conf.resume_from_checkpoint: {path} is not a complete checkpoint "
            f"(no {outputs.TRAINER_STATE}); use auto or a checkpoint-<step> folder, got {setting!r}"
        )
    return path


def read_data(config: CommonConfig, kind: str) -> tuple[list, list]:
    """Training and validation records (`kind` "sft" or "dpo"); every bad line of every file fails at once."""
    with tempfile.TemporaryDirectory(prefix="llmft-data-") as scratch:
        datasets = data.load_datasets(config.data_conf.training_data.datasets, Path(scratch), kind=kind)
        train_records, eval_records = data.split_validation(
            data.mix(datasets, config.data_conf.training_data), config.data_conf, Path(scratch), kind=kind
        )
    log.info("data: %d training and %d validation samples", len(train_records), len(eval_records))
    timeline.mark("data")
    return train_records, eval_records


def prepare_tokenizer(config: CommonConfig, run: Run, chat: bool = True):
    """Fetch the model (and tokenizer) folders; load the tokenizer with its chat template and pad token.

    `chat` False (plain text, classification): no chat template. Returns (model_dir, tokenizer, TokenizerSetup).
    """
    run_conf = config.run_conf
    with run.state.local_main_process_first():
        model_dir = modeling.fetch_model(run_conf.model)
        tokenizer_dir = (
            modeling.fetch_model(
                run_conf.tokenizer, "finetuning_config.run_conf.tokenizer", marker="tokenizer_config.json"
            )
            if run_conf.tokenizer
            else model_dir
        )
    tokenizer = modeling.load_tokenizer(
        tokenizer_dir,
        run_conf.model_args.trust_remote_code,
        "finetuning_config.run_conf.tokenizer" if run_conf.tokenizer else "finetuning_config.run_conf.model",
    )
    setup = modeling.prepare_tokenizer(
        tokenizer, config.data_conf.chat_template_name if chat else None, config.data_conf.missing_pad_token_strategy
    )
    return model_dir, tokenizer, setup


@dataclass
class Plan:
    """Resolved batch size, learning rate and precision."""

    batch: batching.BatchPlan
    learning_rate: float
    dtype: str


def plan_batches(config: CommonConfig, run: Run) -> Plan:
    batch = batching.resolve_batch_size(config.batchsize_conf, run.state.num_processes)
    learning_rate = batching.effective_learning_rate(config.training_args.learning_rate, config.overrides, batch.total)
    dtype = modeling.resolve_dtype(config)
    log.info(
        "batch: total %d = %d process(es) x %d per device x %d accumulation; learning rate %.3g; dtype %s",
        batch.total,
        batch.processes,
        batch.per_device,
        batch.accumulation,
        learning_rate,
        dtype,
    )
    return Plan(batch, learning_rate, dtype)


def seed_everything(config: CommonConfig) -> None:
    """Seed every random generator (Python, NumPy, torch on every device) from `training_args.seed`.

    Called right before each step that draws random numbers outside the Trainer (loading weights a
    checkpoint lacks, the rows of resized embeddings, LoRA's initial weights), so that what it draws
    depends on the seed alone and not on whatever ran before in the process. With
    `training_args.full_determinism` it also switches PyTorch to its deterministic algorithms (GPUs).
    """
    from transformers.trainer_utils import enable_full_determinism, set_seed

    seed = config.training_args.seed
    if config.training_args.full_determinism:
        enable_full_determinism(seed)
    else:
        set_seed(seed)


def load_model(model_dir: Path, config: CommonConfig, dtype: str, tokenizer, setup):
    """The base model with embeddings grown for added tokens and a generation_config ending each turn.

    Returns (model, resized, generation_config). LoRA is applied by the recipe (SFT wraps the model,
    DPO hands the LoRA config to TRL so the reference is the base model with the adapter disabled).
    """
    seed_everything(config)
    model = modeling.load_model(model_dir, config, dtype)
    seed_everything(config)  # the new embedding rows are drawn from the seeded generator
    resized = modeling.resize_embeddings(model, tokenizer)
    modeling.set_generation_config(model, tokenizer, setup.chat_format)
    timeline.mark("model")
    return model, resized, model.generation_config


def common_training_kwargs(config: CommonConfig, plan: Plan, output_dir: Path) -> dict:
    """Keyword arguments of transformers' TrainingArguments that every method shares.

    Trackers are not passed to `report_to`: `llmft.finetune.tracking` attaches them (TensorBoard
    under `<output_dir>/logs/`, MLflow with secrets kept out of its params).
    """
    t = config.training_args
    warmup = t.warmup_steps if t.warmup_steps is not None else (t.warmup_ratio or 0)
    return dict(
        output_dir=str(output_dir),
        per_device_train_batch_size=plan.batch.per_device,
        gradient_accumulation_steps=plan.batch.accumulation,
        per_device_eval_batch_size=plan.batch.eval_per_device,
        learning_rate=plan.learning_rate,
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
        report_to="none",
        run_name=t.run_name,
        seed=t.seed,
        data_seed=t.data_seed,
        full_determinism=t.full_determinism,
        activation_checkpointing=t.gradient_checkpointing,  # transformers' new name for it
        dataloader_num_workers=t.dataloader_num_workers,
        bf16=plan.dtype == "bf16",
        fp16=plan.dtype == "fp16",
        use_cpu=not _cuda_available(),  # with several CPU processes: the gloo group start_run joined
        dataloader_pin_memory=_cuda_available(),  # pinning needs a GPU (and warns on every epoch without one)
        disable_tqdm=True,
    )


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def make_arguments(args_class, **kwargs):
    """TRL's config dataclass from our settings; Hugging Face's own checks become config errors."""
    try:
        return args_class(**kwargs)
    except ValueError as error:
        raise UserError(f"finetuning_config.training_args: {error}") from None


def attach_callbacks(
    trainer, config: CommonConfig, run: Run, plan: Plan, tokenizer, generation_config, callbacks=()
) -> None:
    """Progress lines + metrics.jsonl, model-folder extras, trackers, extra callbacks, checkpoint sync."""
    from transformers.trainer_callback import PrinterCallback

    timeline.mark("trainer")  # built: what remains before training is loading the checkpoint's state
    trainer.remove_callback(PrinterCallback)  # our progress line replaces its raw dicts
    for callback in outputs.make_callbacks(run.output_dir, run.state.is_main_process, tokenizer, generation_config):
        trainer.add_callback(callback)
    for callback in tracking.make_callbacks(
        config, run.output_dir, run.state.is_main_process, extra_params=tracking.plan_params(plan)
    ):
        trainer.add_callback(callback)
    trainer.add_callback(timeline.callback())
    for callback in callbacks:
        trainer.add_callback(callback)
    if run.sync is not None:
        trainer.add_callback(run.sync.callback())


def train(trainer, run: Run):
    """Train (resuming when a checkpoint was found); returns (TrainOutput, runtime seconds)."""
    from llmft.finetune.distributed import check_launch

    # Refuse silent fallbacks: processes that never joined one group, an ignored DeepSpeed/FSDP plugin.
    check_launch(run.distributed_type, str(trainer.accelerator.distributed_type), trainer.accelerator.num_processes)
    if run.resume_from:
        log.info("resuming from %s", run.resume_from)
    started = time.monotonic()
    result = trainer.train(resume_from_checkpoint=str(run.resume_from) if run.resume_from else None)
    return result, time.monotonic() - started


def write_finals(
    config: CommonConfig, trainer, model_dir: Path, output_dir: Path, tokenizer, generation_config, is_main: bool
) -> dict:
    """checkpoint-final/ (full or merged) and checkpoint-final-adapter/ (LoRA); returns what was written."""
    from llmft.finetune.merge import merge_adapter

    final = output_dir / outputs.FINAL
    adapter = output_dir / outputs.FINAL_ADAPTER
    if config.peft_conf.lora() is None:
        trainer.save_model(str(final))  # gathers sharded weights on every process, writes on the main one
        if is_main:
            outputs.save_model_extras(final, tokenizer, generation_config)
            if config.run_conf.merge_adapter:
                log.info(
                    "run_conf.merge_adapter has nothing to merge in full-parameter training: "
                    "checkpoint-final is the trained model"
                )
        return {"final_model": outputs.FINAL, "adapter": None, "merged": False}
    trainer.save_model(str(adapter))
    written = {"final_model": None, "adapter": outputs.FINAL_ADAPTER, "merged": False}
    if is_main:
        outputs.save_model_extras(adapter, tokenizer, generation_config)
        outputs.save_label_map(adapter, trainer.model)
        if config.run_conf.merge_adapter:
            merge_adapter(model_dir, adapter, final)
            outputs.save_model_extras(final, tokenizer, generation_config)
            written.update(final_model=outputs.FINAL, merged=True)
    return written


def base_summary(
    config: CommonConfig,
    trainer,
    result,
    runtime: float,
    plan: Plan,
    setup,
    resized: bool,
    resume_from,
    finals: dict,
    report: dict | None,
) -> dict:
    """The summary.json fields every method writes (a recipe adds its own before `finish`)."""
    output_dir = Path(config.training_args.output_dir)
    history = trainer.state.log_history
    train_losses = [row["loss"] for row in history if "loss" in row]
    eval_losses = [row["eval_loss"] for row in history if "eval_loss" in row]
    tokens = trainer.state.num_input_tokens_seen
    adapter_ok = None
    if finals["adapter"]:
        adapter_ok = outputs.adapter_is_lora_only(output_dir / finals["adapter"])
    notes = []
    if finals["adapter"] and not adapter_ok:
        notes.append(
            "the adapter also holds the resized embedding and output layers (the chat template added "
            "tokens), so it cannot be served as a LoRA adapter on the base model: serve the merged model "
            "(run_conf.merge_adapter: true, or `llmft merge-adapter`)"
        )
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
        "throughput": report,
        "resumed_from": str(resume_from) if resume_from else None,
        "batch": {
            "total": plan.batch.total,
            "processes": plan.batch.processes,
            "per_device": plan.batch.per_device,
            "gradient_accumulation_steps": plan.batch.accumulation,
        },
        "learning_rate": plan.learning_rate,
        "dtype": plan.dtype,
        "chat_template": setup.chat_format.name,
        "end_of_turn_token": setup.chat_format.end_of_turn,
        "added_tokens": setup.added_tokens,
        "pad_token_strategy_applied": setup.pad_strategy,
        "resized_embeddings": resized,
        "outputs": finals,
        "serve": finals["final_model"],
        "adapter_servable_alone": adapter_ok,
        "notes": notes,
        "timeline": timeline.as_dict(),
        "config": config.model_dump(mode="json"),
    }


def throughput_report(trainer, runtime: float, reference_forward: bool) -> dict | None:
    """The throughput block of summary.json; a collective call (every process must make it)."""
    return throughput.report(trainer, runtime, reference_forward=reference_forward)


def finish(run: Run, trainer, summary: dict | None) -> int:
    """Write summary.json (main process, last), wait for every process, flush the checkpoint sync.

    The process group is destroyed while the interpreter is whole: left to exit-time destructors, gloo's worker
    threads can abort a finished rank ("terminate called without an active exception", exit -6, seen with
    DeepSpeed ZeRO-3 on CPU; pytorch/pytorch#179291), and torchrun then reports a finished run as failed.
    """
    if run.state.is_main_process and summary is not None:
        outputs.write_json(run.output_dir / outputs.SUMMARY, summary)
        tracking.log_summary(trainer, summary)
        log.info(
            "done: %d steps, final loss %s, outputs in %s",
            trainer.state.global_step,
            summary["final_train_loss"],
            run.output_dir,
        )
    run.state.wait_for_everyone()
    if run.sync is not None:
        run.sync.finish()
    run.state.destroy_process_group()
    return 0
