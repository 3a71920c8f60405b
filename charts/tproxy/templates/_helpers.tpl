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
The CA pair as a dict {cert, key}: supplied values, else the Secret this release made before (lookup),
else a new CA, but only on an install that can see the cluster (tproxy.checkMayGenerateCa). Memoised in
.Values so every template that calls it sees the same pair in one render.
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
{{- include "tproxy.checkMayGenerateCa" . }}
{{- $ca := genCA .Values.ca.commonName (int .Values.ca.validityDays) }}
{{- $pair = dict "cert" $ca.Cert "key" $ca.Key }}
{{- end }}
{{- end }}
{{- $_ := set $.Values "__caPair" $pair }}
{{- end }}
{{- toJson (get $.Values "__caPair") }}
{{- end }}

{{/*
Whether the cluster can be read: `lookup` returns an empty dict, never an error, when Helm renders
without a cluster (helm template, --dry-run=client, helm lint, Argo CD and other GitOps tools), and
kube-system exists in every cluster. So an empty lookup of it means: no cluster access. Prints "true" or "".
*/}}
{{- define "tproxy.clusterReadable" -}}
{{- if lookup "v1" "Namespace" "" "kube-system" }}true{{ end }}
{{- end }}

{{/*
Fails the render unless a new CA may be generated here. A CA must be made once and kept: locked pods
trust the CA they mounted while each proxy signs with the CA it loaded, so a CA replaced behind their
back is an HTTPS outage for every locked pod. Without cluster access every render would make another
one; on an upgrade the Secret the install made is gone (deleted by hand?). Prints nothing.
*/}}
{{- define "tproxy.checkMayGenerateCa" -}}
{{- $secret := include "tproxy.caSecretName" . }}
{{- $ns := .Release.Namespace }}
{{- if not (include "tproxy.clusterReadable" .) }}
{{- fail (printf "no CA supplied, and this render cannot read the cluster (helm template, --dry-run=client, Argo CD or another GitOps tool), so it would make a new CA on every render that locked pods do not trust; refusing. Make the CA once: `tproxy ca create --cert ca.crt --key ca.key`, then `kubectl create secret tls %s --cert=ca.crt --key=ca.key --namespace %s` and set ca.existingSecret=%s (with ca.cert set to ca.crt's text, for renders that cannot read the Secret), or set ca.cert and ca.key" $secret $ns $secret) }}
{{- end }}
{{- if .Release.IsUpgrade }}
{{- fail (printf "the CA Secret %q is gone from namespace %q, but this is an upgrade of release %q: restore it (`kubectl create secret tls %s --cert=ca.crt --key=ca.key --namespace %s` from the CA's files), or set ca.existingSecret or ca.cert and ca.key; refusing to make a new CA that locked pods do not trust" $secret $ns .Release.Name $secret $ns) }}
{{- end }}
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
{{- else if include "tproxy.clusterReadable" . }}
{{- fail (printf "ca.existingSecret %q: Secret not found in namespace %q; create it first (`tproxy ca create --cert ca.crt --key ca.key`, then `kubectl create secret tls %s --cert=ca.crt --key=ca.key --namespace %s`)" .Values.ca.existingSecret .Release.Namespace .Values.ca.existingSecret .Release.Namespace) }}
{{- else }}
{{- fail (printf "ca.existingSecret %q: Secret not found, since this render cannot read the cluster (helm template, --dry-run=client, GitOps); also set ca.cert to the Secret's tls.crt (the CA certificate made by `tproxy ca create`) so the root-certs ConfigMap can publish it" .Values.ca.existingSecret) }}
{{- end }}
{{- else }}
{{- (include "tproxy.caPair" . | fromJson).cert }}
{{- end }}
{{- end }}

{{/*
The init container of a locked pod: the same text in NOTES, the test pod and examples/. Call with (dict "ctx" $).
lock.mode sidecar: it writes the lock (NET_ADMIN, NET_RAW). lock.mode cni: the node's tproxy-cni plugin wrote
it before the pod's containers started; the init container only checks it and waits for interception, with
no capability, as non-root, under the runtime's seccomp profile (Pod Security "restricted").
*/}}
{{- define "tproxy.initContainer" -}}
{{- $v := .ctx.Values -}}
- name: tproxy
  image: {{ include "tproxy.image" (dict "ctx" .ctx "image" $v.images.sidecarInit) }}
  imagePullPolicy: {{ $v.images.pullPolicy }}
  command: ["tproxy-sidecar-init"]
  {{- if eq $v.lock.mode "cni" }}
  args: ["--mode", "wait"]
  securityContext:
    allowPrivilegeEscalation: false
    privileged: false
    runAsNonRoot: true
    runAsUser: 65534
    runAsGroup: 65534
    readOnlyRootFilesystem: true
    capabilities:
      drop: ["ALL"]
    seccompProfile:
      type: RuntimeDefault
  {{- else }}
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
  {{- end }}
  resources:
    {{- toYaml $v.lock.resources | nindent 4 }}
{{- end }}

{{/*
tproxy-cni's entry in the node's conflist (lock.mode cni): the lock's settings, as the init container gets them
in sidecar mode. The socket is podwatch's, at its path on the node. Call with (dict "ctx" $); prints JSON.
*/}}
{{- define "tproxy.cniSettings" -}}
{{- $v := .ctx.Values -}}
{{- $s := dict "socket" (printf "%s/cni.sock" (trimSuffix "/" $v.cni.socketDir)) "allowDns" $v.lock.allowDns "blockCidrs" $v.lock.blockCidrs "excludeNamespaces" $v.cni.excludeNamespaces -}}
{{- toJson $s -}}
{{- end }}

{{/* lock.mode cni cannot read a pod's resolv.conf (the kubelet writes it after CNI): the resolvers must be named. */}}
{{- define "tproxy.checkCniMode" -}}
{{- $v := .Values -}}
{{- if eq $v.lock.mode "cni" }}
{{- if not $v.lock.allowDns }}
{{- fail "lock.mode cni needs lock.allowDns: the CNI plugin locks a pod before the kubelet writes its resolv.conf, so it cannot read the pod's nameservers; name the cluster DNS Service address (kubectl -n kube-system get svc kube-dns), or [\"any\"]" }}
{{- end }}
{{- if $v.proxy.standardMode.enabled }}
{{- fail "lock.mode cni locks for the transparent mode only: proxy.standardMode.enabled needs lock.mode sidecar (its lock allows the node's port 1080 per pod)" }}
{{- end }}
{{- end }}
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

{{/*
Bytes of a memory quantity as Kubernetes writes it: plain bytes, or a decimal (k, M, G, T, P, E) or binary
(Ki, Mi, Gi, Ti, Pi, Ei) suffix. Call with (dict "value" ... "name" "the.value.path"); prints a whole number.
*/}}
{{- define "tproxy.memoryBytes" -}}
{{- $s := toString .value }}
{{- $re := "^([0-9]+(?:\\.[0-9]+)?(?:[eE][+]?[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$" }}
{{- if not (regexMatch $re $s) }}
{{- fail (printf "%s %q is not a memory size the chart can read: write bytes, or a number with a Ki, Mi, Gi, Ti, k, M, G or T suffix" .name $s) }}
{{- end }}
{{- $units := dict "" 1 "k" 1000 "M" 1000000 "G" 1000000000 "T" 1000000000000 "P" 1000000000000000 "E" 1000000000000000000 "Ki" 1024 "Mi" 1048576 "Gi" 1073741824 "Ti" 1099511627776 "Pi" 1125899906842624 "Ei" 1152921504606846976 }}
{{- printf "%.0f" (mulf (regexReplaceAll $re $s "${1}" | float64) (index $units (regexReplaceAll $re $s "${2}"))) }}
{{- end }}

{{/*
Fails the render when proxy.resources.limits.memory cannot hold the proxy at the costs files/sizing.yaml
holds (measured by `npm run bench`): base + workers × per-worker + reserved connections × per-connection.
A numeric proxy.workers must fit; with `auto` the proxy picks what fits at run time, so only the minimum
(one worker) is checked. No memory limit: nothing to check. Prints nothing.
*/}}
{{- define "tproxy.checkProxyMemory" -}}
{{- $limit := dig "limits" "memory" "" (.Values.proxy.resources | default dict) }}
{{- if $limit }}
{{- $cost := .Files.Get "files/sizing.yaml" | fromYaml }}
{{- $bytes := include "tproxy.memoryBytes" (dict "value" $limit "name" "proxy.resources.limits.memory") | float64 }}
{{- /* As written, plus MiB unless written in Mi: 500M is not 500Mi, and the message says so. */}}
{{- $shown := toString $limit }}
{{- if not (kindIs "string" $limit) }}{{ $shown = printf "%.0f" ($limit | float64) }}{{ end }}
{{- if not (hasSuffix "Mi" $shown) }}{{ $shown = printf "%s (%s MiB)" $shown (printf "%.1f" (divf $bytes 1048576) | trimSuffix ".0") }}{{ end }}
{{- $fixed := addf (mulf $cost.baseMiB 1048576) (mulf $cost.reserveConnections $cost.perConnectionKiB 1024) }}
{{- $perWorker := mulf $cost.perWorkerMiB 1048576 }}
{{- $model := printf "base %v MiB + %v MiB per worker + %v connections × %v KiB; see Sizing in the chart README" $cost.baseMiB $cost.perWorkerMiB $cost.reserveConnections $cost.perConnectionKiB }}
{{- if lt $bytes (addf $fixed $perWorker) }}
{{- fail (printf "proxy.resources.limits.memory is %v, below the proxy's measured minimum of about %d MiB for one worker (%s): raise the limit" $shown (int (ceil (divf (addf $fixed $perWorker) 1048576))) $model) }}
{{- end }}
{{- if not (kindIs "string" .Values.proxy.workers) }}
{{- $workers := int .Values.proxy.workers }}
{{- $need := addf $fixed (mulf $workers $perWorker) }}
{{- if gt $need $bytes }}
{{- $holds := int (floor (divf (subf $bytes $fixed) $perWorker)) }}
{{- fail (printf "proxy.workers=%d needs about %d MiB at the measured per-worker cost but proxy.resources.limits.memory is %v: raise the limit or lower proxy.workers (it holds %d; %s)" $workers (int (ceil (divf $need 1048576))) $shown $holds $model) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The host of an admin endpoint's probe: the address it listens on (the node's loopback by default; the
pods run on the host network, so the kubelet reaches it there), or none (the pod's IP, which is the
node's) when it listens on every address.
*/}}
{{- define "tproxy.probeHost" -}}
{{- if not (has . (list "0.0.0.0" "::")) -}}
host: {{ . | quote }}
{{- end -}}
{{- end }}
