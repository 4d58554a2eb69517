{{/*
An image reference: "repository@digest" when the image map has a `digest` (sha256:..., checked by each chart's
schema), else "repository:tag". Called with an image map ({repository, tag, digest}).
*/}}
{{- define "llmft-common.image" -}}
{{- if .digest -}}
{{ .repository }}@{{ .digest }}
{{- else -}}
{{ .repository }}:{{ .tag }}
{{- end -}}
{{- end -}}
