{{- define "llm-evaluate.labels" -}}
{{ include "llmft-common.labels" (dict "context" . "component" "evaluate") }}
{{- end -}}

{{/*
Render-time checks JSON Schema cannot express: every location of the spec is in the bucket (the pod sees no
local path), and every api_key_env the spec names is provided by apiKeySecrets or env.
The spec's own rules (exactly one target, metrics per data format, ...) are the engine's: `llmft evaluate`
checks them at start, before any model loads, and exits 2 (the Job then fails without retrying).
*/}}
{{- define "llm-evaluate.checkValues" -}}
{{- $spec := .Values.evaluation -}}
{{- with $spec.target.run }}{{ include "llmft-common.checkBucketLocation" (list "evaluation.target.run" .) }}{{ end -}}
{{- with $spec.target.checkpoint }}{{ include "llmft-common.checkBucketLocation" (list "evaluation.target.checkpoint" .) }}{{ end -}}
{{- include "llmft-common.checkBucketLocation" (list "evaluation.data.path" $spec.data.path) -}}
{{- with $spec.output }}{{ include "llmft-common.checkBucketLocation" (list "evaluation.output" .) }}{{ end -}}
{{- $provided := keys .Values.apiKeySecrets -}}
{{- range .Values.env }}{{ $provided = append $provided .name }}{{ end -}}
{{- $endpoints := list (list "evaluation.target.endpoint.api_key_env" $spec.target.endpoint) -}}
{{- with $spec.judge }}{{ $endpoints = append $endpoints (list "evaluation.judge.endpoint.api_key_env" .endpoint) }}{{ end -}}
{{- range $endpoints -}}
{{- $key := index . 0 -}}
{{- with index . 1 -}}
{{- if and .api_key_env (not (has .api_key_env $provided)) -}}
{{- fail (printf "%s: the variable %s is not set in the pod; add apiKeySecrets.%s: {name: SECRET, key: KEY}, got %q" $key .api_key_env .api_key_env .api_key_env) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
