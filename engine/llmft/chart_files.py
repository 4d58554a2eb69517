"""Chart files that are generated from the engine, never hand-edited.

- `charts/llm-finetune/values.schema.json`: the chart's own keys plus, under
  `finetuning_config`, the engine's config schema (`llmft config-schema sft|dpo`),
  chosen by `method`. One source of truth: a typo fails at `helm template`.
- `charts/llm-finetune/templates/_generated_checks.tpl`: what JSON Schema cannot see.
  Helm's `--set` leaves decimals as strings (`ratio=1.5` arrives as "1.5"), so the
  schema accepts numeric strings and these template checks hold them to the bounds
  of the engine's models; every config field the engine checks as a location gets
  the location check below.
- `charts/llmft-common/templates/_generated_locations.tpl`: the location rule of
  `llmft.storage.location` and `llmft.finetune.config.location_problem` as template
  helpers, used by every chart for its bucket locations.
- `charts/llmft-common/templates/_generated_original_spellings.tpl`: the original
  tutorial's engine keys and template names (`ORIGINAL_KEYS`, `ORIGINAL_NAMES` of the
  engine) read or refused at render, as the engine does; used by llm-finetune and llm-tune.
- `charts/llm-finetune/files/presets/<preset>/`: the accelerate (and DeepSpeed)
  files of each `distributedType`, from `llmft.finetune.distributed`.
- `charts/llm-evaluate/values.schema.json`: the evaluation spec's schema under
  `evaluation` (`llmft.evaluate.chart`).

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
# Helm passes every dependency its own values key, the shared library chart included (it reads none).
LIBRARY_VALUES = {"type": "object", "description": "Values Helm passes to the shared library chart (it reads none)."}


def _object(properties: dict, required: list[str] | None = None) -> dict:
    schema = {"type": "object", "additionalProperties": False, "properties": properties}
    if required:
        schema["required"] = required
    return schema


# The security values every chart shares (read by llmft-common's helpers; each chart README's "Security").
_ID = {"type": "integer", "minimum": 1}
POD_SECURITY = _object(
    {
        "runAsUser": {**_ID, "description": "UID of every container (the images' user is 10001)."},
        "runAsGroup": _ID,
        "fsGroup": {**_ID, "description": "Group that owns the volumes, so runAsUser can write them."},
        "readOnlyRootFilesystem": {"type": "boolean"},
        "automountServiceAccountToken": {"type": "boolean"},
        "tmpSize": QUANTITY,
        "homeSize": QUANTITY,
    }
)
IMAGE_DIGEST = {
    "type": "string",
    "pattern": "^(sha256:[0-9a-f]{64})?$",
    "description": "sha256:... digest; when set the image is pulled as repository@digest.",
}
_PORT = {"type": "integer", "minimum": 1, "maximum": 65535}
_ENDPOINT = _object(
    {
        "cidr": {"type": "string", "minLength": 1},
        "except": {"type": "array", "items": {"type": "string"}},
        "ports": {"type": "array", "minItems": 1, "items": _PORT},
    },
    ["cidr", "ports"],
)


def network_policy_schema(**extra: dict) -> dict:
    """`networkPolicy`: the keys every chart has (llmft-common.networkPolicy) plus a chart's own."""
    return _object(
        {
            "enabled": {"type": "boolean"},
            "bucketEndpoints": {"type": "array", "items": _ENDPOINT},
            "allowHub": {"type": "boolean"},
            "extraEgress": {"type": "array", "items": {"type": "object"}},
            **extra,
        }
    )


def job_pod_values() -> dict:
    """The values every chart built on llmft-common shares: bucket, scheduling, image, security, extras."""
    return {
        "bucketStorageHost": {"type": "string", "minLength": 1},
        "bucketCredentialsSecret": _object(
            {
                "name": {"type": "string", "minLength": 1},
                "accessKeyKey": {"type": "string", "minLength": 1},
                "secretKeyKey": {"type": "string", "minLength": 1},
            },
            ["name", "accessKeyKey", "secretKeyKey"],
        ),
        "storageClass": {"type": "string"},
        "activeDeadlineSeconds": {"type": ["integer", "null"], "minimum": 1},
        "ttlSecondsAfterFinished": {"type": "integer", "minimum": 0},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
        "nodeSelector": {"type": "object", "additionalProperties": {"type": "string"}},
        "tolerations": {"type": "array", "items": {"type": "object"}},
        "affinity": {"type": "object"},
        "priorityClassName": {"type": "string"},
        "imagePullSecrets": {"type": "array", "items": _object({"name": NAME}, ["name"])},
        "image": _object(
            {
                "repository": {"type": "string", "minLength": 1},
                "tag": {"type": "string", "minLength": 1},
                "digest": IMAGE_DIGEST,
                "pullPolicy": {"type": "string", "enum": ["Always", "IfNotPresent", "Never"]},
            }
        ),
        "podSecurity": POD_SECURITY,
        "env": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name"],
                "properties": {"name": {"type": "string", "minLength": 1}},
            },
        },
        "llmft-common": LIBRARY_VALUES,
    }


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
        _allow_original_spellings(schema)
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


_JSON_TYPES = {bool: "boolean", str: "string"}


def _allow_original_spellings(schema: dict) -> None:
    """Let the original tutorial's keys and template names through the schema, so that the generated checks
    can accept the values the engine reads (ORIGINAL_KEYS) and refuse the others naming the new spelling."""
    from llmft.finetune.config import ORIGINAL_KEYS
    from llmft.finetune.templates import ORIGINAL_NAMES

    for path, accepted in ORIGINAL_KEYS.items():
        section = schema
        for part in path[:-1]:
            section = section["properties"][part]
        types = sorted({_JSON_TYPES[type(json.loads(value))] for value in accepted})
        section["properties"][path[-1]] = {
            "type": types[0] if len(types) == 1 else types,
            "description": f"The original engine's spelling, read as far as it maps: {', '.join(accepted)}.",
        }
    template = schema["properties"]["data_conf"]["properties"]["chat_template_name"]
    template["enum"] = template["enum"] + list(ORIGINAL_NAMES)


# Keys a values file may leave out (null or absent in a chart's values.yaml). Every other top-level key is
# required: `--set KEY=null` deletes a key, and a template would then fail with a nil pointer instead of naming it.
OPTIONAL_VALUES = ("activeDeadlineSeconds", "llmft-common", "finetuningImage", "aimManifest")


def require_every_value(schema: dict) -> dict:
    """`schema` (a chart's values schema) with every top-level key but OPTIONAL_VALUES required."""
    schema["required"] = [key for key in schema["properties"] if key not in OPTIONAL_VALUES]
    return schema


def values_schema() -> dict:
    return require_every_value(_values_schema_without_required())


def _values_schema_without_required() -> dict:
    from llmft.finetune.distributed import PRESETS

    secret_ref = _object({"name": {"type": "string"}, "key": {"type": "string"}})
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "llm-finetune values",
        **_object(
            {
                "basemodel": {
                    "type": "string",
                    "minLength": 1,
                    "description": "Base model: bucket/path, s3://..., or hf://org/name.",
                },
                "checkpointsRemote": {"type": "string", "description": "Bucket location for checkpoints and outputs."},
                "logsRemote": {"type": "string"},
                "finetuningGpus": {
                    "type": "integer",
                    "minimum": 0,
                    "description": "GPUs (processes); 0 = one CPU process.",
                },
                "finetuningNodes": {
                    "type": "integer",
                    "minimum": 1,
                    "description": "Nodes (pods) of the run, each with finetuningGpus GPUs.",
                },
                "workload": {
                    "type": "string",
                    "enum": ["Job", "JobSet"],
                    "description": "What runs the pods: a Job, or a JobSet (jobset.x-k8s.io/v1alpha2).",
                },
                "gpuResourceName": {"type": "string", "minLength": 1},
                "memoryPerGpu": {"type": "integer", "minimum": 1, "description": "GiB per GPU."},
                "cpusPerGpu": {"type": "integer", "minimum": 1},
                "distributedType": {"type": "string", "enum": list(PRESETS)},
                "customAccelerateConfig": {"type": "string"},
                "mergeAdapter": {"type": "boolean"},
                "runTensorboard": {"type": "boolean"},
                "finetuning_config": _finetuning_config_schema(),
                **job_pod_values(),
                "hfTokenSecret": secret_ref,
                "downloadsReservedSize": QUANTITY,
                "checkpointsReservedSize": QUANTITY,
                "sharedMemorySize": QUANTITY,
                "backoffLimit": {"type": "integer", "minimum": 0},
                "networkPolicy": network_policy_schema(),
                "finetuningImage": {
                    "description": "The original chart's image key: refused at render, naming `image`."
                },
                "aimManifest": {
                    "description": "The original chart's AIM manifest: refused at render (not written here)."
                },
                "debug": _object(
                    {"skip_checkpoint_upload": {"type": "boolean"}, "skip_checkpoint_download": {"type": "boolean"}}
                ),
            }
        ),
    }


def preset_files() -> dict[str, str]:
    """Relative path under files/presets/ -> content, for every generated preset."""
    from llmft.finetune.distributed import (
        ACCELERATE_FILE,
        DEEPSPEED_FILE,
        GENERATED_PRESETS,
        SINGLE,
        launch_files,
    )

    files = {}
    for preset in GENERATED_PRESETS:
        processes = 1 if preset == SINGLE else PRESET_PROCESSES
        generated = launch_files(preset, num_processes=processes, deepspeed_config_path=DEEPSPEED_FILE)
        files[f"{preset}/{ACCELERATE_FILE}"] = generated.accelerate_yaml
        if generated.deepspeed_json is not None:
            files[f"{preset}/{DEEPSPEED_FILE}"] = generated.deepspeed_json
    return files


GENERATED_HEADER = "{{/* Generated by `make chart-files` (llmft.chart_files) from the engine: do not edit. */}}\n"


def location_helpers() -> str:
    """Template helpers applying the engine's location rule (see `llmft.finetune.config.location_problem`)."""
    from llmft.finetune.config import (
        BUCKET_NAME_PATTERN,
        BUCKET_NAME_PROBLEM,
        HUB_SCHEME,
        PARENT_SEGMENT_PATTERN,
        PARENT_SEGMENT_PROBLEM,
    )
    from llmft.storage.location import _LOCAL_PREFIXES

    local = " ".join(f"(hasPrefix {json.dumps(prefix)} $value)" for prefix in _LOCAL_PREFIXES)
    bucket_name_problem = json.dumps(BUCKET_NAME_PROBLEM.replace("%", "%%").format(bucket="%q"))
    return (
        GENERATED_HEADER
        + f"""
{{{{/* "local", "hub" ({HUB_SCHEME}...) or "bucket": how llmft reads a location. Called with the location. */}}}}
{{{{- define "llmft-common.locationKind" -}}}}
{{{{- $value := trim (toString .) -}}}}
{{{{- if or {local} (eq $value ".") (eq $value "..") -}}}}local
{{{{- else if hasPrefix {json.dumps(HUB_SCHEME)} $value -}}}}hub
{{{{- else -}}}}bucket
{{{{- end -}}}}
{{{{- end -}}}}

{{{{/* What is wrong with a bucket location, with the fix (empty: nothing). Called with the location. */}}}}
{{{{- define "llmft-common.bucketLocationProblem" -}}}}
{{{{- $value := trim (toString .) -}}}}
{{{{- $rest := $value -}}}}
{{{{- if hasPrefix "s3://" $value -}}}}
{{{{- $rest = trimPrefix "s3://" $value -}}}}
{{{{- else if contains "://" $value -}}}}
{{{{- printf "scheme %s:// is not supported here; use s3://bucket/path, bucket/path, or a local path starting with / or ./" (splitList "://" $value | first) -}}}}
{{{{- end -}}}}
{{{{- if or (hasPrefix "s3://" $value) (not (contains "://" $value)) -}}}}
{{{{- $parts := splitn "/" 2 $rest -}}}}
{{{{- $bucket := $parts._0 -}}}}
{{{{- $key := trimPrefix "/" ($parts._1 | default "") -}}}}
{{{{- if not $value -}}}}
empty location: give a bucket path (bucket/path)
{{{{- else if not $bucket -}}}}
no bucket name: write s3://BUCKET/path
{{{{- else if not (regexMatch {json.dumps(BUCKET_NAME_PATTERN)} $bucket) -}}}}
{{{{- printf {bucket_name_problem} $bucket -}}}}
{{{{- else if regexMatch {json.dumps(PARENT_SEGMENT_PATTERN)} $key -}}}}
{PARENT_SEGMENT_PROBLEM}
{{{{- end -}}}}
{{{{- end -}}}}
{{{{- end -}}}}

{{{{/*
A location any way llmft reads it (a local path, {HUB_SCHEME}org/name, or a bucket location that follows the rule).
Called with (list "key.path" $value); fails naming the key, the value and the fix.
*/}}}}
{{{{- define "llmft-common.checkLocation" -}}}}
{{{{- $key := index . 0 -}}}}
{{{{- $value := index . 1 -}}}}
{{{{- if eq (include "llmft-common.locationKind" $value) "bucket" -}}}}
{{{{- with include "llmft-common.bucketLocationProblem" $value -}}}}
{{{{- fail (printf "%s: %s, got %q" $key . $value) -}}}}
{{{{- end -}}}}
{{{{- end -}}}}
{{{{- end -}}}}

{{{{/*
A folder in the bucket (what a pod can reach): not a local path, not the Hub, and not a whole bucket unless
called with a third element "bucket". Called with (list "key.path" $value); fails naming the key, the value
and the fix.
*/}}}}
{{{{- define "llmft-common.checkBucketLocation" -}}}}
{{{{- $key := index . 0 -}}}}
{{{{- $value := trim (toString (index . 1)) -}}}}
{{{{- $kind := include "llmft-common.locationKind" $value -}}}}
{{{{- if eq $kind "local" -}}}}
{{{{- fail (printf "%s: %q is a local path, which the pod cannot see: upload it with `llmft storage cp %s s3://BUCKET/PATH` and give that bucket path" $key $value $value) -}}}}
{{{{- else if eq $kind "hub" -}}}}
{{{{- fail (printf "%s: %q is a Hugging Face Hub id; this setting takes a bucket location (bucket/path or s3://bucket/path)" $key $value) -}}}}
{{{{- end -}}}}
{{{{- include "llmft-common.checkLocation" (list $key $value) -}}}}
{{{{- $rest := trimPrefix "s3://" $value -}}}}
{{{{- if and (lt (len .) 3) (not (trimAll "/" (splitn "/" 2 $rest)._1)) -}}}}
{{{{- fail (printf "%s: %q names a whole bucket; give a folder in it, e.g. %s/path/to/folder" $key $value (trimSuffix "/" $value)) -}}}}
{{{{- end -}}}}
{{{{- end -}}}}
"""
    )


def _section_types(annotation) -> list[type]:
    """The config section classes inside a field's annotation (through Optional, list, unions)."""
    import typing

    from llmft.finetune.config import Section

    if isinstance(annotation, type) and issubclass(annotation, Section):
        return [annotation]
    return [found for arg in typing.get_args(annotation) for found in _section_types(arg)]


def _location_fields(model, path: tuple = ()) -> list[tuple]:
    """Key paths ("[]" for list items) of every field the engine validates with its location rule."""
    from llmft.finetune.config import _check_location

    checked = {
        name
        for decorator in model.__pydantic_decorators__.field_validators.values()
        if decorator.func is _check_location
        for name in decorator.info.fields
    }
    found = []
    for name, field in model.model_fields.items():
        if name in checked:
            found.append(path + (name,))
        import typing

        is_list = any(typing.get_origin(arg) is list for arg in (field.annotation, *typing.get_args(field.annotation)))
        for section in _section_types(field.annotation):
            found.extend(_location_fields(section, path + (name,) + (("[]",) if is_list else ())))
    return list(dict.fromkeys(found))


_BOUNDS = ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum")


def _numeric_options(node: dict) -> list[dict]:
    """The numeric alternatives a field's schema allows: {integer, bounds...} each."""
    options = []
    for option in node.get("anyOf", [node]):
        if option.get("type") in ("number", "integer"):
            entry = {"integer": option["type"] == "integer"}
            entry.update({bound: float(option[bound]) for bound in _BOUNDS if bound in option})
            options.append(entry)
    return options


def _numeric_fields(schema: dict, path: tuple = ()) -> dict[tuple, tuple[list[dict], dict]]:
    """Key path -> (numeric options, the field's schema) for every field that accepts a number."""
    found: dict[tuple, tuple[list[dict], dict]] = {}
    options = _numeric_options(schema)
    if any(not option["integer"] for option in options):
        found[path] = (options, schema)
    for option in schema.get("anyOf", [schema]):
        for name, child in option.get("properties", {}).items():
            found.update(_numeric_fields(child, path + (name,)))
        if option.get("type") == "array" and isinstance(option.get("items"), dict):
            found.update(_numeric_fields(option["items"], path + ("[]",)))
    return found


def _walk_template(path: tuple, root: str, body) -> str:
    """Template code that reaches every value at `path` under `root` and runs body(key_expression, value)."""
    lines, value, key_parts, key_args = [], root, [], []
    for depth, part in enumerate(path):
        if part == "[]":
            index = f"$i{depth}"
            lines.append(f"{{{{- range {index}, $v{depth} := {value} }}}}")
            key_parts.append("[%d]")
            key_args.append(index)
            value = f"$v{depth}"
        else:
            lines.append(f'{{{{- if and (kindIs "map" {value}) (hasKey {value} {json.dumps(part)}) }}}}')
            key_parts.append(f".{part}")
            value = f"(index {value} {json.dumps(part)})"
    key_format = "finetuning_config" + "".join(key_parts)
    key = f"(printf {json.dumps(key_format)} {' '.join(key_args)})" if key_args else json.dumps(key_format)
    lines.append(body(key, value))
    lines.extend("{{- end }}" for _ in path)
    return "\n".join(lines)


def _schema_default(schema: dict, path: tuple):
    """The default the engine's model gives the key at `path` (None when it has none)."""
    node = schema
    for key in path:
        node = next(
            (option["properties"][key] for option in node.get("anyOf", [node]) if key in option.get("properties", {})),
            {},
        )
    return node.get("default")


def _dig(path: tuple, default: str, root: str) -> str:
    keys = " ".join(json.dumps(key) for key in path)
    return f"(dig {keys} {default} {root})"


def _condition(value: str, condition) -> str:
    """Template code true when `value` matches a relation condition (SET, UNSET or a tuple of values)."""
    from llmft.finetune.config import SET, UNSET

    if condition == SET:
        return f'(include "llm-finetune.isSet" {value})'
    if condition == UNSET:
        return f'(not (include "llm-finetune.isSet" {value}))'
    words = " ".join(json.dumps(json.dumps(item) if isinstance(item, bool) else str(item)) for item in condition)
    return f"(has (toString {value}) (list {words}))"


def _relation_template(relation, methods: list[str], all_methods: list[str], schema: dict) -> str:
    """Template code failing like `relation_problems` does for one Relation of the engine's models."""
    default = _schema_default(schema, relation.other)
    other = _dig(relation.other, json.dumps(default) if default is not None else "nil", "$config")
    message = relation.message.replace("%", "%%").format(other="%v")
    other_arg = " $other" if "{other}" in relation.message else ""
    lines = []
    if methods != all_methods:
        lines.append(f"{{{{- if has $method (list {' '.join(json.dumps(m) for m in methods)}) }}}}")
    lines.append(f"{{{{- $other := {other} }}}}")
    if "[]" in relation.field:
        split = relation.field.index("[]")
        items, rest = relation.field[:split], relation.field[split + 1 :]
        if "[]" in rest or relation.report is not None:
            raise RuntimeError(f"{relation.field}: one list level, reported at the field, is all this generates")
        key_format = "finetuning_config." + ".".join(items) + "[%d]." + ".".join(rest)
        lines.append(f"{{{{- range $index, $item := {_dig(items, '(list)', '$config')} }}}}")
        lines.append(f"{{{{- $value := {_dig(rest, 'nil', '$item')} }}}}")
        lines.append(f"{{{{- $key := printf {json.dumps(key_format)} $index }}}}")
    else:
        lines.append(f"{{{{- $value := {_dig(relation.field, 'nil', '$config')} }}}}")
        report = relation.report or relation.field
        lines.append(f"{{{{- $key := {json.dumps('finetuning_config.' + '.'.join(report))} }}}}")
        if relation.report is not None:
            lines.append(f"{{{{- $reported := {_dig(relation.report, 'nil', '$config')} }}}}")
    reported = "$reported" if relation.report is not None else "$value"
    lines.append(
        f"{{{{- if and {_condition('$value', relation.when)} (not {_condition('$other', relation.allowed)}) }}}}"
    )
    lines.append(
        f"{{{{- fail (printf {json.dumps('%s: ' + message + ', got %s')} $key{other_arg} (toJson {reported})) }}}}"
    )
    lines.append("{{- end }}")
    if "[]" in relation.field:
        lines.append("{{- end }}")
    if methods != all_methods:
        lines.append("{{- end }}")
    return "\n".join(lines)


def _nodes_template() -> str:
    """Fails like `llmft train` when finetuningNodes > 1 meets a preset that runs on one node
    (`llmft.finetune.distributed.SINGLE_NODE_PRESETS`)."""
    from llmft.finetune.distributed import SINGLE_NODE_PRESETS

    lines = []
    for preset, why in SINGLE_NODE_PRESETS.items():
        message = (
            f"finetuningNodes: %d nodes, but distributedType {preset} runs on one node ({why}); use auto-ddp or a "
            "DeepSpeed preset, or finetuningNodes: 1"
        )
        lines.append(
            f"{{{{- if and (gt (int (.Values.finetuningNodes | default 1)) 1) "
            f"(eq (toString .Values.distributedType) {json.dumps(preset)}) }}}}"
            f"{{{{ fail (printf {json.dumps(message)} (int .Values.finetuningNodes)) }}}}{{{{ end }}}}"
        )
    return "\n".join(lines)


def original_spelling_checks() -> str:
    """`llmft-common.checkOriginalSpellings`: fails like the engine on the original engine's values it does not
    read (ORIGINAL_KEYS, ORIGINAL_NAMES). Called with finetuning_config by the finetune and tune charts."""
    from llmft.finetune.config import MOVED_KEYS, ORIGINAL_KEYS
    from llmft.finetune.templates import ORIGINAL_NAMES

    blocks = []
    for path, accepted in ORIGINAL_KEYS.items():
        words = " ".join(json.dumps(value) for value in accepted)
        message = json.dumps(f"%s: unknown key, got %s ({MOVED_KEYS[path[-1]]})")
        blocks.append(
            _walk_template(
                path,
                "$config",
                lambda key, value, words=words, message=message: (
                    f"{{{{- if not (has (toJson {value}) (list {words})) }}}}"
                    f"{{{{ fail (printf {message} {key} (toJson {value})) }}}}{{{{ end }}}}"
                ),
            )
        )
    for name, fix in ORIGINAL_NAMES.items():
        message = (
            f"finetuning_config.data_conf.chat_template_name: a template name of the original engine, "
            f"got {json.dumps(name)} ({fix})"
        )
        name_given = '(toString (dig "data_conf" "chat_template_name" "" $config))'
        blocks.append(
            f"{{{{- if eq {name_given} {json.dumps(name)} }}}}{{{{ fail {json.dumps(message)} }}}}{{{{ end }}}}"
        )
    return (
        GENERATED_HEADER
        + """
{{/* The original engine's spellings in finetuning_config: read by the engine, or refused naming the fix. */}}
{{- define "llmft-common.checkOriginalSpellings" -}}
{{- $config := . | default dict -}}
"""
        + "\n".join(blocks)
        + """
{{- end -}}
"""
    )


def finetune_checks() -> str:
    """The llm-finetune chart's generated checks (`llm-finetune.generatedChecks`)."""
    from llmft.finetune.config import (
        DEFAULT_METHOD,
        METHODS,
        _describe,
        config_json_schema,
        config_model,
    )

    numeric: dict[tuple, tuple[list[dict], dict]] = {}
    locations: list[tuple] = []
    relations: dict = {}  # Relation -> (methods that have it, the schema its defaults come from)
    for method in METHODS:
        schema = config_json_schema(method)
        for path, (options, node) in _numeric_fields(schema).items():
            if path in numeric and numeric[path][0] != options:
                raise RuntimeError(f"finetuning_config.{'.'.join(path)}: bounds differ between methods")
            numeric.setdefault(path, (options, node))
        locations.extend(_location_fields(config_model(method)))
        for relation in config_model(method).RELATIONS:
            relations.setdefault(relation, ([], schema))[0].append(method)
    blocks = []
    for path, (options, node) in numeric.items():
        allowed = _describe(node)
        blocks.append(
            _walk_template(
                path,
                "$config",
                lambda key, value, options=options, allowed=allowed: (
                    f'{{{{- include "llm-finetune.checkNumericString" (list {key} {value} '
                    f"(fromJsonArray {json.dumps(json.dumps(options))}) {json.dumps(allowed)}) }}}}"
                ),
            )
        )
    for path in dict.fromkeys(locations):
        blocks.append(
            _walk_template(
                path,
                "$config",
                lambda key, value: (
                    f'{{{{- if {value} }}}}{{{{ include "llmft-common.checkLocation" (list {key} {value}) }}}}{{{{ end }}}}'
                ),
            )
        )
    for relation, (methods, schema) in relations.items():
        blocks.append(_relation_template(relation, methods, list(METHODS), schema))
    blocks.append(_nodes_template())
    return (
        GENERATED_HEADER
        + """
{{/*
A decimal that `--set` left as a string, held to the bounds of the engine's model: fails naming the key, what
is allowed and the value. Called with (list "key.path" $value $options "what is allowed").
*/}}
{{- define "llm-finetune.checkNumericString" -}}
{{- $key := index . 0 -}}
{{- $value := index . 1 -}}
{{- if kindIs "string" $value -}}
{{- $number := float64 $value -}}
{{- $fits := false -}}
{{- range index . 2 -}}
{{- $ok := true -}}
{{- if and .integer (ne $number (floor $number)) }}{{ $ok = false }}{{ end -}}
{{- if and (hasKey . "minimum") (lt $number (float64 .minimum)) }}{{ $ok = false }}{{ end -}}
{{- if and (hasKey . "exclusiveMinimum") (le $number (float64 .exclusiveMinimum)) }}{{ $ok = false }}{{ end -}}
{{- if and (hasKey . "maximum") (gt $number (float64 .maximum)) }}{{ $ok = false }}{{ end -}}
{{- if and (hasKey . "exclusiveMaximum") (ge $number (float64 .exclusiveMaximum)) }}{{ $ok = false }}{{ end -}}
{{- if $ok }}{{ $fits = true }}{{ end -}}
{{- end -}}
{{- if not $fits -}}
{{- fail (printf "%s: must be %s, got %q" $key (index . 3) $value) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* "true" when a value is given: not absent, not null, not false, not an empty list (the engine's SET). */}}
{{- define "llm-finetune.isSet" -}}
{{- if not (or (kindIs "invalid" .) (and (kindIs "bool" .) (not .)) (and (kindIs "slice" .) (eq (len .) 0))) }}true{{ end -}}
{{- end -}}

{{/*
Every check of finetuning_config that JSON Schema cannot do, from the engine's models: numeric strings held
to their bounds, locations, and the rules between keys (`RELATIONS` of the config models).
*/}}
{{- define "llm-finetune.generatedChecks" -}}
{{- $config := .Values.finetuning_config | default dict -}}
{{- $method := dig "method" """
        + json.dumps(DEFAULT_METHOD)
        + """ $config -}}
"""
        + "\n".join(blocks)
        + """
{{- end -}}
"""
    )


def expected_files(charts_dir: Path) -> dict[Path, str]:
    chart = charts_dir / CHART
    files = {
        chart / "values.schema.json": json.dumps(values_schema(), indent=2) + "\n",
        chart / "templates" / "_generated_checks.tpl": finetune_checks(),
        charts_dir / "llmft-common" / "templates" / "_generated_locations.tpl": location_helpers(),
        charts_dir / "llmft-common" / "templates" / "_generated_original_spellings.tpl": original_spelling_checks(),
    }
    for relative, content in preset_files().items():
        files[chart / "files" / "presets" / relative] = content
    from llmft.evaluate.chart import chart_files as evaluate_chart_files

    files.update(evaluate_chart_files(charts_dir))  # charts/llm-evaluate/values.schema.json
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
