{{/* Names, labels and derived values shared by the templates. */}}

{{- define "drover.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "drover.fullname" -}}
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

{{/* Cluster-scoped objects carry the namespace too: two releases of one name never collide. */}}
{{- define "drover.clusterName" -}}
{{- printf "%s-%s" .Release.Namespace (include "drover.fullname" .) | trunc 253 | trimSuffix "-" }}
{{- end }}

{{- define "drover.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "drover.selectorLabels" -}}
app.kubernetes.io/name: {{ include "drover.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "drover.labels" -}}
helm.sh/chart: {{ include "drover.chart" . }}
{{ include "drover.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: drover
{{- end }}

{{- define "drover.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "drover.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "drover.peering" -}}
{{- default (include "drover.clusterName" .) .Values.operator.peering | trunc 253 }}
{{- end }}

{{- define "drover.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "drover.apiURL" -}}
{{- if .Values.api.url }}
{{- .Values.api.url }}
{{- else if (include "drover.podTLS" .) }}
{{- printf "https://%s.%s.svc:%d" (include "drover.fullname" .) .Release.Namespace (int .Values.aggregation.port) }}
{{- else }}
{{- printf "http://%s.%s.svc:%d" (include "drover.fullname" .) .Release.Namespace (int .Values.service.port) }}
{{- end }}
{{- end }}

{{/* Task pods reach the API over HTTPS, verifying it with the certificate's ca.crt. */}}
{{- define "drover.podTLS" -}}
{{- if and .Values.aggregation.enabled .Values.api.tls }}true{{ end }}
{{- end }}

{{/* The Secret with the HTTPS certificate of the aggregated API. */}}
{{- define "drover.tlsSecret" -}}
{{- .Values.aggregation.tls.existingSecret | default (printf "%s-tls" (include "drover.fullname" .)) }}
{{- end }}

{{/* The Secret holding the database URL, and its key. */}}
{{- define "drover.databaseSecret" -}}
{{- if .Values.database.existingSecret }}
{{- .Values.database.existingSecret }}
{{- else if .Values.database.url }}
{{- printf "%s-database" (include "drover.fullname" .) }}
{{- else }}
{{- printf "%s-postgresql" (include "drover.fullname" .) }}
{{- end }}
{{- end }}

{{- define "drover.databaseSecretKey" -}}
{{- if .Values.database.existingSecret }}
{{- .Values.database.existingSecretKey }}
{{- else }}
{{- "url" }}
{{- end }}
{{- end }}

{{/* Checks the schema cannot express clearly; each failure names the value to change. */}}
{{- define "drover.validate" -}}
{{- $sources := 0 }}
{{- if .Values.database.url }}{{ $sources = add1 $sources }}{{ end }}
{{- if .Values.database.existingSecret }}{{ $sources = add1 $sources }}{{ end }}
{{- if .Values.postgresql.enabled }}{{ $sources = add1 $sources }}{{ end }}
{{- if eq $sources 0 }}
{{- fail "database: set one of database.url, database.existingSecret or postgresql.enabled=true" }}
{{- end }}
{{- if gt $sources 1 }}
{{- fail "database: set only one of database.url, database.existingSecret and postgresql.enabled" }}
{{- end }}
{{- if and .Values.operator.standalone (gt (int .Values.replicas) 1) }}
{{- fail "operator.standalone: true runs without peering, so replicas must be 0 or 1" }}
{{- end }}
{{- if and .Values.runPods.limitRange.enabled (not .Values.operator.namespaces) }}
{{- fail "runPods.limitRange.enabled needs operator.namespaces (the namespaces to put it in)" }}
{{- end }}
{{- if and (not .Values.serviceAccount.create) (not .Values.serviceAccount.name) }}
{{- fail "serviceAccount.name: required when serviceAccount.create is false" }}
{{- end }}
{{- end }}
