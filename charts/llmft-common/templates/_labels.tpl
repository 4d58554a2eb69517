{{/* The labels that select a release's pods. Called with the chart's context. */}}
{{- define "llmft-common.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/*
The standard app.kubernetes.io/* labels, then the user's `labels` value.
Called with (dict "context" $ "component" "finetune").
*/}}
{{- define "llmft-common.labels" -}}
{{ include "llmft-common.selectorLabels" .context }}
app.kubernetes.io/version: {{ .context.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .context.Release.Service }}
app.kubernetes.io/component: {{ .component }}
helm.sh/chart: {{ printf "%s-%s" .context.Chart.Name .context.Chart.Version | replace "+" "_" }}
{{- with .context.Values.labels }}
{{ toYaml . }}
{{- end }}
{{- end -}}
