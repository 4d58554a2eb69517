{{/* The chart's name, used in labels. */}}
{{- define "dmb.name" -}}
{{- .Chart.Name -}}
{{- end -}}

{{/* Fail early on a release name Kubernetes would reject as a Job or label value. */}}
{{- define "dmb.validateReleaseName" -}}
{{- if or (gt (len .Release.Name) 53) (not (regexMatch "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$" .Release.Name)) -}}
{{- fail (printf "release name %q is invalid: use lowercase letters, digits and '-' (at most 53 characters)" .Release.Name) -}}
{{- end -}}
{{- end -}}

{{/* Standard labels, then the user's `labels`. */}}
{{- define "dmb.labels" -}}
app.kubernetes.io/name: {{ include "dmb.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: download-model
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- with .Values.labels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/*
The source for `llmft download-model`. modelID "Organization/ModelName" (the tutorial's form) means the
Hugging Face Hub and becomes hf://Organization/ModelName; a value with a scheme (hf://, s3://) or a
folder path (/, ./, ../) is passed unchanged.
*/}}
{{- define "dmb.source" -}}
{{- $id := required "modelID is required: a Hugging Face model id like TinyLlama/TinyLlama-1.1B-Chat-v1.0, or s3://bucket/path, or a folder path" .Values.modelID -}}
{{- if or (contains "://" $id) (hasPrefix "/" $id) (hasPrefix "./" $id) (hasPrefix "../" $id) -}}
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
