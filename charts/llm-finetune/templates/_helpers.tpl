{{- define "llm-finetune.labels" -}}
{{ include "llmft-common.labels" (dict "context" . "component" "finetune") }}
{{- end -}}

{{/*
The engine config: finetuning_config plus what the chart's own keys decide, in the sections the engine's
models read (llmft.finetune.config): run_conf (basemodel, mergeAdapter, checkpointsRemote, logsRemote,
debug.skip_checkpoint_download), training_args.output_dir (the checkpoints volume) and launch_conf
(finetuningGpus, distributedType, the accelerate config mounted next to this file). The chart's keys win over
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
{{- $_ := set $config "launch_conf" (dict "num_processes" (include "llm-finetune.processes" . | int) "distributed_type" .Values.distributedType "accelerate_config" "/config/accelerate_config.yaml") -}}
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
