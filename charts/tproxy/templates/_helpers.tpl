{{/* The chart name, overridable. */}}
{{- define "tproxy.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The resource name prefix: the release name alone when it already holds the chart name ("tproxy"). */}}
{{- define "tproxy.fullname" -}}
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

{{- define "tproxy.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Stable labels, the only ones selectors use. Call with (dict "ctx" $ "component" "...") */}}
{{- define "tproxy.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tproxy.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Every object's labels. Call with (dict "ctx" $ "component" "...") */}}
{{- define "tproxy.labels" -}}
helm.sh/chart: {{ include "tproxy.chart" .ctx }}
{{ include "tproxy.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: tproxy
{{- end }}

{{- define "tproxy.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "tproxy.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "tproxy.caSecretName" -}}
{{- default (printf "%s-ca" (include "tproxy.fullname" .)) .Values.ca.existingSecret }}
{{- end }}

{{/* The root-certs ConfigMap: "tproxy-root-certs" for release "tproxy", as in the tutorial. */}}
{{- define "tproxy.rootCertsName" -}}
{{- printf "%s-root-certs" (include "tproxy.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* An image reference. Call with (dict "ctx" $ "image" .Values.images.tproxy) */}}
{{- define "tproxy.image" -}}
{{- $images := .ctx.Values.images }}
{{- $prefix := "" }}
{{- with $images.registry }}{{ $prefix = printf "%s/" (trimSuffix "/" .) }}{{ end }}
{{- if .image.digest }}
{{- printf "%s%s@%s" $prefix .image.repository .image.digest }}
{{- else }}
{{- printf "%s%s:%s" $prefix .image.repository (.image.tag | default $images.tag | default .ctx.Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/*
The CA pair as a dict {cert, key}: supplied values, else the Secret a previous release made (lookup),
else a new CA. Memoised in .Values so every template that calls it sees the same pair in one render.
*/}}
{{- define "tproxy.caPair" -}}
{{- if not (hasKey $.Values "__caPair") }}
{{- $pair := dict }}
{{- if and .Values.ca.cert .Values.ca.key }}
{{- $pair = dict "cert" .Values.ca.cert "key" .Values.ca.key }}
{{- else }}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (include "tproxy.caSecretName" .) }}
{{- if and $existing $existing.data (index $existing.data "tls.crt") (index $existing.data "tls.key") }}
{{- $pair = dict "cert" (index $existing.data "tls.crt" | b64dec) "key" (index $existing.data "tls.key" | b64dec) }}
{{- else }}
{{- $ca := genCA .Values.ca.commonName (int .Values.ca.validityDays) }}
{{- $pair = dict "cert" $ca.Cert "key" $ca.Key }}
{{- end }}
{{- end }}
{{- $_ := set $.Values "__caPair" $pair }}
{{- end }}
{{- toJson (get $.Values "__caPair") }}
{{- end }}

{{/*
The CA certificate locked pods trust. With ca.existingSecret: read from that Secret (lookup), else
ca.cert; rendering without either is an error, never an empty trust store.
*/}}
{{- define "tproxy.caCert" -}}
{{- if .Values.ca.existingSecret }}
{{- $existing := lookup "v1" "Secret" .Release.Namespace .Values.ca.existingSecret }}
{{- if and $existing $existing.data (index $existing.data "tls.crt") }}
{{- index $existing.data "tls.crt" | b64dec }}
{{- else if .Values.ca.cert }}
{{- .Values.ca.cert }}
{{- else }}
{{- fail (printf "ca.existingSecret %q: Secret not found in namespace %q (or rendered without a cluster); create it first, or also set ca.cert to its tls.crt" .Values.ca.existingSecret .Release.Namespace) }}
{{- end }}
{{- else }}
{{- (include "tproxy.caPair" . | fromJson).cert }}
{{- end }}
{{- end }}

{{/* The init container of a locked pod: the same text in NOTES, the test pod and examples/. Call with (dict "ctx" $) */}}
{{- define "tproxy.initContainer" -}}
{{- $v := .ctx.Values -}}
- name: tproxy
  image: {{ include "tproxy.image" (dict "ctx" .ctx "image" $v.images.sidecarInit) }}
  imagePullPolicy: {{ $v.images.pullPolicy }}
  command: ["tproxy-sidecar-init"]
  {{- if or $v.lock.blockCidrs $v.lock.allowDns $v.proxy.standardMode.enabled }}
  env:
    {{- with $v.lock.blockCidrs }}
    - name: BLOCK_SVC_CIDR
      value: {{ join "," . | quote }}
    {{- end }}
    {{- with $v.lock.allowDns }}
    - name: ALLOW_DNS
      value: {{ join "," . | quote }}
    {{- end }}
    {{- if $v.proxy.standardMode.enabled }}
    - name: NODE_NAME
      valueFrom:
        fieldRef:
          fieldPath: spec.nodeName
    {{- end }}
  {{- end }}
  securityContext:
    allowPrivilegeEscalation: false
    privileged: false
    capabilities:
      drop: ["ALL"]
      add: ["NET_ADMIN", "NET_RAW"]
  resources:
    {{- toYaml $v.lock.resources | nindent 4 }}
{{- end }}

{{/* The root-certs volume of a locked pod. */}}
{{- define "tproxy.caVolume" -}}
- name: ca-certs
  configMap:
    name: {{ include "tproxy.rootCertsName" .ctx }}
    items:
      - key: ca-certificates.crt
        path: ca-certificates.crt
{{- end }}

{{/* Where an app container mounts it: over /etc/ssl/certs/, and where update-ca-certificates keeps it. */}}
{{- define "tproxy.caVolumeMounts" -}}
- name: ca-certs
  mountPath: /etc/ssl/certs/
  readOnly: true
- name: ca-certs
  mountPath: /usr/local/share/ca-certificates/tproxy/
  readOnly: true
{{- end }}
