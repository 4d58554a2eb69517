"""The DPO config (`method: dpo`): the SFT config's sections, DPO's training arguments and `dpo_args`.

`training_args.loss_type` accepts exactly the loss types the installed TRL implements. They are read
from TRL's own source at import time (the `loss_type == "..."` branches of `DPOTrainer`, falling back to
the list in `DPOConfig.loss_type`'s help), so the schema follows a TRL upgrade without an edit here.
The source is parsed rather than imported: importing TRL pulls in torch, and this module must stay
light for `helm template`-time tooling and `llmft config-schema`.
"""

from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field

from llmft.finetune.config import SET, CommonConfig, PositiveFloat, PositiveInt, Relation, Section, TrainingArgs


def _trl_source(relative: str) -> str | None:
    spec = importlib.util.find_spec("trl")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / relative
    return path.read_text(encoding="utf-8") if path.is_file() else None


def trl_loss_types() -> tuple[str, ...]:
    """The DPO loss types of the installed TRL, in TRL's order."""
    found: list[str] = []
    source = _trl_source("trainer/dpo_trainer.py")
    if source:
        for node in ast.walk(ast.parse(source)):
            if (
                isinstance(node, ast.Compare)
                and isinstance(node.left, ast.Name)
                and node.left.id == "loss_type"
                and len(node.ops) == 1
                and isinstance(node.ops[0], ast.Eq)
                and isinstance(node.comparators[0], ast.Constant)
                and isinstance(node.comparators[0].value, str)
            ):
                found.append(node.comparators[0].value)
    if not found:
        config_source = _trl_source("trainer/dpo_config.py") or ""
        help_text = re.search(r"loss_type: .*?\"help\": (.*?)\},", config_source, re.DOTALL)
        if help_text:
            found = re.findall(r"`'([a-z0-9_]+)'`", help_text.group(1))
    if not found:
        raise RuntimeError("cannot read the DPO loss types from the installed trl; is trl installed?")
    return tuple(dict.fromkeys(found))


LOSS_TYPES = trl_loss_types()
LossType = Literal[LOSS_TYPES]  # type: ignore[valid-type]


class DpoTrainingArgs(TrainingArgs):
    """Hugging Face TrainingArguments (as for SFT) plus DPO's own (TRL's DPOConfig)."""

    beta: PositiveFloat = Field(
        0.1,
        description="How far the policy may move from the reference model: higher keeps it closer. For "
        "`ipo` it is the regularisation parameter tau.",
    )
    loss_type: LossType | Annotated[list[LossType], Field(min_length=1)] = Field(
        "sigmoid",
        description="DPO loss, one of the installed TRL's: "
        + ", ".join(f"`{name}`" for name in LOSS_TYPES)
        + ". A list combines several (weighted by `loss_weights`).",
    )
    loss_weights: list[PositiveFloat] | None = Field(
        None, description="Weights of the losses in a `loss_type` list (default: 1 each)."
    )
    label_smoothing: Annotated[float, Field(ge=0, lt=0.5)] = Field(
        0.0,
        description="Probability that a preference label is flipped (`robust`); the epsilon of `exo_pair`, "
        "which needs it above 0.",
    )
    precompute_ref_log_probs: bool = Field(
        False,
        description="Compute the reference model's log-probabilities of every pair once before training, "
        "so no reference model is kept in memory (full-parameter training: saves a model "
        "copy). With LoRA the reference is the base model with the adapter disabled, which "
        "needs no copy either way.",
    )


class DpoArgs(Section):
    """Direct preference optimisation settings."""

    max_length: PositiveInt = Field(
        2048,
        description="Longest prompt + answer in tokens (chosen and rejected each). Longer pairs are left "
        "out, counted and reported (log and summary.json), never truncated.",
    )


class DpoConfig(CommonConfig):
    """Direct preference optimisation (`llmft dpo CONFIG`)."""

    method: Literal["dpo"] = Field("dpo", description="Training method: `dpo`.")
    training_args: DpoTrainingArgs = Field(
        default_factory=DpoTrainingArgs,
        description="Optimizer, schedule, logging, evaluation, saving and DPO's beta and loss.",
    )
    dpo_args: DpoArgs = Field(default_factory=DpoArgs, description="DPO settings.")

    RELATIONS: ClassVar[tuple[Relation, ...]] = CommonConfig.RELATIONS + (
        Relation(
            ("data_conf", "training_data", "datasets", "[]", "column_map"),
            SET,
            ("method",),
            ("sft",),
            "maps instruction rows to SFT chat messages; DPO data needs prompt_messages, chosen_messages and "
            "rejected_messages (or prompt, chosen, rejected): remove it",
        ),
    )

    def problems(self) -> list[tuple[tuple, str, Any]]:
        found = super().problems()
        args = self.training_args
        losses = [args.loss_type] if isinstance(args.loss_type, str) else list(args.loss_type)
        if args.loss_weights is not None and len(args.loss_weights) != len(losses):
            found.append(
                (
                    ("training_args", "loss_weights"),
                    f"needs one weight per loss_type ({len(losses)}: {', '.join(losses)})",
                    args.loss_weights,
                )
            )
        if "exo_pair" in losses and args.label_smoothing == 0:
            found.append(
                (
                    ("training_args", "label_smoothing"),
                    "the exo_pair loss needs label_smoothing above 0 (the EXO paper suggests 0.001)",
                    args.label_smoothing,
                )
            )
        return found
