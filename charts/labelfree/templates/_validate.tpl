{{/*
validateConfig: refuse values that cannot work, at render time, with a message naming the
key to change. Rendered once from configmap.yaml (every install renders it). Each check
is one impossible combination; the tests in tests/deploy/test_validate_config.py hit each.
*/}}
{{- define "labelfree.validateConfig" -}}
{{- $v := .Values }}
{{- if ne $v.config.profile "cluster" }}
{{- fail (printf "config.profile=%q: only \"cluster\" is deployable; the embedded profile keeps its database and queue in one pod's SQLite files, which several pods cannot share" $v.config.profile) }}
{{- end }}
{{- if not $v.secrets.existingSecret }}
{{- fail "secrets.existingSecret is empty: the cluster profile needs a database URL, broker URL and secret key, and they come only from an existing Secret" }}
{{- end }}
{{- if or (not $v.secrets.keys.databaseUrl) (not $v.secrets.keys.brokerUrl) (not $v.secrets.keys.secretKey) }}
{{- fail "secrets.keys.databaseUrl, brokerUrl and secretKey must all name keys: the cluster profile cannot start without a database URL, a broker URL and a secret key" }}
{{- end }}
{{- if not (hasPrefix "s3://" $v.config.storeUrl) }}
{{- fail (printf "config.storeUrl=%q: the cluster profile needs an s3://bucket/prefix store, pods share no disk" $v.config.storeUrl) }}
{{- end }}
{{- if not (has $v.inference.backend (list "triton" "onnxruntime")) }}
{{- fail (printf "inference.backend=%q: use triton or onnxruntime" $v.inference.backend) }}
{{- end }}
{{- if and (eq $v.inference.backend "triton") (not $v.triton.enabled) (not $v.inference.tritonUrl) }}
{{- fail "inference.backend=triton but triton.enabled=false and inference.tritonUrl is empty: nothing to send requests to" }}
{{- end }}
{{- if $v.triton.enabled }}
{{- $repo := $v.triton.modelRepository }}
{{- if eq $repo.source "pvc" }}
{{- if not $repo.existingClaim }}
{{- fail "triton.modelRepository.source=pvc needs triton.modelRepository.existingClaim" }}
{{- end }}
{{- else if eq $repo.source "s3" }}
{{- if not (hasPrefix "s3://" $repo.s3Url) }}
{{- fail (printf "triton.modelRepository.s3Url=%q: source s3 needs an s3:// URL" $repo.s3Url) }}
{{- end }}
{{- else }}
{{- fail (printf "triton.modelRepository.source=%q: use pvc or s3" $repo.source) }}
{{- end }}
{{- if and $v.triton.gpu.enabled (lt (int $v.triton.gpu.count) 1) }}
{{- fail "triton.gpu.enabled=true with triton.gpu.count < 1: a GPU pod must request at least one GPU" }}
{{- end }}
{{- end }}
{{- if and (hasPrefix "k8s://" $v.spark.master) (not $v.spark.enabled) }}
{{- fail (printf "spark.master=%q submits to Kubernetes but spark.enabled=false: spark-submit would have no ServiceAccount or RBAC" $v.spark.master) }}
{{- end }}
{{- range $k, $val := $v.spark.extraConf }}
{{- if or (contains "'" (toString $val)) (contains "'" $k) }}
{{- fail (printf "spark.extraConf.%s: single quotes cannot be passed through PYSPARK_SUBMIT_ARGS" $k) }}
{{- end }}
{{- end }}
{{- if and $v.spark.operator.enabled (not $v.spark.enabled) }}
{{- fail "spark.operator.enabled=true needs spark.enabled=true: the SparkApplication driver runs as the Spark ServiceAccount" }}
{{- end }}
{{- if $v.keda.enabled }}
{{- if not $v.keda.address }}
{{- fail "keda.enabled=true needs keda.address (host:port of the Redis broker) to read queue lengths" }}
{{- end }}
{{- end }}
{{- range $name, $w := $v.workers }}
{{- if $w.enabled }}
{{- if lt (int $w.concurrency) 1 }}
{{- fail (printf "workers.%s.concurrency=%v: a worker needs at least one process" $name $w.concurrency) }}
{{- end }}
{{- if not (hasKey $v.images $w.image) }}
{{- fail (printf "workers.%s.image=%q is not a key of images" $name $w.image) }}
{{- end }}
{{- if and $v.keda.enabled (gt (int $w.keda.minReplicas) (int $w.keda.maxReplicas)) }}
{{- fail (printf "workers.%s.keda.minReplicas > maxReplicas" $name) }}
{{- end }}
{{- end }}
{{- end }}
{{- if $v.ingress.enabled }}
{{- if not $v.ingress.hosts }}
{{- fail "ingress.enabled=true with no ingress.hosts" }}
{{- end }}
{{- range $h := $v.ingress.hosts }}
{{- range $p := $h.paths }}
{{- $svc := index $v.api $p.service | default dict }}
{{- if not $svc.enabled }}
{{- fail (printf "ingress host %s routes to service %q, which is not an enabled api.* service" $h.host $p.service) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
