{{/* Release-name check: Job and ConfigMap names are built from it. */}}
{{- define "llm-finetune.validateName" -}}
{{- if not (regexMatch "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$" .Release.Name) -}}
{{- fail (printf "release name %q is invalid: use lowercase letters, digits and '-' (at most 53 characters), e.g. --name-template my-run-1" .Release.Name) -}}
{{- end -}}
{{- if gt (len .Release.Name) 53 -}}
{{- fail (printf "release name %q is too long (%d characters): at most 53" .Release.Name (len .Release.Name)) -}}
{{- end -}}
{{- end -}}

{{- define "llm-finetune.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: finetune
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- with .Values.labels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* The engine config: finetuning_config plus the chart-level keys that fill run_conf. */}}
{{- define "llm-finetune.engineConfig" -}}
{{- $config := deepCopy .Values.finetuning_config -}}
{{- $run := dict -}}
{{- if hasKey $config "run_conf" }}{{ $run = get $config "run_conf" }}{{ end -}}
{{- $_ := set $run "model" .Values.basemodel -}}
{{- $_ := set $run "merge_adapter" .Values.mergeAdapter -}}
{{- if and .Values.checkpointsRemote (not .Values.debug.skip_checkpoint_upload) }}
{{- $_ := set $run "checkpoints_remote" .Values.checkpointsRemote -}}
{{- end }}
{{- $_ := set $config "run_conf" $run -}}
{{- toYaml $config -}}
{{- end -}}

{{/*
Values files and --set merge into the chart's default finetuning_config (a LoRA recipe with an AUTO_SPLIT
validation ratio). Keys the defaults bring along that the user's choices make invalid would only fail at
process start with a message about keys the user never wrote: fail here, naming the key and the fix.
*/}}
{{- define "llm-finetune.checkConfig" -}}
{{- $config := .Values.finetuning_config | default dict -}}
{{- $peft := $config.peft_conf | default dict -}}
{{- if and (eq (toString $peft.peft_type) "NO_PEFT") $peft.peft_kwargs -}}
{{- fail "finetuning_config.peft_conf.peft_kwargs: only used with peft_type LORA, but peft_type is NO_PEFT (the chart's default LoRA settings merge into your values): remove them with `peft_kwargs: null` under finetuning_config.peft_conf, or --set finetuning_config.peft_conf.peft_kwargs=null" -}}
{{- end -}}
{{- $validation := ($config.data_conf | default dict).validation_data | default dict -}}
{{- $type := toString ($validation.type | default "NONE") -}}
{{- if and (ne $type "AUTO_SPLIT") (not (kindIs "invalid" $validation.ratio)) -}}
{{- fail (printf "finetuning_config.data_conf.validation_data.ratio: only used with type AUTO_SPLIT, but the type is %s (the chart's default ratio merges into your values): remove it with `ratio: null` under finetuning_config.data_conf.validation_data, or --set finetuning_config.data_conf.validation_data.ratio=null" $type) -}}
{{- end -}}
{{- end -}}

{{- define "llm-finetune.processes" -}}
{{- max 1 (int .Values.finetuningGpus) -}}
{{- end -}}

{{- define "llm-finetune.scratchVolume" -}}
{{- if .root.Values.storageClass }}
- name: {{ .name }}
  ephemeral:
    volumeClaimTemplate:
      metadata:
        labels:
          app.kubernetes.io/instance: {{ .root.Release.Name }}
      spec:
        accessModes: [ReadWriteOnce]
        storageClassName: {{ .root.Values.storageClass | quote }}
        resources:
          requests:
            storage: {{ .size | quote }}
{{- else }}
- name: {{ .name }}
  emptyDir:
    sizeLimit: {{ .size | quote }}
{{- end }}
{{- end -}}
