"""Files of the llm-finetune chart that are generated, never hand-edited.

- `charts/llm-finetune/values.schema.json`: the chart's own keys plus, under
  `finetuning_config`, the engine's config schema (`llmft config-schema sft|dpo`),
  chosen by `method`. One source of truth: a typo fails at `helm template`.
- `charts/llm-finetune/files/presets/<preset>/`: the accelerate (and DeepSpeed)
  files of each `distributedType`, from `llmft.finetune.distributed`.

Regenerate with `make chart-files` (`python -m llmft.chart_files`); a test fails when
the committed files differ from what this module produces.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

CHART = "llm-finetune"
PRESET_PROCESSES = 2  # overridden at launch by `llmft train --num-processes`
QUANTITY = {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|K|M|G|T|P)?$"}
NAME = {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"}


def _object(properties: dict, required: list[str] | None = None) -> dict:
    schema = {"type": "object", "additionalProperties": False, "properties": properties}
    if required:
        schema["required"] = required
    return schema


# Helm's --set parses integers but leaves floats as strings (`--set ...learning_rate=2e-5` gives "2e-5").
# The engine reads numeric strings as numbers, so the chart accepts them where a number is expected.
NUMERIC_STRING = {"type": "string", "pattern": r"^[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?$"}


def _accept_numeric_strings(schema):
    if isinstance(schema, list):
        return [_accept_numeric_strings(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    schema = {key: _accept_numeric_strings(value) for key, value in schema.items()}
    if schema.get("type") == "number":
        description = schema.pop("description", None)
        schema = {"anyOf": [schema, NUMERIC_STRING]}
        if description:
            schema["description"] = description
    return schema


def _finetuning_config_schema() -> dict:
    from llmft.errors import UserError
    from llmft.finetune.config import METHODS, config_json_schema

    schemas = {}
    for method in METHODS:
        try:
            schemas[method] = config_json_schema(method)
        except UserError:  # a method this build does not have yet
            continue
    for schema in schemas.values():
        schema.pop("$schema", None)
        schema.pop("title", None)
        # The chart fills run_conf.model from `basemodel`, so a values file may omit it.
        run_conf = schema["properties"].get("run_conf", {})
        if "model" in run_conf.get("required", []):
            run_conf["required"] = [key for key in run_conf["required"] if key != "model"]
            if not run_conf["required"]:
                run_conf.pop("required")
        if "run_conf" in schema.get("required", []):
            schema["required"] = [key for key in schema["required"] if key != "run_conf"]
    schemas = {method: _accept_numeric_strings(schema) for method, schema in schemas.items()}
    if set(schemas) == {"sft"}:
        return schemas["sft"]
    return {
        "description": "The fine-tuning engine's configuration; `method` selects the SFT or DPO schema.",
        "type": "object",
        "if": {"properties": {"method": {"const": "dpo"}}, "required": ["method"]},
        "then": schemas["dpo"] if "dpo" in schemas else {},
        "else": schemas["sft"],
    }


def values_schema() -> dict:
    from llmft.finetune.distributed import PRESETS

    secret_ref = _object({"name": {"type": "string"}, "key": {"type": "string"}})
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "llm-finetune values",
        **_object({
            "basemodel": {"type": "string", "minLength": 1, "description": "Base model: bucket/path, s3://..., or hf://org/name."},
            "checkpointsRemote": {"type": "string", "description": "Bucket location for checkpoints and outputs."},
            "logsRemote": {"type": "string"},
            "finetuningGpus": {"type": "integer", "minimum": 0, "description": "GPUs (processes); 0 = one CPU process."},
            "gpuResourceName": {"type": "string", "minLength": 1},
            "memoryPerGpu": {"type": "integer", "minimum": 1, "description": "GiB per GPU."},
            "cpusPerGpu": {"type": "integer", "minimum": 1},
            "distributedType": {"type": "string", "enum": list(PRESETS)},
            "customAccelerateConfig": {"type": "string"},
            "mergeAdapter": {"type": "boolean"},
            "runTensorboard": {"type": "boolean"},
            "finetuning_config": _finetuning_config_schema(),
            "hfTokenSecret": secret_ref,
            "bucketStorageHost": {"type": "string", "minLength": 1},
            "bucketCredentialsSecret": _object({"name": {"type": "string", "minLength": 1},
                                                "accessKeyKey": {"type": "string", "minLength": 1},
                                                "secretKeyKey": {"type": "string", "minLength": 1}},
                                               ["name", "accessKeyKey", "secretKeyKey"]),
            "storageClass": {"type": "string"},
            "downloadsReservedSize": QUANTITY,
            "checkpointsReservedSize": QUANTITY,
            "sharedMemorySize": QUANTITY,
            "backoffLimit": {"type": "integer", "minimum": 0},
            "activeDeadlineSeconds": {"type": ["integer", "null"], "minimum": 1},
            "ttlSecondsAfterFinished": {"type": "integer", "minimum": 0},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
            "nodeSelector": {"type": "object", "additionalProperties": {"type": "string"}},
            "tolerations": {"type": "array", "items": {"type": "object"}},
            "affinity": {"type": "object"},
            "priorityClassName": {"type": "string"},
            "imagePullSecrets": {"type": "array", "items": _object({"name": {"type": "string"}}, ["name"])},
            "image": _object({"repository": {"type": "string", "minLength": 1}, "tag": {"type": "string", "minLength": 1},
                              "pullPolicy": {"type": "string", "enum": ["Always", "IfNotPresent", "Never"]}}),
            "env": {"type": "array", "items": {"type": "object", "required": ["name"],
                                               "properties": {"name": {"type": "string", "minLength": 1}}}},
            "debug": _object({"skip_checkpoint_upload": {"type": "boolean"},
                              "skip_checkpoint_download": {"type": "boolean"}}),
        }),
    }


def preset_files() -> dict[str, str]:
    """Relative path under files/presets/ -> content, for every generated preset."""
    from llmft.finetune.distributed import ACCELERATE_FILE, DEEPSPEED_FILE, GENERATED_PRESETS, SINGLE, launch_files

    files = {}
    for preset in GENERATED_PRESETS:
        processes = 1 if preset == SINGLE else PRESET_PROCESSES
        generated = launch_files(preset, num_processes=processes, deepspeed_config_path=DEEPSPEED_FILE)
        files[f"{preset}/{ACCELERATE_FILE}"] = generated.accelerate_yaml
        if generated.deepspeed_json is not None:
            files[f"{preset}/{DEEPSPEED_FILE}"] = generated.deepspeed_json
    return files


def expected_files(charts_dir: Path) -> dict[Path, str]:
    chart = charts_dir / CHART
    files = {chart / "values.schema.json": json.dumps(values_schema(), indent=2) + "\n"}
    for relative, content in preset_files().items():
        files[chart / "files" / "presets" / relative] = content
    return files


def main(argv: list[str] | None = None) -> int:
    charts_dir = Path(argv[0] if argv else "charts")
    for path, content in expected_files(charts_dir).items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
