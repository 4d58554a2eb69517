{{/*
A NetworkPolicy for one component's pods, rendered only with `networkPolicy.enabled`. Egress: DNS (port 53,
UDP and TCP), the bucket endpoint (`networkPolicy.bucketEndpoints`: IP ranges and ports, since a NetworkPolicy
peer cannot be a host name), the Hugging Face Hub with `networkPolicy.allowHub` (HTTPS to addresses outside the
private ranges), the chart's own `egress` rules and the user's `networkPolicy.extraEgress`. Ingress: only the
chart's `ingress` rules (none: no connection in).
Called with (dict "context" $ "name" "NAME" "component" "COMPONENT" "ingress" LIST "egress" LIST).
*/}}
{{- define "llmft-common.networkPolicy" -}}
{{- $values := .context.Values.networkPolicy | default dict -}}
{{- if $values.enabled }}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: {{ .name }}
  labels:
    {{- include "llmft-common.labels" (dict "context" .context "component" .component) | nindent 4 }}
spec:
  podSelector:
    matchLabels:
      {{- include "llmft-common.selectorLabels" .context | nindent 6 }}
      app.kubernetes.io/component: {{ .component }}
  policyTypes: [Ingress, Egress]
  ingress:
    {{- with .ingress }}
    {{- toYaml . | nindent 4 }}
    {{- else }} []
    {{- end }}
  egress:
    - ports:
        - {protocol: UDP, port: 53}
        - {protocol: TCP, port: 53}
    {{- range $values.bucketEndpoints }}
    - to:
        - ipBlock:
            cidr: {{ .cidr | quote }}
            {{- with .except }}
            except: {{ toJson . }}
            {{- end }}
      ports:
        {{- range .ports }}
        - {protocol: TCP, port: {{ . }}}
        {{- end }}
    {{- end }}
    {{- if $values.allowHub }}
    - to:
        - ipBlock:
            cidr: 0.0.0.0/0
            except: [10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, 169.254.0.0/16]
      ports:
        - {protocol: TCP, port: 443}
    {{- end }}
    {{- with .egress }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
    {{- with $values.extraEgress }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
{{- end }}
{{- end -}}
