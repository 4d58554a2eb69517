{{/* The pod security context of every llmft pod (Pod Security "restricted"). */}}
{{- define "llmft-common.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 1000
runAsGroup: 1000
fsGroup: 1000
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* The security context of every llmft container. */}}
{{- define "llmft-common.containerSecurityContext" -}}
allowPrivilegeEscalation: false
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
