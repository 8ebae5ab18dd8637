{{/*
Chart name. Truncated at 63 chars because Kubernetes names and label values are DNS labels.
*/}}
{{- define "labelfree.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name used as the prefix of every object. Truncated at 63 chars (DNS label limit); when the
release name already contains the chart name it is not repeated ("labelfree-labelfree").
Component names are appended to it, so keep release names short: suffixes add up to 20 chars.
*/}}
{{- define "labelfree.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Chart label value: "+" is not allowed in label values, SemVer build metadata uses it.
*/}}
{{- define "labelfree.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Selector labels: only the stable ones, because a Deployment's selector is immutable and a
version label in it would break every upgrade.
*/}}
{{- define "labelfree.selectorLabels" -}}
app.kubernetes.io/name: {{ include "labelfree.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Common labels on every object: selector labels plus the ones that may change between releases.
*/}}
{{- define "labelfree.labels" -}}
helm.sh/chart: {{ include "labelfree.chart" . }}
{{ include "labelfree.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: labelfree
{{- end }}

{{/*
ServiceAccount of the API and worker pods. Separate from the Spark one so that only pods
which run spark-submit carry Kubernetes API rights.
*/}}
{{- define "labelfree.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "labelfree.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
ServiceAccount of spark-submit (explainer pods) and of the Spark driver pod it creates.
*/}}
{{- define "labelfree.sparkServiceAccountName" -}}
{{- default (printf "%s-spark" (include "labelfree.fullname" .)) .Values.spark.serviceAccount.name }}
{{- end }}

{{/*
Image reference for a key under .Values.images: an empty tag falls back to appVersion so
a published chart pulls the images built from the same commit.
Usage: include "labelfree.image" (list $ "ingest")
*/}}
{{- define "labelfree.image" -}}
{{- $root := index . 0 }}
{{- $key := index . 1 }}
{{- $img := index $root.Values.images $key | required (printf "images.%s is not defined" $key) }}
{{- printf "%s:%s" $img.repository (default $root.Chart.AppVersion $img.tag) }}
{{- end }}

{{/*
Name of the Triton Service; the inference pods dial it on gRPC port 8001.
*/}}
{{- define "labelfree.tritonName" -}}
{{- printf "%s-triton" (include "labelfree.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Secret-backed environment. Every secret arrives through secretKeyRef on
secrets.existingSecret; the S3 keys are optional because workload identity needs none.
*/}}
{{- define "labelfree.secretEnv" -}}
{{- $s := .Values.secrets }}
{{- $keys := $s.keys }}
- name: LABELFREE_DATABASE_URL
  valueFrom: {secretKeyRef: {name: {{ $s.existingSecret | quote }}, key: {{ $keys.databaseUrl | quote }}}}
- name: LABELFREE_BROKER_URL
  valueFrom: {secretKeyRef: {name: {{ $s.existingSecret | quote }}, key: {{ $keys.brokerUrl | quote }}}}
{{- if $keys.resultBackend }}
- name: LABELFREE_RESULT_BACKEND
  valueFrom: {secretKeyRef: {name: {{ $s.existingSecret | quote }}, key: {{ $keys.resultBackend | quote }}}}
{{- end }}
- name: LABELFREE_SECRET_KEY
  valueFrom: {secretKeyRef: {name: {{ $s.existingSecret | quote }}, key: {{ $keys.secretKey | quote }}}}
{{- if $keys.s3AccessKey }}
- name: LABELFREE_S3_ACCESS_KEY
  valueFrom: {secretKeyRef: {name: {{ $s.existingSecret | quote }}, key: {{ $keys.s3AccessKey | quote }}, optional: true}}
{{- end }}
{{- if $keys.s3SecretKey }}
- name: LABELFREE_S3_SECRET_KEY
  valueFrom: {secretKeyRef: {name: {{ $s.existingSecret | quote }}, key: {{ $keys.s3SecretKey | quote }}, optional: true}}
{{- end }}
{{- end }}

{{/*
The environment of every labelfree container: plain settings from the ConfigMap, secrets
by reference, and the pod's own name for Spark (driver pods are owned by it).
*/}}
{{- define "labelfree.envFrom" -}}
- configMapRef:
    name: {{ include "labelfree.fullname" . }}-config
{{- end }}

{{/*
Secret env plus the pod name (logs and Spark driver names carry it) and operator extras.
*/}}
{{- define "labelfree.env" -}}
{{ include "labelfree.secretEnv" . }}
- name: POD_NAME
  valueFrom: {fieldRef: {fieldPath: metadata.name}}
{{- with .Values.config.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Pod-level bits shared by every labelfree pod. The checksum restarts pods when the ConfigMap
changes, since envFrom is only read at container start.
*/}}
{{- define "labelfree.podAnnotations" -}}
checksum/config: {{ include (print $.Template.BasePath "/configmap.yaml") . | sha256sum }}
{{- end }}

{{/*
Pod spec fields every labelfree pod shares; scheduling values apply chart-wide so that one
nodeSelector moves the whole release (Triton has its own, for GPU nodes).
*/}}
{{- define "labelfree.podCommon" -}}
{{- with .Values.images.pullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
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
{{- end }}

{{/*
Writable scratch: the root filesystem is read-only, so /tmp (data_dir, Spark's local dirs,
library caches) is an emptyDir with a size limit.
*/}}
{{- define "labelfree.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.tmpSizeLimit }}
{{- end }}

{{/*
Mount for labelfree.tmpVolume; the images set HOME and LABELFREE_DATA_DIR under /tmp.
*/}}
{{- define "labelfree.tmpMount" -}}
- name: tmp
  mountPath: /tmp
{{- end }}

{{/*
Environment of pods that open Spark sessions (explainer API, explain worker). In client mode
the pod itself is the driver: executors must reach it by IP (pod names do not resolve), on
fixed ports the NetworkPolicies can open, and naming the driver pod makes Kubernetes delete
the executors when it goes. PySpark passes PYSPARK_SUBMIT_ARGS to the JVM it launches, so
this needs no code; $(VAR) is expanded by the kubelet from the variables above it.
*/}}
{{- define "labelfree.sparkEnv" -}}
{{- $s := .Values.spark }}
- name: POD_IP
  valueFrom: {fieldRef: {fieldPath: status.podIP}}
- name: PYSPARK_SUBMIT_ARGS
  value: >-
    --conf 'spark.driver.host=$(POD_IP)'
    --conf 'spark.driver.bindAddress=0.0.0.0'
    --conf 'spark.driver.port={{ $s.driverPort }}'
    --conf 'spark.blockManager.port={{ $s.blockManagerPort }}'
    --conf 'spark.kubernetes.driver.pod.name=$(POD_NAME)'
    {{- range $k, $v := $s.extraConf }}
    --conf '{{ $k }}={{ $v }}'
    {{- end }}
    pyspark-shell
{{- end }}
