{{/*
Fail early on a release name Kubernetes would reject as an object name or label value.
Called with (dict "context" $ "maxLength" 53 "why" ""): `why` explains a limit below 53 (a name built from it).
*/}}
{{- define "llmft-common.validateReleaseName" -}}
{{- $name := .context.Release.Name -}}
{{- $max := .maxLength | default 53 | int -}}
{{- if or (gt (len $name) $max) (not (regexMatch "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$" $name)) -}}
{{- $why := "" -}}
{{- with .why }}{{ $why = printf ", %s" . }}{{ end -}}
{{- fail (printf "release name %q is invalid: use lowercase letters, digits and '-' (at most %d characters%s), e.g. --name-template my-run-1" $name $max $why) -}}
{{- end -}}
{{- end -}}
