{{/*
Names: the tutorial's `kubectl port-forward services/llm-inference-vllm-$name` and
`kubectl delete deployments/llm-inference-vllm-$name` address these objects.
*/}}
{{- define "llm-inference-vllm.fullname" -}}
llm-inference-vllm-{{ .Release.Name }}
{{- end -}}

{{/* Labels of the Deployment, its pods and the Service: the suite's, then the user's (a Kueue queue name, ...). */}}
{{- define "llm-inference-vllm.labels" -}}
{{ include "llmft-common.labels" (dict "context" . "component" "inference") }}
{{- end -}}

{{/* True when .Values.model is a Hugging Face Hub id (hf://org/name): vLLM downloads it itself. */}}
{{- define "llm-inference-vllm.isHubModel" -}}
{{- if hasPrefix "hf://" .Values.model }}true{{ end -}}
{{- end -}}

{{/* The model argument of `vllm serve`: the downloaded folder, or the Hub id. */}}
{{- define "llm-inference-vllm.modelArg" -}}
{{- if include "llm-inference-vllm.isHubModel" . }}{{ trimPrefix "hf://" .Values.model }}{{ else }}/models/model{{ end -}}
{{- end -}}

{{/* Every check that needs more than the schema; runs before anything renders. */}}
{{- define "llm-inference-vllm.validate" -}}
{{- include "llmft-common.validateReleaseName" (dict "context" . "maxLength" 44 "why" (printf "so that the Service name %s fits Kubernetes' 63" (include "llm-inference-vllm.fullname" .))) -}}
{{- $model := .Values.model -}}
{{- if not $model -}}
{{- fail "model is required: --set model=s3://BUCKET/path/to/model (a folder uploaded by llmft, e.g. s3://default-bucket/experiments/NAME/checkpoint-final) or model=hf://org/name (a Hugging Face Hub model)" -}}
{{- end -}}
{{- if hasPrefix "hf://" $model -}}
{{- if not (regexMatch "^hf://[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$" $model) -}}
{{- fail (printf "model %q is not a Hugging Face Hub id: use hf://org/name, e.g. hf://TinyLlama/TinyLlama-1.1B-Chat-v1.0" $model) -}}
{{- end -}}
{{- else -}}
{{- $problem := include "llmft-common.bucketLocationProblem" $model -}}
{{- if and $problem (eq (include "llmft-common.locationKind" $model) "bucket") (not (contains "://" $model)) (regexMatch "^[^/]+/[^/]+$" $model) -}}
{{- fail (printf "model: %s, got %q; a Hugging Face Hub model is written hf://%s (vLLM downloads it from the Hub)" $problem $model $model) -}}
{{- end -}}
{{- include "llmft-common.checkBucketLocation" (list "model" $model) -}}
{{- end -}}
{{- if kindIs "string" .Values.image -}}
{{- $tag := regexFind ":[^/:]+$" .Values.image -}}
{{- fail (printf "image: %q is the original chart's form; write it as image.repository and image.tag: --set image.repository=%s --set image.tag=%s (an image without llmft, such as upstream vLLM, also needs downloaderImage.repository for bucket models)" .Values.image (trimSuffix $tag .Values.image) (trimPrefix ":" $tag | default "latest")) -}}
{{- end -}}
{{- if .Values.served_model_name -}}
{{- range $key, $_ := .Values.vllm_engine_args -}}
{{- if eq ($key | replace "-" "_") "served_model_name" -}}
{{- fail (printf "served_model_name and vllm_engine_args.%s are both given (the top-level key is the original chart's spelling): keep only vllm_engine_args.served_model_name" $key) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- range $adapter, $path := .Values.adapters -}}
{{- if not (regexMatch "^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$" $adapter) -}}
{{- fail (printf "adapters: the name %q is invalid: use letters, digits, '.', '_' or '-' (it is the \"model\" of API requests and a folder name)" $adapter) -}}
{{- end -}}
{{- if hasPrefix "hf://" $path -}}
{{- fail (printf "adapters.%s %q: adapters are served from the bucket; upload it with `llmft storage cp` and give its bucket path" $adapter $path) -}}
{{- end -}}
{{- include "llmft-common.checkBucketLocation" (list (printf "adapters.%s" $adapter) $path) -}}
{{- end -}}
{{- $owned := dict "model" "set the top-level `model` value" "host" "the chart listens on all interfaces" "port" "the chart sets it from containerPort" "tensor_parallel_size" "set `gpus`, which sets the GPU request too" "lora_modules" "set `adapters` (name: bucket path)" -}}
{{- range $key, $_ := .Values.vllm_engine_args -}}
{{- if not (regexMatch "^[a-z][a-z0-9_-]*$" $key) -}}
{{- fail (printf "vllm_engine_args.%s: write vLLM's argument names in snake_case or kebab-case, e.g. max_model_len" $key) -}}
{{- end -}}
{{- $normal := $key | replace "-" "_" -}}
{{- if hasKey $owned $normal -}}
{{- fail (printf "vllm_engine_args.%s is set by the chart: %s" $key (get $owned $normal)) -}}
{{- end -}}
{{- end -}}
{{- range $kind, $quantities := .Values.resources -}}
{{- if hasKey ($quantities | default dict) $.Values.gpuResourceName -}}
{{- fail (printf "resources.%s.%s: set `gpus` instead (it sets the GPU request and --tensor-parallel-size together)" $kind $.Values.gpuResourceName) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* A scalar as a command-line word: integral numbers without exponent or decimals (YAML numbers are floats). */}}
{{- define "llm-inference-vllm.word" -}}
{{- if and (kindIs "float64" .) (eq . (floor .)) -}}{{ int64 . }}{{- else -}}{{ toString . }}{{- end -}}
{{- end -}}

{{/*
The arguments of `vllm serve`, as a JSON list: the model, the chart-owned flags, then vllm_engine_args in key
order (true or no value -> bare flag, false -> omitted, list -> the flag and each item, map -> JSON).
*/}}
{{- define "llm-inference-vllm.serverArgs" -}}
{{- $args := list (include "llm-inference-vllm.modelArg" .) "--host" "0.0.0.0" "--port" (toString .Values.containerPort) "--tensor-parallel-size" (toString .Values.gpus) -}}
{{- $engine := dict -}}
{{- range $key, $value := .Values.vllm_engine_args -}}
{{- $_ := set $engine ($key | replace "-" "_") $value -}}
{{- end -}}
{{- if not (hasKey $engine "served_model_name") -}}
{{- $_ := set $engine "served_model_name" (.Values.served_model_name | default .Release.Name) -}}
{{- end -}}
{{- if .Values.adapters -}}
{{- $_ := set $engine "enable_lora" true -}}
{{- $modules := list -}}
{{- range $adapter, $_ := .Values.adapters -}}
{{- $modules = append $modules (printf "%s=/models/adapters/%s" $adapter $adapter) -}}
{{- end -}}
{{- $_ := set $engine "lora_modules" $modules -}}
{{- end -}}
{{- range $key, $value := $engine -}}
{{- $flag := printf "--%s" ($key | replace "_" "-") -}}
{{- if kindIs "invalid" $value -}}
{{- $args = append $args $flag -}}
{{- else if kindIs "bool" $value -}}
{{- if $value }}{{ $args = append $args $flag }}{{ end -}}
{{- else if kindIs "slice" $value -}}
{{- $args = append $args $flag -}}
{{- range $value }}{{ $args = append $args (include "llm-inference-vllm.word" .) }}{{ end -}}
{{- else if kindIs "map" $value -}}
{{- $args = concat $args (list $flag (toJson $value)) -}}
{{- else -}}
{{- $args = concat $args (list $flag (include "llm-inference-vllm.word" $value)) -}}
{{- end -}}
{{- end -}}
{{- toJson $args -}}
{{- end -}}

{{/* The name clients send as "model": the first served model name. */}}
{{- define "llm-inference-vllm.servedName" -}}
{{- $name := .Values.served_model_name | default .Release.Name -}}
{{- range $key, $value := .Values.vllm_engine_args -}}
{{- if eq ($key | replace "-" "_") "served_model_name" -}}
{{- if kindIs "slice" $value }}{{ $name = first $value }}{{ else }}{{ $name = $value }}{{ end -}}
{{- end -}}
{{- end -}}
{{- $name -}}
{{- end -}}

{{/* The download image: downloaderImage where its repository is set (its digest or tag), else the server image. */}}
{{- define "llm-inference-vllm.downloaderImage" -}}
{{- if .Values.downloaderImage.repository -}}
{{- include "llmft-common.image" (dict "repository" .Values.downloaderImage.repository "tag" (.Values.downloaderImage.tag | default .Values.image.tag) "digest" .Values.downloaderImage.digest) -}}
{{- else -}}
{{- include "llmft-common.image" .Values.image -}}
{{- end -}}
{{- end -}}
