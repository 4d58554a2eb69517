{{- define "llm-tune.labels" -}}
{{ include "llmft-common.labels" (dict "context" .context "component" .component) }}
{{- end -}}

{{/* The experiment spec the workers run: the spec keys of the values, as `llmft tune SPEC` reads them. */}}
{{- define "llm-tune.spec" -}}
{{- $spec := dict "name" .Values.name "basemodel" .Values.basemodel "checkpointsRemote" .Values.checkpointsRemote "mergeAdapter" .Values.mergeAdapter "finetuning_config" .Values.finetuning_config "tune" .Values.tune -}}
{{- toYaml $spec -}}
{{- end -}}

{{/* The study-storage server's Service name (and host). */}}
{{- define "llm-tune.storageName" -}}
{{- printf "%s-study-storage" .Release.Name -}}
{{- end -}}

{{/*
Render-time checks the JSON Schema cannot express (`llmft tune` checks the same at start, with the engine's
config model: llmft.tune.spec). Unknown key paths already fail in values.schema.json.
*/}}
{{- define "llm-tune.checkValues" -}}
{{- include "llmft-common.checkOriginalSpellings" .Values.finetuning_config -}}
{{- include "llmft-common.checkLocation" (list "basemodel" .Values.basemodel) -}}
{{- include "llmft-common.checkBucketLocation" (list "checkpointsRemote" .Values.checkpointsRemote) -}}
{{- range $index, $parameter := .Values.tune.search_space -}}
{{- if and (hasKey $parameter "min") (hasKey $parameter "max") -}}
{{- if gt (float64 $parameter.min) (float64 $parameter.max) -}}
{{- fail (printf "tune.search_space[%d].min: is larger than max (%v); swap them, got %v" $index $parameter.max $parameter.min) -}}
{{- end -}}
{{- if and $parameter.log (le (float64 $parameter.min) 0.0) -}}
{{- fail (printf "tune.search_space[%d].min: must be above 0 on a log scale (log: true); raise min or set log: false, got %v" $index $parameter.min) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
