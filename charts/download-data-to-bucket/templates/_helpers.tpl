{{/*
Where the data comes from: dataScript (a user's script) or hubDataset.id (a Hub dataset copied without a
script). Exactly one of the two; the hubDataset values are checked here so that a bad one fails at
`helm template`, naming the key. The id and path rules are the engine's (llmft.staging.sources:
parse_hub_url); tests/test_hub_datasets.py checks that both give the same verdict on every sample.
*/}}
{{- define "ddb.checkSource" -}}
{{- $hub := .Values.hubDataset -}}
{{- if and $hub.id .Values.dataScript -}}
{{- fail "give dataScript or hubDataset.id, not both: dataScript runs your script, hubDataset.id copies a Hub dataset without one" -}}
{{- end -}}
{{- if not (or $hub.id .Values.dataScript) -}}
{{- fail "dataScript is required: a Python script that writes JSONL files to /downloads/datasets/ (or hubDataset.id: a Hub dataset, Organization/DatasetName, copied without a script)" -}}
{{- end -}}
{{- if $hub.id -}}
{{- if not (regexMatch "^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9_.-]+$" $hub.id) -}}
{{- if regexMatch "^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9_.-]+/" $hub.id -}}
{{- fail (printf "hubDataset.id %q is not a Hub dataset id: write Organization/DatasetName and put a folder or file in hubDataset.path" $hub.id) -}}
{{- end -}}
{{- fail (printf "hubDataset.id %q is not a Hub dataset id: write Organization/DatasetName, as on the dataset's page" $hub.id) -}}
{{- end -}}
{{- with $hub.path -}}
{{- if regexMatch "^/|\\\\" . -}}
{{- fail (printf "hubDataset.path %q must be relative to the repository root, with / between folders (e.g. data/train.parquet)" .) -}}
{{- end -}}
{{- range (splitList "/" (trimSuffix "/" .)) -}}
{{- if or (eq . "") (eq . ".") (eq . "..") -}}
{{- fail (printf "hubDataset.path %q may not contain '..', '.' or empty parts: name a file or folder of the repository" $hub.path) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if not $hub.toJsonl -}}
{{- range $key := list "source" "split" "outputName" -}}
{{- if index $hub $key -}}
{{- fail (printf "hubDataset.%s only applies with hubDataset.toJsonl: true (without it the files are copied as they are)" $key) -}}
{{- end -}}
{{- end -}}
{{- if $hub.columnMap -}}
{{- fail "hubDataset.columnMap only applies with hubDataset.toJsonl: true (without it the files are copied as they are)" -}}
{{- end -}}
{{- end -}}
{{- else -}}
{{- range $key := list "path" "revision" "source" "split" "outputName" -}}
{{- if index $hub $key -}}
{{- fail (printf "hubDataset.%s needs hubDataset.id (the Hub dataset it applies to)" $key) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* hf://datasets/<id>[/<path>]: the source for `llmft download-data`. */}}
{{- define "ddb.hubSource" -}}
{{- $hub := .Values.hubDataset -}}
{{- printf "hf://datasets/%s" $hub.id -}}
{{- with trimSuffix "/" $hub.path }}/{{ . }}{{ end -}}
{{- end -}}
