{{/*
The writable paths of a container whose root filesystem is read-only: `/tmp` (TMPDIR) and the home folder
`/home/llmft` (HOME, the workload images' home), each an emptyDir. Every cache a workload writes is pointed
into the home volume by `llmft-common.writableEnv`; the chart's own volumes (downloads, checkpoints) are the
other writable places.
*/}}

{{/* The volumes: append under a pod's `volumes:`. Called with the chart's context. */}}
{{- define "llmft-common.writableVolumes" -}}
{{- $security := .Values.podSecurity | default dict -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ dig "tmpSize" "4Gi" $security | quote }}
- name: home
  emptyDir:
    sizeLimit: {{ dig "homeSize" "16Gi" $security | quote }}
{{- end -}}

{{/*
The mounts: append under a container's `volumeMounts:`. Called with the chart's context (containers of the pod
share /tmp and the home folder), or with (dict "subPath" "CONTAINER") to give a container folders of its own,
where a container runs code the others must not trust (download-data-to-bucket's data script).
*/}}
{{- define "llmft-common.writableMounts" -}}
- {name: tmp, mountPath: /tmp{{ with .subPath }}, subPath: {{ . }}{{ end }}}
- {name: home, mountPath: /home/llmft{{ with .subPath }}, subPath: {{ . }}{{ end }}}
{{- end -}}

{{/*
The environment that sends every cache to a writable volume: HOME, TMPDIR, XDG_CACHE_HOME, the Hugging Face
cache (HF_HOME; `hfHome` when the chart keeps it on a larger volume), Triton's and TorchInductor's compile
caches, matplotlib's config folder. Called with (dict "hfHome" "/downloads/hf-home") or (dict).
*/}}
{{- define "llmft-common.writableEnv" -}}
- {name: HOME, value: /home/llmft}
- {name: TMPDIR, value: /tmp}
- {name: XDG_CACHE_HOME, value: /home/llmft/.cache}
- {name: HF_HOME, value: {{ .hfHome | default "/home/llmft/.cache/huggingface" }}}
- {name: TRITON_CACHE_DIR, value: /home/llmft/.cache/triton}
- {name: TORCHINDUCTOR_CACHE_DIR, value: /home/llmft/.cache/torchinductor}
- {name: MPLCONFIGDIR, value: /home/llmft/.config/matplotlib}
{{- end -}}
