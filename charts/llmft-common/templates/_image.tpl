{{/*
An image reference: "repository@digest" when the image map has a `digest` (sha256:...), else
"repository:tag". Called with an image map ({repository, tag, digest}).
*/}}
{{- define "llmft-common.image" -}}
{{- if .digest -}}
{{- if not (regexMatch "^sha256:[0-9a-f]{64}$" .digest) -}}
{{- fail (printf "image.digest %q is not a digest: use sha256: and 64 hex digits, e.g. from `docker buildx imagetools inspect IMAGE`" .digest) -}}
{{- end -}}
{{ .repository }}@{{ .digest }}
{{- else -}}
{{ .repository }}:{{ .tag }}
{{- end -}}
{{- end -}}
