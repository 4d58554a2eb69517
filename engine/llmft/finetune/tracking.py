"""Experiment tracking: metrics.jsonl always; TensorBoard and MLflow when the config asks.

- **TensorBoard** (`training_args.report_to: [tensorboard]`): event files under `<output_dir>/logs/`
  (transformers' TensorBoardCallback with our writer).
- **MLflow** (on when the `tracking` section is set; `report_to: [mlflow]` requires it): one MLflow run
  per training run, through `mlflow.MlflowClient` (no global active run, no environment variables).
  Params: the resolved config flattened to dotted keys plus the resolved batch plan, with anything
  that looks like a secret redacted (keys naming a token, secret, password or key, and the
  `user:password@` part of URLs). Metrics: every logging and evaluation step (the same numbers as
  metrics.jsonl, e.g. `loss`, `grad_norm`, `rewards/margins`), then the summary's headline numbers.
  The run id is kept in `<output_dir>/mlflow_run.json`, so a resumed run continues the same MLflow run.

Only the main process tracks. Transformers' own MLflow integration is not used: it would log every
TrainingArguments field and the model config as params, and needs environment variables.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from llmft.errors import UserError
from llmft.finetune.config import CommonConfig

log = logging.getLogger("llmft.finetune.tracking")

RUN_FILE = "mlflow_run.json"
MAX_PARAM_LENGTH = 6000  # MLflow's limit for a param value
SECRET_KEY = re.compile(r"(token|secret|password|passwd|credential|api[_-]?key|access[_-]?key)", re.IGNORECASE)
URL_USERINFO = re.compile(
    r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^/@:\s]*)(:(?P<password>[^/@\s]*))?@", re.IGNORECASE
)
REDACTED = "***"
# Summary numbers logged as metrics at the end (dotted paths into summary.json).
SUMMARY_METRICS = (
    "final_train_loss",
    "final_eval_loss",
    "mean_train_loss",
    "runtime_seconds",
    "tokens_seen",
    "throughput.effective_tokens_per_second",
    "throughput.padding_fraction",
    "throughput.mfu",
    "throughput.peak_memory.cpu_rss_peak_bytes",
    "throughput.peak_memory.cuda_max_allocated_bytes",
)


# ------------------------------------------------------------------------------------------ params


def redact(key: str, value: Any) -> Any:
    """`***` for a value whose key names a secret; URLs lose their `user:password@` part's password."""
    if value is not None and SECRET_KEY.search(key.rsplit(".", 1)[-1]):
        return REDACTED
    if isinstance(value, str):
        return URL_USERINFO.sub(
            lambda m: f"{m['scheme']}{m['user']}:{REDACTED}@" if m["password"] is not None else m.group(0), value
        )
    return value


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts and lists to `a.b.0.c` keys (MLflow param keys allow no brackets)."""
    items: Iterable[tuple[Any, Any]]
    if isinstance(data, dict):
        items = data.items()
    elif isinstance(data, list) and any(isinstance(item, (dict, list)) for item in data):
        items = enumerate(data)
    else:
        return {prefix: data}
    flat: dict[str, Any] = {}
    for key, value in items:
        flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def config_params(config: CommonConfig, extra: dict | None = None) -> dict[str, str]:
    """The params an MLflow run records: the config (and `extra`), flattened, secrets redacted."""
    flat = flatten(config.model_dump(mode="json"))
    flat.update(extra or {})
    params = {}
    for key, value in flat.items():
        value = redact(key, value)
        text = value if isinstance(value, str) else json.dumps(value)
        params[key] = text[:MAX_PARAM_LENGTH]
    return params


def plan_params(plan) -> dict[str, Any]:
    """The resolved batch plan, learning rate and precision (what the config leaves to the engine)."""
    return {
        "resolved.total_train_batch_size": plan.batch.total,
        "resolved.processes": plan.batch.processes,
        "resolved.per_device_train_batch_size": plan.batch.per_device,
        "resolved.gradient_accumulation_steps": plan.batch.accumulation,
        "resolved.learning_rate": plan.learning_rate,
        "resolved.dtype": plan.dtype,
    }


def tracking_uri(text: str) -> str:
    """A local folder becomes an sqlite store `<folder>/mlflow.db`; URLs and `sqlite:`/`file:` URIs stay as given.

    (MLflow 3 keeps its plain-folder "file store" in maintenance mode and refuses it by default.)
    """
    if text.startswith(("/", "./", "../", "~")):
        folder = Path(text).expanduser().resolve()
        folder.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{folder / 'mlflow.db'}"
    return text


# ------------------------------------------------------------------------------------------ callbacks


def make_callbacks(config: CommonConfig, output_dir: Path, is_main: bool, extra_params: dict | None = None) -> list:
    """The tracker callbacks the config asks for (none on processes other than the main one)."""
    if not is_main:
        return []
    found = []
    if "tensorboard" in config.training_args.report_targets():
        from torch.utils.tensorboard import SummaryWriter
        from transformers.integrations import TensorBoardCallback

        from llmft.run_layout import LOGS

        found.append(TensorBoardCallback(tb_writer=SummaryWriter(log_dir=str(output_dir / LOGS))))
    if config.tracking is not None:
        found.append(mlflow_callback(config, output_dir, extra_params))
    return found


def mlflow_callback(config: CommonConfig, output_dir: Path, extra_params: dict | None = None):
    """A TrainerCallback recording the run in MLflow; the experiment is checked now, before training."""
    import mlflow
    from transformers import TrainerCallback

    from llmft.finetune.outputs import SKIPPED_LOG_KEYS

    tracking = config.tracking
    if tracking is None:
        raise ValueError("mlflow_callback: the config has no tracking section")
    uri = tracking_uri(tracking.mlflow_server_uri)
    shown = redact("uri", uri)
    try:
        client = mlflow.MlflowClient(tracking_uri=uri)
        experiment = client.get_experiment_by_name(tracking.experiment_name)
        experiment_id = experiment.experiment_id if experiment else client.create_experiment(tracking.experiment_name)
    except Exception as error:  # noqa: BLE001 - MLflow raises many kinds (connection, permissions, bad URI)
        raise UserError(
            f"finetuning_config.tracking.mlflow_server_uri: cannot use MLflow at {shown} "
            f"({type(error).__name__}: {redact('uri', str(error))[:300]}); check the URI and that the "
            f"server is reachable, got {shown!r}"
        ) from None
    run_file = output_dir / RUN_FILE
    run_name = tracking.run_name or config.training_args.run_name or output_dir.resolve().name
    params = config_params(config, extra_params)

    class MlflowTracking(TrainerCallback):
        """Starts (or, on resume, continues) the MLflow run and logs every metrics row into it."""

        def __init__(self) -> None:
            self.client = client
            self.run_id: str | None = None

        def on_train_begin(self, args, state, control, **kwargs):
            from mlflow.entities import Param

            previous = _read_run_file(run_file)
            if state.global_step > 0 and previous.get("uri") == uri and previous.get("run_id"):
                self.run_id = previous["run_id"]
                self.client.update_run(self.run_id, status="RUNNING")
                log.info(
                    "MLflow: continuing run %s in experiment %r at %s", self.run_id, tracking.experiment_name, shown
                )
                return
            run = self.client.create_run(
                experiment_id,
                run_name=run_name,
                tags={"llmft.method": config.method, "llmft.output_dir": str(output_dir)},
            )
            self.run_id = run.info.run_id
            run_file.write_text(json.dumps({"uri": uri, "run_id": self.run_id}) + "\n")
            items = [Param(key, value) for key, value in params.items()]
            for start in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
                self.client.log_batch(self.run_id, params=items[start : start + 100])
            log.info(
                "MLflow: run %s (%s) in experiment %r at %s", self.run_id, run_name, tracking.experiment_name, shown
            )

        def on_log(self, args, state, control, logs=None, **kwargs):
            if self.run_id is None or not logs or "train_loss" in logs:
                return
            metrics = {
                key: float(value)
                for key, value in logs.items()
                if key not in SKIPPED_LOG_KEYS and isinstance(value, (int, float)) and not isinstance(value, bool)
            }
            if "loss" in logs:
                metrics["tokens_seen"] = float(state.num_input_tokens_seen)
            self.log_metrics(metrics, state.global_step)

        def log_metrics(self, metrics: dict[str, float], step: int) -> None:
            from mlflow.entities import Metric

            assert self.run_id is not None, "called once on_train_begin has started the run"
            now = _now_ms()
            items = [Metric(_metric_name(key), value, now, step) for key, value in metrics.items()]
            for start in range(0, len(items), 1000):
                self.client.log_batch(self.run_id, metrics=items[start : start + 1000])

        def finish(self, summary: dict, step: int) -> None:
            if self.run_id is None:
                return
            numbers = {}
            for path in SUMMARY_METRICS:
                value: Any = summary
                for part in path.split("."):
                    value = value.get(part) if isinstance(value, dict) else None
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    numbers[f"summary.{path}"] = float(value)
            self.log_metrics(numbers, step)
            self.client.set_terminated(self.run_id, status="FINISHED")

    return MlflowTracking()


def log_summary(trainer, summary: dict) -> None:
    """Record the summary's headline numbers in MLflow and close the run (no-op without MLflow)."""
    for callback in trainer.callback_handler.callbacks:
        if type(callback).__name__ == "MlflowTracking":
            callback.finish(summary, trainer.state.global_step)


def _read_run_file(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _metric_name(key: str) -> str:
    """MLflow metric names allow letters, digits, `_ - . / ` and spaces; anything else becomes `_`."""
    return re.sub(r"[^A-Za-z0-9_\-./ ]", "_", key)


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)
