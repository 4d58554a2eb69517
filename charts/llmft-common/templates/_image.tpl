{{/* An image reference "repository:tag". Called with an image map ({repository, tag}). */}}
{{- define "llmft-common.image" -}}
{{ .repository }}:{{ .tag }}
{{- end -}}
