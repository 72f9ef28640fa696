{{/* The release's name for its objects, at most 63 characters. */}}
{{- define "tollgate.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "tollgate.operator" -}}
{{- printf "%s-operator" (include "tollgate.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "tollgate.webhookService" -}}
{{- printf "%s-webhook" (include "tollgate.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "tollgate.tlsSecret" -}}
{{- printf "%s-webhook-tls" (include "tollgate.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "tollgate.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "tollgate.selector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{/* Where the API server sends one webhook's reviews: the Service, or webhook.url. */}}
{{- define "tollgate.clientConfig" -}}
{{- if .root.Values.webhook.url }}
url: {{ printf "%s%s" (trimSuffix "/" .root.Values.webhook.url) .path | quote }}
{{- else }}
service:
  namespace: {{ .root.Release.Namespace }}
  name: {{ include "tollgate.webhookService" .root }}
  path: {{ .path }}
  port: 443
{{- end }}
{{- end -}}

{{- define "tollgate.gateway" -}}
{{- printf "%s-gateway" (include "tollgate.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
