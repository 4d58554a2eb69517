{{/*
The original tutorial's values files (silogen/ai-workloads) spell some keys differently. These helpers let a
chart read them or refuse them naming the new spelling; see docs/tutorials/original-tutorial-files.md.
*/}}

{{/*
The value of `new`, or of its original spelling `old` when only that is given; both given is an error naming
both. Called with (list .Values "new" "old"); an empty string when neither is set.
*/}}
{{- define "llmft-common.aliased" -}}
{{- $values := index . 0 -}}
{{- $new := index . 1 -}}
{{- $old := index . 2 -}}
{{- $newValue := get $values $new -}}
{{- $oldValue := get $values $old -}}
{{- if and $newValue $oldValue -}}
{{- fail (printf "%s and %s are both given (%s is the original tutorial's spelling of %s): keep only %s" $old $new $old $new $new) -}}
{{- end -}}
{{- $newValue | default $oldValue -}}
{{- end -}}

{{/*
Fails naming every key of the original charts that this chart does not read, each with its fix (a key set to
null counts as removed). Called with (list .Values (dict "oldKey" "the fix" ...)).
*/}}
{{- define "llmft-common.refuseOriginalKeys" -}}
{{- $values := index . 0 -}}
{{- $problems := list -}}
{{- range $key, $fix := index . 1 -}}
{{- if and (hasKey $values $key) (not (kindIs "invalid" (index $values $key))) -}}
{{- $problems = append $problems (printf "%s: a key of the original tutorial's chart; %s" $key $fix) -}}
{{- end -}}
{{- end -}}
{{- with $problems }}{{ fail (join "; and " .) }}{{ end -}}
{{- end -}}
