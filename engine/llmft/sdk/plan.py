"""From `train` / `tune` / `serve` arguments to a job plan: the charts to run, in order, with their values.

Everything is checked here, before a backend touches anything: the job name, every location (by the
engine's location rule), the fine-tuning config (the engine's models and messages, exactly what `llmft
train` and the chart's ConfigMap would see), the experiment spec (`llmft.tune.spec.load_spec`), and then
every chart is rendered with the real Helm engine (its render-time checks). Backends get `Plan`s whose
steps carry the rendered manifests, and apply exactly those.

Staging: a model or dataset that is not in the bucket yet gets an initializer step that runs the staging
chart (download-model-to-bucket for `hf://` and local folders, download-data-to-bucket for local JSONL files
and data scripts); the training step reads the bucket locations they write.
"""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from llmft.dataformats import RECORD_KINDS
from llmft.errors import UserError
from llmft.sdk.jobs import DATASET_INITIALIZER, MODEL_INITIALIZER

JOB_LABEL = "sdk.llmft.dev/job"
STEP_LABEL = "sdk.llmft.dev/step"
KIND_ANNOTATION = "sdk.llmft.dev/kind"
REMOTE_ANNOTATION = "sdk.llmft.dev/checkpoints-remote"
TOTAL_ANNOTATION = "sdk.llmft.dev/total-steps"
ORDER_ANNOTATION = "sdk.llmft.dev/order"
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?$"
# A local JSONL file travels inside the data chart's ConfigMap (its data script writes it out): Kubernetes
# caps a ConfigMap at 1 MiB, so bigger files go to the bucket first.
MAX_EMBEDDED_BYTES = 700 * 1024
HUB = "hf://"


@dataclass(frozen=True)
class DataScript:
    """A data script for the download-data chart: Python that writes JSONL files into `$DATASETS_DIR`.

    `outputs` names the files it writes that training reads (default `train.jsonl`).
    """

    script: str
    outputs: tuple[str, ...] = ("train.jsonl",)
    pip_packages: tuple[str, ...] = ()
    skip_invalid: bool = False

    @classmethod
    def from_file(cls, path: str | Path, **options: Any) -> DataScript:
        file = Path(path)
        if not file.is_file():
            raise UserError(f"data script {path} does not exist")
        return cls(script=file.read_text(), **options)


@dataclass(frozen=True)
class Resources:
    """Requests of one training node (pod): CPUs and memory (`"10Gi"`, `"10G"` or GiB as a number).

    The finetune chart asks for them per process (`cpusPerGpu`, `memoryPerGpu`); the SDK divides by the
    processes per node and rounds up.
    """

    cpu: int | None = None
    memory: str | int | None = None


@dataclass
class StepPlan:
    name: str
    chart: str  # chart folder name under charts/
    release: str
    values: dict
    documents: list[dict] = field(default_factory=list)  # the rendered manifests
    local_command: list[str] | None = None  # locally, a command instead of `llmft local CHART`


@dataclass
class Plan:
    name: str
    kind: str  # train, tune, serve
    steps: list[StepPlan]
    checkpoints_remote: str | None = None
    total_steps: int | None = None
    spec: dict | None = None  # tune: the experiment spec
    port: int | None = None  # serve (local)


def charts_root(explicit: str | Path | None = None) -> Path:
    """The charts folder: `explicit`, else the repository's `charts/` next to the engine."""
    root = Path(explicit) if explicit else Path(__file__).resolve().parents[3] / "charts"
    if not (root / "llm-finetune" / "Chart.yaml").is_file():
        raise UserError(f"{root} holds no llm-finetune chart: pass Client(charts_dir=...) pointing at llmft's charts/")
    return root


def check_name(name: str, what: str = "job name") -> str:
    if not isinstance(name, str) or not re.match(NAME_PATTERN, name):
        raise UserError(
            f"{what} {name!r}: must be lower-case letters, digits and '-' (start and end with a letter or digit), "
            "at most 40 characters, e.g. lora-r8"
        )
    return name


def _dump(section: BaseModel | dict | None, what: str) -> dict:
    if section is None:
        return {}
    if isinstance(section, BaseModel):
        return section.model_dump(mode="json", exclude_unset=True)
    if isinstance(section, dict):
        return json.loads(json.dumps(section))
    raise UserError(
        f"{what}: expected the engine's model (llmft.finetune.config) or a dict, got {type(section).__name__}"
    )


def _merge(base: dict, override: dict) -> dict:
    from llmft.charts import merge_maps

    return merge_maps(base, override)


def _labels(job: str, step: str) -> dict:
    return {JOB_LABEL: job, STEP_LABEL: step}


# ------------------------------------------------------------------------------------------ staging


@dataclass
class _Staging:
    """Initializer steps and the bucket locations training reads."""

    job: str
    bucket: str
    local_backend: bool
    record_kind: str | None  # what the data steps hold every record to (`--kind`); None: detected per file
    steps: list[StepPlan] = field(default_factory=list)
    data_steps: int = 0

    def model(self, model: str) -> str:
        if not isinstance(model, str) or not model.strip():
            raise UserError("model: give hf://org/name, a bucket folder (bucket/path) or a local folder (./path)")
        if model.startswith(HUB):
            repo = model[len(HUB) :].strip("/")
            if repo.count("/") != 1 or not all(repo.split("/")):
                raise UserError(f"model {model!r}: a Hub model is hf://Organization/ModelName")
            destination = f"{self.bucket}/models/{repo}"
            self._model_step(model, destination)
            return destination
        from llmft.storage import parse_location

        location = parse_location(model)
        if not location.is_local:
            return model
        folder = location.path.expanduser().resolve()
        if not (folder / "config.json").is_file():
            raise UserError(f"model {model!r}: not a model folder (no config.json in {folder})")
        if not self.local_backend:
            raise UserError(
                f"model {model!r} is a folder on this machine, which the cluster's pods cannot read: copy it to the "
                f"bucket first (llmft storage cp {model} {self.bucket}/models/{folder.name}) and pass that location"
            )
        destination = f"{self.bucket}/models/{folder.name}"
        self._model_step(str(folder), destination)
        return destination

    def _model_step(self, source: str, destination: str) -> None:
        values = {"modelID": source, "bucketModelPath": destination, "labels": _labels(self.job, MODEL_INITIALIZER)}
        self.steps.append(StepPlan(MODEL_INITIALIZER, "download-model-to-bucket", f"{self.job}-model", values))

    def dataset(self, item: Any) -> list[dict]:
        """DatasetSpec entries (dicts) for one `datasets` item."""
        from llmft.finetune.config import DatasetSpec

        if isinstance(item, DataScript):
            folder = self._data_step(item.script, list(item.pip_packages), item.skip_invalid, self.record_kind)
            return [{"path": f"{folder}/{name}"} for name in item.outputs]
        if isinstance(item, (str, Path)):
            entry: dict = {"path": str(item)}
        elif isinstance(item, DatasetSpec):
            entry = item.model_dump(mode="json", exclude_none=True)
        elif isinstance(item, dict):
            entry = dict(item)
        else:
            raise UserError(
                f"datasets: each item is a location (str), a DatasetSpec or a DataScript, got {type(item).__name__}"
            )
        path = str(entry.get("path", ""))
        if isinstance(item, Path) or path.startswith(("/", "./", "../", "~")):
            file = Path(path).expanduser()
            if not file.is_file():
                raise UserError(f"dataset {path}: no such file")
            size = file.stat().st_size
            if size > MAX_EMBEDDED_BYTES:
                raise UserError(
                    f"dataset {path} is {size} bytes, more than a data step can carry ({MAX_EMBEDDED_BYTES}): copy it "
                    f"to the bucket first (llmft storage cp {path} {self.bucket}/datasets/{file.name}) and pass that"
                )
            script = _copy_script(file.name, file.read_text())
            # Columns a column_map renames are not the data commands' default names: let them detect the format.
            folder = self._data_step(script, [], False, None if entry.get("column_map") else self.record_kind)
            entry["path"] = f"{folder}/{file.name}"
        return [entry]

    def _data_step(self, script: str, pip: list[str], skip_invalid: bool, kind: str | None) -> str:
        index = self.data_steps
        self.data_steps += 1
        name = DATASET_INITIALIZER if index == 0 else f"{DATASET_INITIALIZER}-{index}"
        release = f"{self.job}-data" if index == 0 else f"{self.job}-data-{index}"
        folder = f"{self.bucket}/datasets/{self.job}" + ("" if index == 0 else f"-{index}")
        values: dict = {"dataScript": script, "bucketDataDir": folder, "labels": _labels(self.job, name)}
        if pip:
            values["pipPackages"] = pip
        if skip_invalid:
            values["skipInvalid"] = True
        if kind:
            values["dataKind"] = kind
        self.steps.append(StepPlan(name, "download-data-to-bucket", release, values))
        return folder


def record_kind(method: str, config: dict | None) -> str | None:
    """The record format of every dataset: DPO pairs, or the SFT `task`'s records (`llmft.dataformats`)."""
    if method == "dpo":
        return "dpo"
    task = config.get("task", "chat") if isinstance(config, dict) else "chat"
    kind = "sft" if task == "chat" else task
    return kind if kind in RECORD_KINDS else None  # a wrong task is named by the config's own check


def _copy_script(name: str, text: str) -> str:
    """A data script that writes `text` to $DATASETS_DIR/name (the download-data chart validates it)."""
    return (
        f'"""Written by the llmft SDK: the local file {name}, to be validated and uploaded."""\n'
        "import os\n\n"
        f"TEXT = {text!r}\n"
        'out = os.environ.get("DATASETS_DIR", "/downloads/datasets")\n'
        "os.makedirs(out, exist_ok=True)\n"
        f"with open(os.path.join(out, {name!r}), 'w') as handle:\n"
        "    handle.write(TEXT)\n"
    )


# ------------------------------------------------------------------------------------------ config


def finetuning_config(
    method: str,
    datasets: list[dict],
    validation: Any,
    staging: _Staging,
    sections: dict[str, Any],
    config: dict | None,
) -> dict:
    """The `finetuning_config` values: `config` (any keys), then the typed sections, then the datasets."""
    merged = _dump(config, "config")
    for key, section in sections.items():
        if section is not None:
            merged = _merge(merged, {key: _dump(section, key)})
    merged["method"] = method
    data_conf = dict(merged.get("data_conf") or {})
    training = dict(data_conf.get("training_data") or {})
    training["datasets"] = datasets
    data_conf["training_data"] = training
    if validation is not None:
        data_conf["validation_data"] = _validation(validation, staging)
    merged["data_conf"] = data_conf
    return merged


def _validation(validation: Any, staging: _Staging) -> dict:
    from llmft.finetune.config import ValidationData

    if isinstance(validation, ValidationData):
        return validation.model_dump(mode="json", exclude_none=True)
    if isinstance(validation, float):
        return {"type": "AUTO_SPLIT", "ratio": validation}
    if isinstance(validation, (str, Path, DataScript)):
        validation = [validation]
    if isinstance(validation, (list, tuple)):
        entries = [entry for item in validation for entry in staging.dataset(item)]
        return {"type": "CONCATENATION", "datasets": entries}
    if isinstance(validation, dict):
        return dict(validation)
    raise UserError(
        "validation: a fraction of the training data (0.1), a list of datasets, or ValidationData, "
        f"got {type(validation).__name__}"
    )


def engine_view(values: dict) -> dict:
    """What the finetune chart's ConfigMap gives the engine (`llm-finetune.engineConfig`), for validation."""
    config = json.loads(json.dumps(values.get("finetuning_config") or {}))
    run = dict(config.get("run_conf") or {})
    run["model"] = values.get("basemodel")
    run["merge_adapter"] = bool(values.get("mergeAdapter"))
    if values.get("checkpointsRemote"):
        run["checkpoints_remote"] = values["checkpointsRemote"]
    config["run_conf"] = run
    config.setdefault("training_args", {})["output_dir"] = "/checkpoints"
    processes = max(1, int(values.get("finetuningGpus", 1)))
    config["launch_conf"] = {"num_processes": processes, "distributed_type": values.get("distributedType")}
    return config


def _resources(resources: Resources | dict | None, processes: int) -> dict:
    if resources is None:
        return {}
    if isinstance(resources, dict):
        unknown = set(resources) - {"cpu", "memory"}
        if unknown:
            raise UserError(f"resources: unknown keys {sorted(unknown)}; give cpu and memory (per node)")
        resources = Resources(**resources)
    values: dict = {}
    if resources.cpu is not None:
        if not isinstance(resources.cpu, int) or resources.cpu < 1:
            raise UserError(f"resources.cpu: a whole number of CPUs per node, got {resources.cpu!r}")
        values["cpusPerGpu"] = -(-resources.cpu // processes)
    if resources.memory is not None:
        gib = _gib(resources.memory)
        values["memoryPerGpu"] = -(-gib // processes)
    return values


def _gib(memory: str | int) -> int:
    if isinstance(memory, int) and memory > 0:
        return memory
    match = re.fullmatch(r"([0-9]+)\s*(Gi|G|Ti|T)?", str(memory).strip())
    if not match:
        raise UserError(f"resources.memory: give GiB as a number or a quantity like '10Gi', got {memory!r}")
    number, unit = int(match.group(1)), match.group(2) or "Gi"
    return number * (1024 if unit in ("Ti", "T") else 1)


# ------------------------------------------------------------------------------------------ plans


def plan_train(
    *,
    name: str,
    model: str,
    datasets: Sequence[Any],
    method: str,
    validation: Any,
    sections: dict[str, Any],
    config: dict | None,
    nodes: int,
    gpus_per_node: int,
    resources: Resources | dict | None,
    distributed_type: str | None,
    checkpoints_remote: str | None,
    merge: bool,
    values: dict | None,
    bucket: str,
    local_backend: bool,
) -> Plan:
    from llmft.finetune.config import load_config

    check_name(name)
    if method not in ("sft", "dpo"):
        raise UserError(f"method: must be sft or dpo, got {method!r}")
    if not isinstance(nodes, int) or nodes < 1:
        raise UserError(f"nodes: a whole number of training nodes, at least 1, got {nodes!r}")
    if not isinstance(gpus_per_node, int) or gpus_per_node < 0:
        raise UserError(f"gpus_per_node: a whole number, 0 for one CPU process, got {gpus_per_node!r}")
    if isinstance(datasets, (str, Path, DataScript)) or not datasets:
        datasets = [datasets] if datasets else []
    if not datasets:
        raise UserError("datasets: give at least one (a bucket JSONL, a local JSONL file or a DataScript)")
    staging = _Staging(name, bucket, local_backend, record_kind(method, config))
    basemodel = staging.model(model)
    entries = [entry for item in datasets for entry in staging.dataset(item)]
    remote = checkpoints_remote or f"{bucket}/experiments/{name}"
    chart_values: dict = {
        "basemodel": basemodel,
        "checkpointsRemote": remote,
        "mergeAdapter": bool(merge),
        "finetuningGpus": gpus_per_node,
        "distributedType": distributed_type
        or ("auto-single-process" if gpus_per_node <= 1 and nodes == 1 else "auto-ddp"),
        "finetuning_config": finetuning_config(method, entries, validation, staging, sections, config),
    }
    if nodes != 1:
        chart_values["finetuningNodes"] = nodes
    chart_values.update(_resources(resources, max(1, gpus_per_node)))
    chart_values = _merge(chart_values, values or {})
    load_config(engine_view(chart_values))  # the engine's models and messages, before anything starts
    total = (chart_values["finetuning_config"].get("training_args") or {}).get("max_steps")
    chart_values["labels"] = _merge(chart_values.get("labels") or {}, _labels(name, "node-0"))
    chart_values["annotations"] = _merge(
        chart_values.get("annotations") or {},
        {KIND_ANNOTATION: "train", REMOTE_ANNOTATION: remote, TOTAL_ANNOTATION: str(total or "")},
    )
    steps = staging.steps + [StepPlan("node-0", "llm-finetune", name, chart_values)]
    return Plan(name, "train", steps, checkpoints_remote=remote, total_steps=total if isinstance(total, int) else None)


def plan_tune(
    *,
    name: str,
    model: str,
    datasets: Sequence[Any],
    method: str,
    validation: Any,
    sections: dict[str, Any],
    config: dict | None,
    search_space: dict,
    objective_metric: str,
    direction: str,
    algorithm: str,
    algorithm_settings: dict | None,
    seed: int | None,
    early_stopping: str,
    early_stopping_settings: dict | None,
    max_trial_count: int,
    parallel_trial_count: int,
    max_failed_trial_count: int,
    additional_metrics: Sequence[str],
    resources_per_trial: dict | None,
    checkpoints_remote: str | None,
    merge: bool,
    values: dict | None,
    bucket: str,
    local_backend: bool,
) -> Plan:
    from llmft.sdk.search import Distribution
    from llmft.tune.spec import load_spec

    check_name(name, "experiment name")
    if isinstance(datasets, (str, Path, DataScript)) or not datasets:
        datasets = [datasets] if datasets else []
    if not datasets:
        raise UserError("datasets: give at least one (a bucket JSONL, a local JSONL file or a DataScript)")
    if not isinstance(search_space, dict) or not search_space:
        raise UserError(
            "search_space: a dict of config key -> search.double(...) / search.int(...) / search.categorical(...)"
        )
    staging = _Staging(name, bucket, local_backend, record_kind(method, config))
    basemodel = staging.model(model)
    entries = [entry for item in datasets for entry in staging.dataset(item)]
    remote = checkpoints_remote or f"{bucket}/experiments/{name}"
    space = []
    for key, distribution in search_space.items():
        if not isinstance(distribution, Distribution):
            raise UserError(f"search_space[{key!r}]: use search.double, search.int or search.categorical")
        full = key if key.startswith("finetuning_config.") else f"finetuning_config.{key}"
        space.append(distribution.parameter(full))
    tune: dict = {
        "objective": {"metric": objective_metric, "direction": direction},
        "search_space": space,
        "algorithm": {"name": algorithm},
        "early_stopping": {"name": early_stopping},
        "max_trial_count": max_trial_count,
        "parallel_trial_count": parallel_trial_count,
        "max_failed_trial_count": max_failed_trial_count,
    }
    if additional_metrics:
        tune["objective"]["additional_metrics"] = list(additional_metrics)
    if algorithm_settings:
        tune["algorithm"]["settings"] = dict(algorithm_settings)
    if seed is not None:
        tune["algorithm"]["seed"] = seed
    if early_stopping_settings:
        tune["early_stopping"]["settings"] = dict(early_stopping_settings)
    if resources_per_trial:
        tune["resources_per_trial"] = dict(resources_per_trial)
    spec = {
        "name": name,
        "basemodel": basemodel,
        "checkpointsRemote": remote,
        "mergeAdapter": bool(merge),
        "finetuning_config": finetuning_config(method, entries, validation, staging, sections, config),
        "tune": tune,
    }
    load_spec(spec)  # `llmft tune`'s checks and messages, before anything starts
    chart_values = _merge(spec, values or {})
    chart_values["labels"] = _merge(chart_values.get("labels") or {}, _labels(name, "tuner"))
    chart_values["annotations"] = _merge(
        chart_values.get("annotations") or {}, {KIND_ANNOTATION: "tune", REMOTE_ANNOTATION: remote}
    )
    tuner = StepPlan("tuner", "llm-tune", name, chart_values)
    return Plan(name, "tune", staging.steps + [tuner], checkpoints_remote=remote, spec=spec)


def plan_serve(*, name: str, model: str, values: dict | None, adapters: dict | None) -> Plan:
    from llmft.storage import parse_location

    check_name(name, "server name")
    if len(name) > 44:
        raise UserError(f"server name {name!r}: at most 44 characters (the Service is llm-inference-vllm-<name>)")
    if not isinstance(model, str) or not model:
        raise UserError("model: a bucket location of a servable checkpoint, a local folder, or hf://org/name")
    if not model.startswith(HUB):
        parse_location(model)
    chart_values: dict = {"model": model, "labels": _labels(name, "server")}
    if adapters:
        chart_values["adapters"] = dict(adapters)
    chart_values["annotations"] = {KIND_ANNOTATION: "serve"}
    chart_values = _merge(chart_values, values or {})
    return Plan(name, "serve", [StepPlan("server", "llm-inference-vllm", name, chart_values)])


def render(plan: Plan, charts: Path, namespace: str, common_values: dict | None = None) -> Plan:
    """Render every step's chart with the real Helm engine (its render-time checks run here)."""
    from llmft.charts import render_chart

    for index, step in enumerate(plan.steps):
        step.values = _merge(common_values or {}, step.values)
        step.values["annotations"] = _merge(step.values.get("annotations") or {}, {ORDER_ANNOTATION: str(index)})
        step.documents = render_chart(
            charts / step.chart, step.values, release_name=step.release, namespace=namespace
        ).documents
    return plan


def bucket_child(base: str, name: str) -> str:
    return posixpath.join(base.rstrip("/"), name)
