{{/*
The source for `llmft download-model`. modelID "Organization/ModelName" (the tutorial's form) means the
Hugging Face Hub and becomes hf://Organization/ModelName; a value with a scheme (hf://, s3://) or a
folder path (/, ./, ../: llmft's location rule) is passed unchanged.
*/}}
{{- define "dmb.source" -}}
{{- $id := required "modelID is required: a Hugging Face model id like TinyLlama/TinyLlama-1.1B-Chat-v1.0, or s3://bucket/path, or a folder path" (include "llmft-common.aliased" (list .Values "modelID" "modelId")) -}}
{{- if or (contains "://" $id) (eq (include "llmft-common.locationKind" $id) "local") -}}
{{- $id -}}
{{- else -}}
{{- printf "hf://%s" $id -}}
{{- end -}}
{{- end -}}

{{/* A string or a list of strings, as a list (empty strings dropped). */}}
{{- define "dmb.globs" -}}
{{- $globs := list -}}
{{- if kindIs "string" . -}}
{{- if . }}{{- $globs = list . -}}{{- end -}}
{{- else -}}
{{- $globs = . -}}
{{- end -}}
{{- toJson $globs -}}
{{- end -}}
