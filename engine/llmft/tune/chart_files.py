"""charts/llm-tune/values.schema.json, generated from the experiment spec model (never hand-edited).

The chart's values are the experiment spec (`llmft.tune.spec.TuneSpec`: name, basemodel, checkpointsRemote,
mergeAdapter, finetuning_config, tune) plus the cluster's keys (image, bucket, study storage, scheduling).
`search_space[].key` only matches key paths the engine's config models have, so a typo fails at
`helm template` as it does at `llmft tune` start. `tune.storage` is the chart's `studyStorage`.

Regenerate with `make chart-files` (`python -m llmft.tune.chart_files charts`); a test fails when the
committed file differs from what this module produces.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

CHART = "llm-tune"


def values_schema() -> dict:
    from llmft.chart_files import _accept_numeric_strings, _object, require_every_value
    from llmft.finetune.config import METHODS, config_json_schema
    from llmft.tune.keypath import leaf_pattern
    from llmft.tune.spec import NAME_PATTERN, spec_json_schema

    spec = spec_json_schema()
    properties = dict(spec["properties"])
    tune = dict(properties["tune"])
    tune["properties"] = {key: value for key, value in tune["properties"].items() if key != "storage"}
    space = dict(tune["properties"]["search_space"])
    item = dict(space["items"])
    item["properties"] = dict(item["properties"])
    schemas = [config_json_schema(method) for method in METHODS]
    item["properties"]["key"] = dict(item["properties"]["key"], pattern=leaf_pattern(schemas, "finetuning_config"))
    space["items"], space["minItems"] = item, 1
    tune["properties"]["search_space"] = space
    properties["tune"] = _accept_numeric_strings(tune)  # `--set tune.search_space[0].min=1e-5` gives a string
    properties["name"] = dict(properties["name"], pattern=NAME_PATTERN)
    properties["checkpointsRemote"] = dict(properties["checkpointsRemote"], minLength=1)
    cluster = _cluster_schema()
    return require_every_value(
        {
            "$schema": "http://json-schema.org/draft-07/schema#",
            "title": "llm-tune values",
            **_object({**properties, **cluster}),
        }
    )


def cluster_keys() -> tuple[str, ...]:
    """The chart's own keys, which `llmft tune` accepts in a values file and says it does not use."""
    return tuple(_cluster_schema())


def _cluster_schema() -> dict:
    from llmft.chart_files import QUANTITY, _object, job_pod_values, network_policy_schema

    secret_ref = _object({"name": {"type": "string"}, "key": {"type": "string"}})
    return {
        "studyStorage": _object(
            {
                "server": _object(
                    {
                        "size": QUANTITY,
                        "storageClass": {"type": "string"},
                        "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                    }
                ),
                "urlSecret": secret_ref,
            }
        ),
        "gpuResourceName": {"type": "string", "minLength": 1},
        "hfTokenSecret": secret_ref,
        **job_pod_values(),
        "downloadsReservedSize": QUANTITY,
        "checkpointsReservedSize": QUANTITY,
        "sharedMemorySize": QUANTITY,
        "backoffLimitPerIndex": {"type": "integer", "minimum": 0},
        "networkPolicy": network_policy_schema(),
    }


def write(charts_dir: Path) -> Path:
    path = charts_dir / CHART / "values.schema.json"
    path.write_text(json.dumps(values_schema(), indent=2) + "\n")
    return path


if __name__ == "__main__":
    print(write(Path(sys.argv[1] if len(sys.argv) > 1 else "charts")))
