"""The llm-evaluate chart's values.schema.json, generated from the evaluation spec (`make chart-files`).

The chart's own keys plus, under `evaluation`, the spec's JSON Schema (`llmft evaluate-schema`), so a typo
in a values file or a `--set` fails at `helm template`. Two changes for Helm: numbers also accept numeric
strings (`--set evaluation.generation.temperature=0.7` arrives as "0.7"; the engine reads it as a number),
and `target` requires exactly one of its keys (the engine's first check, expressible in JSON Schema).
`llmft.chart_files` writes this file with the other generated chart files; a test fails when it is stale.
"""

from __future__ import annotations

import json
from pathlib import Path

CHART = "llm-evaluate"


def evaluation_schema() -> dict:
    from llmft.chart_files import _accept_numeric_strings
    from llmft.evaluate.spec import Target, spec_json_schema

    schema = _accept_numeric_strings(spec_json_schema())
    schema.pop("$schema", None)
    schema.pop("title", None)
    target = schema["properties"]["target"]
    target["oneOf"] = [{"required": [key]} for key in Target.model_fields]
    # An unset key is left out of the values (null would match `required`): only keys with a value count.
    for key in Target.model_fields:
        target["properties"][key] = _without_null(target["properties"][key])
    return schema


def _without_null(schema: dict) -> dict:
    options = [option for option in schema.get("anyOf", []) if option.get("type") != "null"]
    if len(options) != 1:
        return schema
    kept = {key: value for key, value in schema.items() if key not in ("anyOf", "default")}
    return {**options[0], **kept}


def values_schema() -> dict:
    from llmft.chart_files import QUANTITY, _object, job_pod_values, network_policy_schema, require_every_value

    secret_ref = _object(
        {"name": {"type": "string", "minLength": 1}, "key": {"type": "string", "minLength": 1}}, ["name", "key"]
    )
    return require_every_value(
        {
            "$schema": "http://json-schema.org/draft-07/schema#",
            "title": "llm-evaluate values",
            **_object(
                {
                    "evaluation": {
                        **evaluation_schema(),
                        "description": "The evaluation spec (docs/evaluate-reference.md).",
                    },
                    "apiKeySecrets": {
                        "type": "object",
                        "propertyNames": {"pattern": "^[A-Za-z_][A-Za-z0-9_]*$"},
                        "additionalProperties": secret_ref,
                        "description": "Environment variable name -> Secret {name, key}: the API keys that "
                        "endpoint.api_key_env names.",
                    },
                    "gpus": {"type": "integer", "minimum": 0, "description": "GPUs for a checkpoint's model; 0 = CPU."},
                    "gpuResourceName": {"type": "string", "minLength": 1},
                    "memory": {"type": "integer", "minimum": 1, "description": "GiB, request and limit."},
                    "cpus": {"type": "integer", "minimum": 1},
                    **job_pod_values(),
                    "downloadsReservedSize": QUANTITY,
                    "backoffLimit": {"type": "integer", "minimum": 0},
                    "networkPolicy": network_policy_schema(),
                }
            ),
        }
    )


def chart_files(charts_dir: Path) -> dict[Path, str]:
    return {charts_dir / CHART / "values.schema.json": json.dumps(values_schema(), indent=2) + "\n"}
