{{/* The chart's name, used in labels. */}}
{{- define "ddb.name" -}}
{{- .Chart.Name -}}
{{- end -}}

{{/* Fail early on a release name Kubernetes would reject as a Job or label value. */}}
{{- define "ddb.validateReleaseName" -}}
{{- if or (gt (len .Release.Name) 53) (not (regexMatch "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$" .Release.Name)) -}}
{{- fail (printf "release name %q is invalid: use lowercase letters, digits and '-' (at most 53 characters)" .Release.Name) -}}
{{- end -}}
{{- end -}}

{{/* Standard labels, then the user's `labels`. */}}
{{- define "ddb.labels" -}}
app.kubernetes.io/name: {{ include "ddb.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: download-data
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- with .Values.labels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* The security context of every container. */}}
{{- define "ddb.containerSecurity" -}}
allowPrivilegeEscalation: false
capabilities:
  drop: ["ALL"]
{{- end -}}
