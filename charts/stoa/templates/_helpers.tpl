{{/* Chart name, truncated to 63 characters. */}}
{{- define "stoa.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name: the release name, unless it does not contain the chart name. */}}
{{- define "stoa.fullname" -}}
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

{{- define "stoa.operatorName" -}}
{{- printf "%s-operator" (include "stoa.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "stoa.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "stoa.labels" -}}
helm.sh/chart: {{ include "stoa.chart" . }}
app.kubernetes.io/name: {{ include "stoa.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: stoa
{{- end }}

{{- define "stoa.operatorSelectorLabels" -}}
app.kubernetes.io/name: {{ include "stoa.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "stoa.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "stoa.operatorName" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "stoa.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The Secret (keys rabbitmqUrl, postgresDsn) in each Agent namespace, and in the release namespace. */}}
{{- define "stoa.connectionsSecret" -}}
{{- .Values.connections.secretName }}
{{- end }}

{{- define "stoa.rabbitmqName" -}}
{{- printf "%s-rabbitmq" (include "stoa.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "stoa.postgresName" -}}
{{- printf "%s-postgres" (include "stoa.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The demo model's Deployment; its Service is always `stoa-model`, the name examples/debate/ targets. */}}
{{- define "stoa.modelName" -}}
{{- printf "%s-model" (include "stoa.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "stoa.modelImage" -}}
{{- $image := .Values.bundled.model.image }}
{{- printf "%s:%s" $image.repository (default (default .Chart.AppVersion .Values.image.tag) $image.tag) }}
{{- end }}

{{/* A password: the value given, else the one stored in the existing Secret, else a new random one. */}}
{{- define "stoa.password" -}}
{{- $given := index . 0 }}{{- $secret := index . 1 }}{{- $key := index . 2 }}
{{- if $given }}
{{- $given }}
{{- else if and $secret (hasKey $secret.data $key) }}
{{- index $secret.data $key | b64dec }}
{{- else }}
{{- randAlphaNum 24 }}
{{- end }}
{{- end }}

{{/* `stoa api`: its Deployment, Service, ServiceAccount and ClusterRole share this name. */}}
{{- define "stoa.apiName" -}}
{{- printf "%s-api" (include "stoa.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "stoa.apiSelectorLabels" -}}
app.kubernetes.io/name: {{ include "stoa.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: api
{{- end }}

{{- define "stoa.apiServiceAccountName" -}}
{{- if .Values.api.serviceAccount.create }}
{{- default (include "stoa.apiName" .) .Values.api.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.api.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* A map as "k=v,k2=v2" (sorted keys), for list-valued settings in env vars. */}}
{{- define "stoa.kvList" -}}
{{- $pairs := list }}
{{- range $k, $v := . }}{{- $pairs = append $pairs (printf "%s=%s" $k $v) }}{{- end }}
{{- join "," $pairs }}
{{- end }}

{{/* Names of .Values.imagePullSecrets, comma-separated (the operator gives them to the pods it builds). */}}
{{- define "stoa.pullSecretNames" -}}
{{- $names := list -}}
{{- range .Values.imagePullSecrets -}}
{{- $names = append $names .name -}}
{{- end -}}
{{- join "," $names -}}
{{- end -}}
