{{- define "llm-finetune.labels" -}}
{{ include "llmft-common.labels" (dict "context" . "component" "finetune") }}
{{- end -}}

{{/*
The engine config: finetuning_config plus what the chart's own keys decide, in the sections the engine's
models read (llmft.finetune.config): run_conf (basemodel, mergeAdapter, checkpointsRemote, logsRemote,
debug.skip_checkpoint_download), training_args.output_dir (the checkpoints volume) and launch_conf
(finetuningGpus, distributedType, the accelerate config mounted next to this file; with finetuningNodes > 1
num_nodes and pod 0's rendezvous address). The chart's keys win over
the same keys written inside finetuning_config.
*/}}
{{- define "llm-finetune.engineConfig" -}}
{{- $config := deepCopy .Values.finetuning_config -}}
{{- $run := get $config "run_conf" | default dict -}}
{{- $_ := set $run "model" .Values.basemodel -}}
{{- $_ := set $run "merge_adapter" .Values.mergeAdapter -}}
{{- if and .Values.checkpointsRemote (not .Values.debug.skip_checkpoint_upload) }}
{{- $_ := set $run "checkpoints_remote" .Values.checkpointsRemote -}}
{{- with .Values.logsRemote }}{{ $_ := set $run "logs_remote" . }}{{ end -}}
{{- end }}
{{- if .Values.debug.skip_checkpoint_download }}
{{- $_ := set $run "skip_checkpoint_download" true -}}
{{- end }}
{{- $_ := set $config "run_conf" $run -}}
{{- $training := get $config "training_args" | default dict -}}
{{- $_ := set $training "output_dir" "/checkpoints" -}}
{{- $_ := set $config "training_args" $training -}}
{{- $launch := get $config "launch_conf" | default dict -}}
{{- $_ := set $launch "num_processes" (include "llm-finetune.processes" . | int) -}}
{{- $_ := set $launch "distributed_type" .Values.distributedType -}}
{{- $_ := set $launch "accelerate_config" "/config/accelerate_config.yaml" -}}
{{- if include "llm-finetune.multiNode" . }}
{{- $_ := set $launch "num_nodes" (int .Values.finetuningNodes) -}}
{{- $_ := set $launch "rendezvous_endpoint" (printf "%s-0.%s:%d" (include "llm-finetune.jobName" .) (include "llm-finetune.nodesService" .) (include "llm-finetune.rendezvousPort" . | int)) -}}
{{- end }}
{{- $_ := set $config "launch_conf" $launch -}}
{{- toYaml $config -}}
{{- end -}}

{{/*
Every render-time check of the values: the engine's rules (generated, _generated_checks.tpl) and the
locations the chart's own keys hold, by the engine's location rule (llmft-common).
*/}}
{{- define "llm-finetune.checkValues" -}}
{{- include "llm-finetune.generatedChecks" . -}}
{{- include "llmft-common.checkOriginalSpellings" .Values.finetuning_config -}}
{{- include "llmft-common.refuseOriginalKeys" (list .Values (dict
      "finetuningImage" "set image.repository and image.tag instead (the original engine's image does not run llmft; the default is this suite's image): remove the key"
      "aimManifest" "this chart writes no AIM manifest: remove the key (serve the result with the llm-inference-vllm chart)")) -}}
{{- include "llmft-common.checkLocation" (list "basemodel" .Values.basemodel) -}}
{{- with .Values.checkpointsRemote }}{{ include "llmft-common.checkBucketLocation" (list "checkpointsRemote" .) }}{{ end -}}
{{- with .Values.logsRemote }}{{ include "llmft-common.checkBucketLocation" (list "logsRemote" .) }}{{ end -}}
{{- if and (eq .Values.distributedType "custom-accelerate-config") (not .Values.customAccelerateConfig) -}}
{{- fail "distributedType is custom-accelerate-config but customAccelerateConfig is empty: paste an accelerate config YAML there, or choose a preset (auto-ddp, auto-deepspeed-stage3, ...)" -}}
{{- end -}}
{{- end -}}

{{- define "llm-finetune.processes" -}}
{{- max 1 (int .Values.finetuningGpus) -}}
{{- end -}}

{{/* "true" when the run spans several nodes (finetuningNodes > 1): an Indexed Job and a headless Service. */}}
{{- define "llm-finetune.multiNode" -}}
{{- if gt (int (.Values.finetuningNodes | default 1)) 1 }}true{{ end -}}
{{- end -}}

{{/*
The Job whose pods train: the release's own, or under `workload: JobSet` the one the JobSet controller creates
for its replicated job `node` (`<jobset>-<replicated job>-<job index>`). Its pod of index i is `<job>-i`.
*/}}
{{- define "llm-finetune.jobName" -}}
{{- if eq .Values.workload "JobSet" }}{{ printf "%s-node-0" .Release.Name }}{{ else }}{{ .Release.Name }}{{ end -}}
{{- end -}}

{{/* The labels that select the run's pods, whichever workload created them. */}}
{{- define "llm-finetune.podSelector" -}}
{{- if eq .Values.workload "JobSet" -}}
jobset.sigs.k8s.io/jobset-name: {{ .Release.Name }}
{{- else -}}
batch.kubernetes.io/job-name: {{ .Release.Name }}
{{- end -}}
{{- end -}}

{{/* The headless Service that gives the nodes' pods their DNS names (`<job>-<index>.<release>-nodes`); the
JobSet controller creates it under `workload: JobSet`. */}}
{{- define "llm-finetune.nodesService" -}}
{{- printf "%s-nodes" .Release.Name -}}
{{- end -}}

{{/* TCP port of the c10d rendezvous store on pod 0 (torchrun's default). */}}
{{- define "llm-finetune.rendezvousPort" -}}
29400
{{- end -}}
