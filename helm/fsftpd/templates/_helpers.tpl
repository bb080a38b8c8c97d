{{/*
Names. The full name is cut at 52 characters: a StatefulSet's pods carry a
controller-revision-hash label of NAME-HASH, which must stay within 63.
*/}}
{{- define "fsftpd.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 52 | trimSuffix "-" -}}
{{- end -}}

{{- define "fsftpd.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "fsftpd.namespace" -}}
{{- default .Release.Namespace .Values.namespaceOverride -}}
{{- end -}}

{{- define "fsftpd.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "fsftpd.selectorLabels" -}}
app.kubernetes.io/name: {{ include "fsftpd.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "fsftpd.labels" -}}
helm.sh/chart: {{ include "fsftpd.chart" . }}
{{ include "fsftpd.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: fsftpd
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "fsftpd.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "fsftpd.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "fsftpd.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* The chart's own Secret (users, single-user password, S3 keys). */}}
{{- define "fsftpd.secretName" -}}
{{- include "fsftpd.fullname" . -}}
{{- end -}}

{{/* "true" when the chart's Secret holds a users file or the single user's password. */}}
{{- define "fsftpd.ownUsers" -}}
{{- if not .Values.auth.existingSecret -}}true{{- end -}}
{{- end -}}

{{/* "true" when the S3 keys come from the chart's Secret. */}}
{{- define "fsftpd.ownS3Keys" -}}
{{- if and (not .Values.s3.existingSecret) .Values.s3.accessKeyId -}}true{{- end -}}
{{- end -}}

{{/*
A number from values as Kubernetes wants it: values arrive as float64, and the default
formatting writes 50000000 as 5e+07.
*/}}
{{- define "fsftpd.number" -}}
{{- if and (kindIs "float64" .) (eq (float64 (int64 .)) .) -}}
{{- int64 . -}}
{{- else -}}
{{- . -}}
{{- end -}}
{{- end -}}

{{/*
The passive range and its slices. Each pod owns the contiguous block `index` of the range
(block size = ports // replicas), the same split the appliance makes from FSFTPD_REPLICAS and
FSFTPD_REPLICA_INDEX. Rendering stops here, with the reason, when the range cannot be split.
*/}}
{{- define "fsftpd.passive.validate" -}}
{{- $low := int .Values.passive.minPort -}}
{{- $high := int .Values.passive.maxPort -}}
{{- $replicas := int .Values.replicaCount -}}
{{- if lt $high $low -}}
{{- fail (printf "passive.maxPort (%d) is below passive.minPort (%d)" $high $low) -}}
{{- end -}}
{{- $count := add1 (sub $high $low) -}}
{{- if lt $count $replicas -}}
{{- fail (printf "the passive range %d-%d has %d ports, fewer than replicaCount=%d: each replica needs its own slice of at least one port; widen passive.minPort/passive.maxPort to at least %d ports" $low $high $count $replicas $replicas) -}}
{{- end -}}
{{- $size := div $count $replicas -}}
{{- if lt $size (int .Values.config.workers) -}}
{{- fail (printf "the passive range %d-%d gives each of the %d replica(s) %d port(s), fewer than config.workers=%d: each worker process needs its own port; widen the range to at least %d ports" $low $high $replicas $size (int .Values.config.workers) (mul $replicas (int .Values.config.workers))) -}}
{{- end -}}
{{- if and .Values.passive.addresses (ne (len .Values.passive.addresses) $replicas) -}}
{{- fail (printf "passive.addresses has %d entries but replicaCount is %d: give exactly one address per pod" (len .Values.passive.addresses) $replicas) -}}
{{- end -}}
{{- if and .Values.passive.addresses (ne .Values.passive.expose "service") -}}
{{- fail "passive.addresses (one address per pod) only works with passive.expose=service; with hostPort/hostNetwork a pod moves between nodes, so use passive.address (empty: the node's IP)" -}}
{{- end -}}
{{- if and (eq .Values.passive.expose "service") (eq .Values.passive.service.type "LoadBalancer") (not .Values.passive.address) (not .Values.passive.addresses) -}}
{{- fail "passive.service.type=LoadBalancer needs passive.address (an IP or DNS name; `{index}` is replaced by the pod's ordinal, e.g. ftp-{index}.example.com) or passive.addresses (one IP per pod): the load balancers' addresses are not known when the chart renders, and a pod that announces its own cluster address cannot be reached from outside" -}}
{{- end -}}
{{- if and (eq .Values.passive.expose "service") (eq .Values.passive.service.type "NodePort") (or (lt $low 30000) (gt $high 32767)) -}}
{{- fail (printf "passive.service.type=NodePort publishes each passive port as the same nodePort, so the range %d-%d must lie within Kubernetes' default NodePort range 30000-32767" $low $high) -}}
{{- end -}}
{{- $grace := .Values.terminationGracePeriodSeconds -}}
{{- if and (not (kindIs "invalid" $grace)) (le (float64 $grace) (float64 .Values.config.shutdownTimeout)) -}}
{{- fail (printf "terminationGracePeriodSeconds (%v) must exceed config.shutdownTimeout (%v), or Kubernetes kills the pod in the middle of its drain" $grace .Values.config.shutdownTimeout) -}}
{{- end -}}
{{- end -}}

{{/* Ports per pod. */}}
{{- define "fsftpd.passive.sliceSize" -}}
{{- div (add1 (sub (int .Values.passive.maxPort) (int .Values.passive.minPort))) (int .Values.replicaCount) -}}
{{- end -}}

{{/* Every passive port some pod serves (the remainder of an uneven split is left out), as a
JSON list. */}}
{{- define "fsftpd.passive.usedPorts" -}}
{{- $size := int (include "fsftpd.passive.sliceSize" .) -}}
{{- $low := int .Values.passive.minPort -}}
{{- $ports := list -}}
{{- range $p := until (mul $size (int .Values.replicaCount) | int) -}}
{{- $ports = append $ports (add $low $p) -}}
{{- end -}}
{{- toJson $ports -}}
{{- end -}}

{{/* FSFTPD_PASSIVE_ADDRESS: what each pod announces (may reference $(POD_HOST_IP)). */}}
{{- define "fsftpd.passive.address" -}}
{{- if .Values.passive.addresses -}}
{{- printf "%s-passive-{index}" (include "fsftpd.fullname" .) -}}
{{- else if .Values.passive.address -}}
{{- .Values.passive.address -}}
{{- else if or (ne .Values.passive.expose "service") (eq .Values.passive.service.type "NodePort") -}}
$(POD_HOST_IP)
{{- else -}}
{{- printf "%s-{index}.%s.svc.%s" (include "fsftpd.fullname" .) (include "fsftpd.namespace" .) .Values.clusterDomain -}}
{{- end -}}
{{- end -}}

{{/* Service type NodePort/LoadBalancer: the types that accept externalTrafficPolicy. */}}
{{- define "fsftpd.isExternal" -}}
{{- if or (eq . "NodePort") (eq . "LoadBalancer") -}}true{{- end -}}
{{- end -}}
