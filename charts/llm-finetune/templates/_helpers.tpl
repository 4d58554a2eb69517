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
