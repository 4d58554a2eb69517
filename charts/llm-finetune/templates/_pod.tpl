{{/*
The finetune pod (metadata and spec), the same in the Job and in the JobSet (`workload`): include it with
`nindent` at the column of `template:`'s contents.
*/}}
{{- define "llm-finetune.podTemplate" -}}
{{- $processes := include "llm-finetune.processes" . | int -}}
metadata:
  labels:
    {{- include "llm-finetune.labels" . | nindent 4 }}
  {{- with .Values.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  restartPolicy: Never
  {{- if and (include "llm-finetune.multiNode" .) (eq .Values.workload "Job") }}
  # Stable DNS names for the pods: <release>-<index>.<release>-nodes (pod 0 hosts the rendezvous).
  subdomain: {{ include "llm-finetune.nodesService" . }}
  {{- end }}
  {{- include "llmft-common.serviceAccountToken" . | nindent 2 }}
  securityContext:
    {{- include "llmft-common.podSecurityContext" . | nindent 4 }}
  {{- with include "llmft-common.podScheduling" . | trim }}{{ . | nindent 2 }}{{ end }}
  {{- if .Values.runTensorboard }}
  initContainers:
    # A native sidecar: starts before training, ends with it.
    - name: tensorboard
      image: {{ include "llmft-common.image" .Values.image | quote }}
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      restartPolicy: Always
      command: ["tensorboard", "--logdir", "/checkpoints/logs", "--host", "0.0.0.0", "--port", "6006"]
      ports:
        - {name: tensorboard, containerPort: 6006}
      # Its home and temp folders on the writable volumes (the root filesystem is read-only).
      env:
        {{- include "llmft-common.writableEnv" dict | nindent 8 }}
      securityContext:
        {{- include "llmft-common.containerSecurityContext" . | nindent 8 }}
      resources:
        requests: {cpu: 100m, memory: 512Mi}
        limits: {cpu: "1", memory: 2Gi}
      volumeMounts:
        - {name: checkpoints, mountPath: /checkpoints}
        {{- include "llmft-common.writableMounts" . | nindent 8 }}
  {{- end }}
  containers:
    - name: finetune
      image: {{ include "llmft-common.image" .Values.image | quote }}
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      # Everything the run needs is in this one file (launch_conf included); env is only for
      # endpoints, secrets and local caches.
      command: [llmft, train, /config/finetuning_config.yaml]
      {{- if include "llm-finetune.multiNode" . }}
      ports:
        - {name: rendezvous, containerPort: {{ include "llm-finetune.rendezvousPort" . }}}
      {{- end }}
      env:
        - {name: LLMFT_CACHE_DIR, value: /downloads}
        {{- include "llmft-common.writableEnv" (dict "hfHome" "/downloads/hf-home") | nindent 8 }}
        {{- include "llmft-common.bucketEnv" . | nindent 8 }}
        {{- with include "llmft-common.hubTokenEnv" . }}{{ . | nindent 8 }}{{ end }}
        {{- with .Values.env }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      securityContext:
        {{- include "llmft-common.containerSecurityContext" . | nindent 8 }}
      resources:
        requests:
          cpu: {{ mul .Values.cpusPerGpu $processes | quote }}
          memory: {{ printf "%dGi" (mul .Values.memoryPerGpu $processes) | quote }}
          {{- if gt (int .Values.finetuningGpus) 0 }}
          {{ .Values.gpuResourceName }}: {{ .Values.finetuningGpus | quote }}
          {{- end }}
        limits:
          memory: {{ printf "%dGi" (mul .Values.memoryPerGpu $processes) | quote }}
          {{- if gt (int .Values.finetuningGpus) 0 }}
          {{ .Values.gpuResourceName }}: {{ .Values.finetuningGpus | quote }}
          {{- end }}
      volumeMounts:
        - {name: config, mountPath: /config, readOnly: true}
        - {name: downloads, mountPath: /downloads}
        - {name: checkpoints, mountPath: /checkpoints}
        - {name: dshm, mountPath: /dev/shm}
        {{- include "llmft-common.writableMounts" . | nindent 8 }}
  volumes:
    - name: config
      configMap:
        name: {{ .Release.Name }}-config
    {{- include "llmft-common.scratchVolume" (dict "context" . "name" "downloads" "size" .Values.downloadsReservedSize) | nindent 4 }}
    {{- include "llmft-common.scratchVolume" (dict "context" . "name" "checkpoints" "size" .Values.checkpointsReservedSize) | nindent 4 }}
    - name: dshm
      emptyDir:
        medium: Memory
        sizeLimit: {{ .Values.sharedMemorySize | quote }}
    {{- include "llmft-common.writableVolumes" . | nindent 4 }}
{{- end -}}

{{/* How the Job treats a failed pod: exit status 2 fails it at once, an eviction is not a failure. */}}
{{- define "llm-finetune.podFailurePolicy" -}}
podFailurePolicy:
  rules:
    # Exit status 2 is a configuration or data error: restarting cannot fix it.
    - action: FailJob
      onExitCodes:
        containerName: finetune
        operator: In
        values: [2]
    - action: Ignore
      onPodConditions:
        - {type: DisruptionTarget, status: "True"}
{{- end -}}
