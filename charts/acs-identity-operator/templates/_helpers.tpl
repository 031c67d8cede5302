{{/* The chart's name, or nameOverride. */}}
{{- define "acs-identity-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Names of the release's objects: the release name when it contains the chart's name. */}}
{{- define "acs-identity-operator.fullname" -}}
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

{{- define "acs-identity-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "acs-identity-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "acs-identity-operator.labels" -}}
{{ include "acs-identity-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}

{{- define "acs-identity-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "acs-identity-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "acs-identity-operator.leaseName" -}}
{{- default (include "acs-identity-operator.fullname" .) .Values.leaderElection.leaseName }}
{{- end }}

{{- define "acs-identity-operator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
The operator's grants, one rule list for both scopes: what src/controller/ asks of the API
server (deploy/base/clusterrole.yaml comments each rule; tests/helm.rs checks that both say
the same). The cluster-scoped kinds only in scope=cluster.
*/}}
{{- define "acs-identity-operator.rules" -}}
{{- $cluster := eq .Values.scope "cluster" -}}
# AcsIdentity watch cache; the acsoperator.io/cleanup finalizer (JSON patch).
- apiGroups: [acsoperator.io]
  resources: [acsidentities]
  verbs: [list, watch, patch]
# Connection watch caches (never written).
- apiGroups: [acsoperator.io]
  resources: [acsconnections{{ if $cluster }}, clusteracsconnections{{ end }}]
  verbs: [list, watch]
# Status, by server-side apply.
- apiGroups: [acsoperator.io]
  resources: [acsidentities/status, acsconnections/status{{ if $cluster }}, clusteracsconnections/status{{ end }}]
  verbs: [patch]
# Token Secrets (label-selected watch, get, server-side apply, delete on cleanup); connection
# and CA Secrets (get; a metadata-only watch notices their changes).
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, list, watch, create, patch, delete]
# Workload identity of an AcsConnection: the ServiceAccount it names (get, for its
# annotations) and a token of it (create serviceaccounts/token) to exchange with Entra.
- apiGroups: [""]
  resources: [serviceaccounts]
  verbs: [get]
- apiGroups: [""]
  resources: [serviceaccounts/token]
  verbs: [create]
{{- if $cluster }}
# A ClusterAcsConnection's allowedNamespaces.selector, matched against the namespace's labels.
- apiGroups: [""]
  resources: [namespaces]
  verbs: [get]
{{- end }}
# Events about AcsIdentities (created, then patched when a Warning repeats).
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
{{- with .Values.workloadRestarts.kinds }}
# Workload restarts for renewed tokens (workloadRestarts.kinds): list and watch for the
# metadata-only watches, get for the first look, patch for the restart (one pod template
# annotation by server-side apply). Never create, update or delete.
- apiGroups: [apps]
  resources: [{{ include "acs-identity-operator.restartResources" . }}]
  verbs: [get, list, watch, patch]
{{- end }}
{{- end }}

{{/* The apps resources of the workload kinds restarted. */}}
{{- define "acs-identity-operator.restartResources" -}}
{{- $names := list }}
{{- range . }}{{ $names = append $names (printf "%ss" (lower .)) }}{{ end }}
{{- join ", " $names }}
{{- end }}
