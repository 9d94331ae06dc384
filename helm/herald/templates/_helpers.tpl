{{/*
Names, labels and the values shared by several templates.
*/}}

{{- define "herald.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name; kept short enough for "-router-headless" and a pod ordinal. */}}
{{- define "herald.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "herald.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "herald.labels" -}}
helm.sh/chart: {{ include "herald.chart" . }}
{{ include "herald.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: herald
{{- end }}

{{- define "herald.selectorLabels" -}}
app.kubernetes.io/name: {{ include "herald.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "herald.router.fullname" -}}
{{- printf "%s-router" (include "herald.fullname" .) }}
{{- end }}

{{- define "herald.router.headless" -}}
{{- printf "%s-router-headless" (include "herald.fullname" .) }}
{{- end }}

{{- define "herald.gateway.fullname" -}}
{{- printf "%s-gateway" (include "herald.fullname" .) }}
{{- end }}

{{- define "herald.router.selectorLabels" -}}
{{ include "herald.selectorLabels" . }}
app.kubernetes.io/component: router
{{- end }}

{{- define "herald.gateway.selectorLabels" -}}
{{ include "herald.selectorLabels" . }}
app.kubernetes.io/component: gateway
{{- end }}

{{- define "herald.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "herald.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The image reference: by digest when one is given, else by tag (appVersion by default). */}}
{{- define "herald.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if eq $tag "latest" }}
{{- fail "image.tag: pin a version, not latest" }}
{{- end }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/* A router's stable DNS name, given its ordinal. */}}
{{- define "herald.router.host" -}}
{{- $ := index . 0 }}
{{- $ordinal := index . 1 }}
{{- printf "%s-%d.%s.%s.svc.%s" (include "herald.router.fullname" $) $ordinal (include "herald.router.headless" $) $.Release.Namespace $.Values.clusterDomain }}
{{- end }}

{{/* HERALD_PEERS: every voter as ID=HOST:PORT, node id = ordinal + 1. */}}
{{- define "herald.router.peers" -}}
{{- $peers := list }}
{{- range $ordinal := until (int .Values.router.replicas) }}
{{- $peers = append $peers (printf "%d=%s:%d" (add1 $ordinal) (include "herald.router.host" (list $ $ordinal)) (int $.Values.router.grpcPort)) }}
{{- end }}
{{- join "," $peers }}
{{- end }}

{{/* HERALD_ROUTER: every router's gRPC URL; a gateway links to whichever leads. */}}
{{- define "herald.router.urls" -}}
{{- $urls := list }}
{{- range $ordinal := until (int .Values.router.replicas) }}
{{- $urls = append $urls (printf "http://%s:%d" (include "herald.router.host" (list $ $ordinal)) (int $.Values.router.grpcPort)) }}
{{- end }}
{{- join "," $urls }}
{{- end }}

{{- define "herald.listen" -}}
{{- $ := index . 0 }}
{{- printf "%s:%d" $.Values.listenHost (int (index . 1)) }}
{{- end }}

{{/* Whether the native preStop sleep action can be used (on by default from Kubernetes 1.30). */}}
{{- define "herald.gateway.preStopSleep" -}}
{{- if and (gt (int .Values.gateway.drain.preStopSleepSeconds) 0) (semverCompare ">=1.30.0-0" .Capabilities.KubeVersion.Version) }}
{{- int .Values.gateway.drain.preStopSleepSeconds }}
{{- else }}
{{- 0 }}
{{- end }}
{{- end }}

{{/* The gateway's grace period: preStop sleep + drain timeout + margin. */}}
{{- define "herald.gateway.terminationGracePeriodSeconds" -}}
{{- add (include "herald.gateway.preStopSleep" . | int) (int .Values.gateway.drain.timeoutSeconds) (int .Values.gateway.drain.graceMarginSeconds) }}
{{- end }}

{{/* Spreads a component's pods over a topology key. */}}
{{- define "herald.topologySpread" -}}
{{- $ := index . 0 }}
{{- $spread := index . 1 }}
{{- $selector := index . 2 }}
{{- if $spread.enabled }}
topologySpreadConstraints:
  - maxSkew: {{ $spread.maxSkew }}
    topologyKey: {{ $spread.topologyKey }}
    whenUnsatisfiable: {{ $spread.whenUnsatisfiable }}
    labelSelector:
      matchLabels:
        {{- $selector | nindent 8 }}
{{- end }}
{{- end }}

{{/* Probes on the ops port. */}}
{{- define "herald.probes" -}}
{{- $probes := index . 0 }}
{{- $port := index . 1 }}
startupProbe:
  httpGet:
    path: /healthz
    port: {{ $port }}
  periodSeconds: {{ $probes.startup.periodSeconds }}
  failureThreshold: {{ $probes.startup.failureThreshold }}
livenessProbe:
  httpGet:
    path: /healthz
    port: {{ $port }}
  periodSeconds: {{ $probes.liveness.periodSeconds }}
  timeoutSeconds: {{ $probes.liveness.timeoutSeconds | default 1 }}
  failureThreshold: {{ $probes.liveness.failureThreshold }}
readinessProbe:
  httpGet:
    path: /readyz
    port: {{ $port }}
  periodSeconds: {{ $probes.readiness.periodSeconds }}
  timeoutSeconds: {{ $probes.readiness.timeoutSeconds | default 1 }}
  failureThreshold: {{ $probes.readiness.failureThreshold }}
{{- end }}
