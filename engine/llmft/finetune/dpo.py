"""The DPO recipe: `llmft dpo CONFIG` from a validated config to the output folder.

Reads top to bottom, like the SFT recipe and with the same shared steps (`llmft.finetune.recipe`):
check the machine, restore streamed checkpoints, pick the checkpoint to resume, read and validate
the preference pairs (before any model is loaded), prepare the tokenizer and chat template, leave
out (and count) pairs longer than `dpo_args.max_length`, resolve the batch size, load the model,
train with TRL's DPOTrainer, write the finals and summary.json last.

The reference model: with LoRA, TRL gets the base model and the LoRA config, so the reference is
the same weights with the adapter disabled (no second copy in memory). Full-parameter training
keeps a frozen copy, unless `training_args.precompute_ref_log_probs` computes the reference
log-probabilities once before training. `run_conf.model` may be an SFT run's `checkpoint-final/`
(DPO on top of SFT).
"""

from __future__ import annotations

from llmft.errors import UserError
from llmft.finetune import data, recipe, throughput
from llmft.finetune import model as modeling
from llmft.finetune.dpo_config import DpoConfig
from llmft.finetune.templates import TemplateRefusal, fold_system_message, render

# TRL's DPO metrics that summary.json reports first and last values of.
HEADLINE_METRICS = (
    "rewards/margins",
    "rewards/accuracies",
    "rewards/chosen",
    "rewards/rejected",
    "logps/chosen",
    "logps/rejected",
)


def run_dpo(config: DpoConfig, callbacks: list | tuple = ()) -> int:
    """Run direct preference optimisation; return the exit status. `callbacks` are extra TrainerCallbacks."""
    run = recipe.start_run(config)
    if run is None:
        return 0

    # Data first: every bad line is reported before a model is loaded.
    train_records, eval_records = recipe.read_data(config, kind="dpo")
    model_dir, tokenizer, setup = recipe.prepare_tokenizer(config, run)
    max_length = config.dpo_args.max_length
    handling = config.data_conf.system_message_handling
    train_pairs, train_report = encode_pairs(train_records, tokenizer, max_length, "training data", handling)
    eval_pairs, eval_report = encode_pairs(eval_records, tokenizer, max_length, "validation data", handling)

    plan = recipe.plan_batches(config, run)
    args = training_arguments(config, plan, run.output_dir)

    # The model. With LoRA, TRL wraps it (see the module docstring: the reference is the adapter disabled).
    model, resized, generation_config = recipe.load_model(model_dir, config, plan.dtype, tokenizer, setup)
    peft_config = None
    if config.peft_conf.lora() is not None:
        peft_config = modeling.lora_config(model, config, resized)
        if config.quant_conf.quantization_type == "bits-and-bytes":
            from peft import prepare_model_for_kbit_training

            model = prepare_model_for_kbit_training(
                model, use_gradient_checkpointing=config.training_args.gradient_checkpointing
            )

    recipe.seed_everything(config)  # LoRA's initial weights (TRL wraps the model inside its constructor)
    trainer = build_trainer(model, tokenizer, args, train_pairs, eval_pairs, peft_config)
    recipe.attach_callbacks(trainer, config, run, plan, tokenizer, generation_config, callbacks)
    result, runtime = recipe.train(trainer, run)
    report = recipe.throughput_report(
        trainer, runtime, reference_forward=not config.training_args.precompute_ref_log_probs
    )

    finals = recipe.write_finals(
        config, trainer, model_dir, run.output_dir, tokenizer, generation_config, run.state.is_main_process
    )
    summary = None
    if run.state.is_main_process:
        summary = recipe.base_summary(
            config, trainer, result, runtime, plan, setup, resized, run.resume_from, finals, report
        )
        summary["data"] = {"training": train_report.as_dict(), "validation": eval_report.as_dict()}
        summary["dpo"] = dpo_summary(config, trainer)
    return recipe.finish(run, trainer, summary)


def encode_pairs(
    records: list[data.PreferenceRecord], tokenizer, max_length: int, label: str, system_message_handling: str = "keep"
) -> tuple[list[dict], data.LengthReport]:
    """TRL's conversational rows (`prompt`, `chosen`, `rejected` message lists) for the pairs that fit.

    A pair is left out (counted, reported) when its prompt plus chosen or plus rejected answer, as the
    chat template renders it, is longer than `max_length` tokens; TRL then never truncates. A pair the
    template refuses fails the run with its file:line.
    """
    from llmft.progress import Progress

    report = data.LengthReport()
    rows = []
    progress = Progress(f"tokenize {label}", len(records), unit="pairs")
    for record in records:
        prompt = (
            fold_system_message(record.prompt) if system_message_handling == "fold-into-first-user" else record.prompt
        )
        try:
            length = max(_token_count(tokenizer, prompt + answer) for answer in (record.chosen, record.rejected))
        except TemplateRefusal as error:
            raise error.at(record.where) from None
        progress.update(1)
        if length > max_length:
            report.left_out(length, record.where)
            continue
        rows.append({"prompt": prompt, "chosen": record.chosen, "rejected": record.rejected})
    progress.close()
    report.conclude(label, len(records), len(rows), "dpo_args.max_length", max_length, "pair")
    return rows, report


def _token_count(tokenizer, messages: list[dict]) -> int:
    return len(tokenizer(render(tokenizer, messages), add_special_tokens=False)["input_ids"])


def training_arguments(config: DpoConfig, plan: recipe.Plan, output_dir):
    """TRL's DPOConfig: the shared training arguments plus DPO's own."""
    from trl import DPOConfig

    t = config.training_args
    return recipe.make_arguments(
        DPOConfig,
        **recipe.common_training_kwargs(config, plan, output_dir),
        include_num_input_tokens_seen="non_padding",
        beta=t.beta,
        loss_type=[t.loss_type] if isinstance(t.loss_type, str) else list(t.loss_type),
        loss_weights=t.loss_weights,
        label_smoothing=t.label_smoothing,
        precompute_ref_log_probs=t.precompute_ref_log_probs,
        max_length=None,  # pairs that do not fit were left out and counted; nothing is truncated
    )


def build_trainer(model, tokenizer, args, train_pairs: list[dict], eval_pairs: list[dict], peft_config):
    """TRL's DPOTrainer (tokenising with the installed chat template); a rejected setting is a config error."""
    from datasets import Dataset
    from trl import DPOTrainer

    train = Dataset.from_list(train_pairs)
    evaluation = Dataset.from_list(eval_pairs) if eval_pairs else None
    try:
        # ref_model=None: with peft_config the reference is the adapter disabled; without, TRL loads a
        # frozen copy, or none at all when the reference log-probabilities are precomputed.
        return throughput.counting(DPOTrainer)(
            model=model,
            ref_model=None,
            args=args,
            train_dataset=train,
            eval_dataset=evaluation,
            processing_class=tokenizer,
            peft_config=peft_config,
        )
    except (ValueError, NotImplementedError) as error:
        raise UserError(f"finetuning_config: TRL's DPO trainer rejected the settings: {error}") from None


def reference_kind(trainer, precomputed: bool) -> str:
    """How this run computes the reference log-probabilities (for summary.json)."""
    if precomputed:
        return "precomputed before training"
    if trainer.ref_model is None:
        return "the base model with the LoRA adapter disabled (no second copy)"
    return "a frozen copy of the starting model"


def dpo_summary(config: DpoConfig, trainer) -> dict:
    """DPO's summary.json block: settings, reference, and the first and last logged DPO metrics."""
    t = config.training_args
    rows = [row for row in trainer.state.log_history if "rewards/margins" in row]
    metrics = {}
    for key in HEADLINE_METRICS:
        values = [row[key] for row in rows if key in row]
        metrics[key] = {"first": values[0], "last": values[-1]} if values else None
    return {
        "beta": t.beta,
        "loss_type": t.loss_type,
        "reference": reference_kind(trainer, t.precompute_ref_log_probs),
        "metrics": metrics,
    }
