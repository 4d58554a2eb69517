{{/*
The pod security context of every llmft pod (Pod Security "restricted"): a non-root UID/GID from
`podSecurity.runAsUser` / `runAsGroup` (default 10001, the workload images' user) and `fsGroup`, so the
volumes are writable by that user. Called with the chart's context.
*/}}
{{- define "llmft-common.podSecurityContext" -}}
{{- $security := .Values.podSecurity | default dict -}}
runAsNonRoot: true
runAsUser: {{ dig "runAsUser" 10001 $security | int64 }}
runAsGroup: {{ dig "runAsGroup" 10001 $security | int64 }}
fsGroup: {{ dig "fsGroup" 10001 $security | int64 }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/*
`automountServiceAccountToken` of every llmft pod: false unless `podSecurity.automountServiceAccountToken`
is true (no llmft container talks to the Kubernetes API). Called with the chart's context.
*/}}
{{- define "llmft-common.serviceAccountToken" -}}
automountServiceAccountToken: {{ dig "automountServiceAccountToken" false (.Values.podSecurity | default dict) }}
{{- end -}}

{{/*
The security context of every llmft container: no privilege escalation, no capabilities, and a read-only root
filesystem unless `podSecurity.readOnlyRootFilesystem` is false (the writable paths are volumes:
`llmft-common.writableMounts` and the chart's own). Called with the chart's context.
*/}}
{{- define "llmft-common.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: {{ dig "readOnlyRootFilesystem" true (.Values.podSecurity | default dict) }}
capabilities:
  drop: [ALL]
{{- end -}}

{{/*
Where a pod may run and what it pulls with, from the values every chart has: imagePullSecrets,
priorityClassName, nodeSelector, tolerations, affinity (each only when set). Called with the chart's context.
*/}}
{{- define "llmft-common.podScheduling" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/*
A scratch volume: an emptyDir with a size limit, or, when `storageClass` is set, a generic ephemeral volume of
that class. Called with (dict "context" $ "name" "downloads" "size" "64Gi").
*/}}
{{- define "llmft-common.scratchVolume" -}}
- name: {{ .name }}
  {{- if .context.Values.storageClass }}
  ephemeral:
    volumeClaimTemplate:
      metadata:
        labels:
          {{- include "llmft-common.selectorLabels" .context | nindent 10 }}
      spec:
        accessModes: [ReadWriteOnce]
        storageClassName: {{ .context.Values.storageClass | quote }}
        resources:
          requests:
            storage: {{ .size | quote }}
  {{- else }}
  emptyDir:
    sizeLimit: {{ .size | quote }}
  {{- end }}
{{- end -}}
