{{/*
The bucket endpoint and credentials as environment variables (the names llmft reads); the keys only through
secretKeyRef. Called with the chart's context (bucketStorageHost, bucketCredentialsSecret).
*/}}
{{- define "llmft-common.bucketEnv" -}}
- name: BUCKET_STORAGE_HOST
  value: {{ .Values.bucketStorageHost | quote }}
- name: BUCKET_STORAGE_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .Values.bucketCredentialsSecret.name }}
      key: {{ .Values.bucketCredentialsSecret.accessKeyKey }}
- name: BUCKET_STORAGE_SECRET_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .Values.bucketCredentialsSecret.name }}
      key: {{ .Values.bucketCredentialsSecret.secretKeyKey }}
{{- end -}}

{{/* HF_TOKEN from the Secret in `hfTokenSecret` (nothing when its name is empty). Called with the chart's context. */}}
{{- define "llmft-common.hubTokenEnv" -}}
{{- if .Values.hfTokenSecret.name -}}
- name: HF_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ .Values.hfTokenSecret.name }}
      key: {{ .Values.hfTokenSecret.key }}
{{- end -}}
{{- end -}}
