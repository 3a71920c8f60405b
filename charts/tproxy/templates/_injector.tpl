{{/* The injector's resource name (Deployment, Service, ConfigMap, ServiceAccount, webhooks): "<fullname>-injector". */}}
{{- define "tproxy.injectorName" -}}
{{- printf "%s-injector" (include "tproxy.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The Secret holding the webhook's serving certificate (chart-made or cert-manager's). */}}
{{- define "tproxy.injectorTlsSecretName" -}}
{{- printf "%s-tls" (include "tproxy.injectorName" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
What the webhook injects, as JSON (the ConfigMap's injection.json): rendered from the very helpers NOTES.txt
prints and examples/debian-app-locked-manual.yaml holds, so there is one source of the snippet.
*/}}
{{- define "tproxy.injectionConfig" -}}
{{- $config := dict
  "annotation" .Values.podwatch.annotation
  "lockLabel" .Values.injector.lockLabel
  "initContainer" (include "tproxy.initContainer" (dict "ctx" $) | fromYamlArray | first)
  "volume" (include "tproxy.caVolume" (dict "ctx" $) | fromYamlArray | first)
  "volumeMounts" (include "tproxy.caVolumeMounts" (dict "ctx" $) | fromYamlArray) }}
{{- toPrettyJson $config }}
{{- end }}

{{/*
The webhook's serving certificate as a dict {caCert, cert, key, notAfter, caBundle}.

Its CA is one the chart makes for the webhook alone, not the proxy's CA (tproxy.caPair): the proxy CA's key
signs certificates for any name locked pods trust, so it stays in the proxy container and nowhere else; it
may also be a Secret the chart cannot read at render time (ca.existingSecret under GitOps), and signing
needs the key. Only the API server trusts this CA (the webhooks' caBundle), and no CA key is kept: a new
pair is made together with a new certificate.

Kept across upgrades: the Secret this release made before is read back (lookup) and reused as long as its
tproxy.io/not-after annotation lies more than injector.tls.renewBeforeDays ahead; then, or when it is gone,
a new CA and certificate are made (the rotation, on the next helm upgrade), and for that release the
caBundle holds the old CA too, so the API server trusts both the injector pods still serving the old
certificate and those that have loaded the new one. Memoised in .Values: one pair per render.
*/}}
{{- define "tproxy.injectorTls" -}}
{{- if not (hasKey $.Values "__injectorTls") }}
{{- $svc := include "tproxy.injectorName" . }}
{{- $ns := .Release.Namespace }}
{{- $tls := dict }}
{{- $old := "" }}
{{- $existing := lookup "v1" "Secret" $ns (include "tproxy.injectorTlsSecretName" .) }}
{{- if and $existing $existing.data (index $existing.data "tls.crt") (index $existing.data "tls.key") (index $existing.data "ca.crt") }}
{{- $notAfter := dig "metadata" "annotations" "tproxy.io/not-after" "" $existing }}
{{- $renewAt := now | dateModify (printf "+%dh" (mul (int .Values.injector.tls.renewBeforeDays) 24)) | unixEpoch | int64 }}
{{- if and $notAfter (gt (toDate "2006-01-02T15:04:05Z07:00" $notAfter | unixEpoch | int64) $renewAt) }}
{{- $tls = dict "caCert" (index $existing.data "ca.crt" | b64dec) "cert" (index $existing.data "tls.crt" | b64dec) "key" (index $existing.data "tls.key" | b64dec) "notAfter" $notAfter }}
{{- else }}
{{- $old = index $existing.data "ca.crt" | b64dec }}
{{- end }}
{{- end }}
{{- if not $tls }}
{{- $days := int .Values.injector.tls.validityDays }}
{{- $ca := genCA (printf "%s CA" $svc) $days }}
{{- $names := list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.cluster.local" $svc $ns) }}
{{- $cert := genSignedCert (printf "%s.%s.svc" $svc $ns) nil $names $days $ca }}
{{- $tls = dict "caCert" $ca.Cert "cert" $cert.Cert "key" $cert.Key "notAfter" (dateInZone "2006-01-02T15:04:05Z" (now | dateModify (printf "+%dh" (mul $days 24))) "UTC") }}
{{- end }}
{{- $bundle := $tls.caCert }}
{{- if $old }}{{ $bundle = printf "%s\n%s" (trim $tls.caCert) (trim $old) }}{{ end }}
{{- $_ := set $tls "caBundle" $bundle }}
{{- $_ := set $.Values "__injectorTls" $tls }}
{{- end }}
{{- toJson (get $.Values "__injectorTls") }}
{{- end }}

{{/* The webhooks' namespaceSelector terms that keep kube-system and the release namespace out of reach. */}}
{{- define "tproxy.injectorExcludedNamespaces" -}}
- key: kubernetes.io/metadata.name
  operator: NotIn
  values: [kube-system, {{ .Release.Namespace | quote }}]
{{- end }}
