{{/*
Names, labels and the pieces several templates share.
*/}}

{{/* The chart name, or nameOverride. */}}
{{- define "sidecar-injector.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The name of every namespaced resource, the Service and the webhook configuration:
fullnameOverride, else the release name when it already contains the chart name,
else <release>-<chart>. At most 53 characters so that suffixes such as "-tls" and
"-selfsigned" still fit the 63 allowed.
*/}}
{{- define "sidecar-injector.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 53 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 53 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 53 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* chart label value: name-version */}}
{{- define "sidecar-injector.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels that select the webhook pods (never change them on upgrade: selectors are immutable). */}}
{{- define "sidecar-injector.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sidecar-injector.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: webhook
{{- end }}

{{/* Labels on every resource. */}}
{{- define "sidecar-injector.labels" -}}
helm.sh/chart: {{ include "sidecar-injector.chart" . }}
{{ include "sidecar-injector.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: sidecar-injector
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Labels on the resources of another component: dict "root" $ "component" "crds". */}}
{{- define "sidecar-injector.componentLabels" -}}
{{- include "sidecar-injector.labels" .root | replace "app.kubernetes.io/component: webhook" (printf "app.kubernetes.io/component: %s" .component) }}
{{- end }}

{{- define "sidecar-injector.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "sidecar-injector.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "sidecar-injector.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* Does the server talk to the Kubernetes API at all? (only then does it get a token) */}}
{{- define "sidecar-injector.needsAPI" -}}
{{- if or .Values.injection.namespaceLookup .Values.injection.events .Values.profileResources.enabled }}true{{ end }}
{{- end }}

{{/* The Lease whose holder writes the profile resources' status. */}}
{{- define "sidecar-injector.statusLease" -}}
{{- printf "%s-profile-status" (include "sidecar-injector.fullname" .) }}
{{- end }}

{{/* -------------------------------------------------------------------- TLS */}}

{{/* The Secret the server's certificate is mounted from. */}}
{{- define "sidecar-injector.tlsSecretName" -}}
{{- if eq .Values.tls.mode "secret" }}
{{- required "tls.mode=secret needs tls.secret.name: the name of an existing kubernetes.io/tls Secret (tls.crt, tls.key) in the release namespace" .Values.tls.secret.name }}
{{- else }}
{{- printf "%s-tls" (include "sidecar-injector.fullname" .) }}
{{- end }}
{{- end }}

{{/* The CA's Secret (helm mode, and certManager mode with the chart's own CA). Never mounted. */}}
{{- define "sidecar-injector.caSecretName" -}}
{{- printf "%s-ca" (include "sidecar-injector.fullname" .) }}
{{- end }}

{{/* The four names the API server may use for the Service (it uses <svc>.<ns>.svc). */}}
{{- define "sidecar-injector.dnsNames" -}}
{{- $svc := include "sidecar-injector.fullname" . }}
{{- $ns := .Release.Namespace }}
{{- list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.cluster.local" $svc $ns) | toJson }}
{{- end }}

{{/*
helm mode: the CA and serving certificate, as JSON {caCert, caKey, caBundle, cert, key,
caRenewAfter, certRenewAfter} (PEM; renew-after in Unix seconds).

Computed once per render and cached in .Values (templates are rendered one by one, and
both the Secrets and the webhook's caBundle need the same CA). On upgrade the existing
Secrets are read back with `lookup` and reused as they are, so neither the CA nor the
certificate changes, except:
  - the serving certificate is re-issued by the same CA once two thirds of its lifetime
    have passed (the caBundle stays the same, the server reloads the new one live);
  - the CA is regenerated once two thirds of its lifetime have passed; the caBundle then
    holds the new and the previous CA, so certificates of either are trusted meanwhile.
Without cluster access (`helm template`, --dry-run) lookup returns nothing and everything
is generated afresh: see the caveat in values.yaml.
*/}}
{{- define "sidecar-injector.tls.helm" -}}
{{- if not (hasKey .Values "__sidecarInjectorTLS") }}
{{- $fullname := include "sidecar-injector.fullname" . }}
{{- $now := now | unixEpoch | int64 }}
{{- $caLife := mul .Values.tls.helm.caValidityDays 86400 }}
{{- $certLife := mul .Values.tls.helm.certValidityDays 86400 }}
{{- $annotation := "sidecar-injector.sidecar.io/renew-after" }}
{{- $caSecret := lookup "v1" "Secret" .Release.Namespace (include "sidecar-injector.caSecretName" .) | default dict }}
{{- $tlsSecret := lookup "v1" "Secret" .Release.Namespace (include "sidecar-injector.tlsSecretName" .) | default dict }}
{{- $caData := get $caSecret "data" | default dict }}
{{- $caMeta := get $caSecret "metadata" | default dict }}
{{- $caRenewAfter := get (get $caMeta "annotations" | default dict) $annotation | default "0" | int64 }}
{{- $ca := dict }}
{{- $caBundle := "" }}
{{- $reusedCA := false }}
{{- if and (get $caData "tls.crt") (get $caData "tls.key") (gt $caRenewAfter $now) }}
{{- $ca = buildCustomCert (get $caData "tls.crt") (get $caData "tls.key") }}
{{- $caBundle = get $caData "ca.crt" | default (get $caData "tls.crt") | b64dec }}
{{- $reusedCA = true }}
{{- else }}
{{- $ca = genCA (printf "%s-ca" $fullname) (int .Values.tls.helm.caValidityDays) }}
{{- $caBundle = $ca.Cert }}
{{- if get $caData "tls.crt" }}
{{- /* CA rotation: keep trusting the previous CA next to the new one */}}
{{- $caBundle = printf "%s\n%s" (trim $ca.Cert) (get $caData "tls.crt" | b64dec | trim) }}
{{- end }}
{{- $caRenewAfter = add $now (div (mul $caLife 2) 3) }}
{{- end }}
{{- $tlsData := get $tlsSecret "data" | default dict }}
{{- $tlsMeta := get $tlsSecret "metadata" | default dict }}
{{- $certRenewAfter := get (get $tlsMeta "annotations" | default dict) $annotation | default "0" | int64 }}
{{- $cert := "" }}
{{- $key := "" }}
{{- if and $reusedCA (get $tlsData "tls.crt") (get $tlsData "tls.key") (gt $certRenewAfter $now) }}
{{- $cert = get $tlsData "tls.crt" | b64dec }}
{{- $key = get $tlsData "tls.key" | b64dec }}
{{- else }}
{{- $dnsNames := include "sidecar-injector.dnsNames" . | fromJsonArray }}
{{- $signed := genSignedCert (index $dnsNames 2) nil $dnsNames (int .Values.tls.helm.certValidityDays) $ca }}
{{- $cert = $signed.Cert }}
{{- $key = $signed.Key }}
{{- $certRenewAfter = add $now (div (mul $certLife 2) 3) }}
{{- end }}
{{- $_ := set .Values "__sidecarInjectorTLS" (dict "caCert" $ca.Cert "caKey" $ca.Key "caBundle" $caBundle "cert" $cert "key" $key "caRenewAfter" (toString $caRenewAfter) "certRenewAfter" (toString $certRenewAfter)) }}
{{- end }}
{{- get .Values "__sidecarInjectorTLS" | toJson }}
{{- end }}

{{/* The PEM CA bundle base64-encoded for the webhook's caBundle ("" in certManager mode: cainjector fills it). */}}
{{- define "sidecar-injector.caBundle" -}}
{{- if eq .Values.tls.mode "helm" }}
{{- (include "sidecar-injector.tls.helm" . | fromJson).caBundle | b64enc }}
{{- else if eq .Values.tls.mode "secret" }}
{{- if not .Values.webhook.url }}{{- /* the Secret the Deployment mounts; none with webhook.url */}}
{{- $_ := include "sidecar-injector.tlsSecretName" . }}
{{- end }}
{{- $bundle := required "tls.mode=secret needs tls.secret.caBundle: the base64 of the PEM CA bundle that signed the Secret's certificate (base64 -w0 ca.crt)" .Values.tls.secret.caBundle }}
{{- if contains "-----BEGIN" $bundle }}
{{- fail "tls.secret.caBundle must be base64-encoded PEM (base64 -w0 ca.crt), not the PEM text itself" }}
{{- end }}
{{- if not (contains "-----BEGIN CERTIFICATE-----" (b64dec $bundle)) }}
{{- fail "tls.secret.caBundle does not decode to a PEM certificate: give the base64 of the CA bundle (base64 -w0 ca.crt)" }}
{{- end }}
{{- $bundle }}
{{- end }}
{{- end }}

{{/* ------------------------------------------------------------- webhook */}}

{{/*
Where the API server calls the webhook: the Service in front of the Deployment, or, with
webhook.url set, that URL (an injector running outside the cluster: development, the
control-plane tests, a central injector). "path" is the endpoint (/mutate,
/validate-profile). The caBundle is the same in both cases.
*/}}
{{- define "sidecar-injector.clientConfig" -}}
{{- $root := .root }}
{{- with $root.Values.webhook.url }}
{{- if eq $root.Values.tls.mode "helm" }}
{{- fail "webhook.url needs tls.mode=secret (or certManager): the certificate tls.mode=helm generates names the in-cluster Service, which the API server does not call when webhook.url is set" }}
{{- end }}
url: {{ printf "%s%s" (trimSuffix "/" .) $.path | quote }}
{{- else }}
service:
  name: {{ include "sidecar-injector.fullname" $root }}
  namespace: {{ $root.Release.Namespace }}
  path: {{ .path }}
  port: 443
{{- end }}
{{- with include "sidecar-injector.caBundle" $root }}
caBundle: {{ . }}
{{- end }}
{{- end }}

{{/* "true" when the webhook runs in the cluster (a Deployment behind a Service), "" with webhook.url or in policy mode. */}}
{{- define "sidecar-injector.inCluster" -}}
{{- if and (include "sidecar-injector.webhookMode" .) (not .Values.webhook.url) }}true{{ end }}
{{- end }}

{{/* "true" when injection.mode is webhook; "" in policy mode, which renders admission policies and nothing else. */}}
{{- define "sidecar-injector.webhookMode" -}}
{{- if ne .Values.injection.mode "policy" }}true{{ end }}
{{- end }}

{{/*
The namespaceSelector requirements every webhook has: never the system namespaces, this
release's namespace, webhook.excludedNamespaces, or namespaces labelled
sidecar.io/inject=disabled. (kubernetes.io/metadata.name is set on every namespace by the
API server.) Excluding the release namespace matters: the webhook's own pods must start
without the webhook.
*/}}
{{- define "sidecar-injector.namespaceExclusions" -}}
- key: kubernetes.io/metadata.name
  operator: NotIn
  values:
    {{- range concat (list "kube-system" "kube-public" "kube-node-lease" .Release.Namespace) .Values.webhook.excludedNamespaces | uniq }}
    - {{ . | quote }}
    {{- end }}
- key: sidecar.io/inject
  operator: NotIn
  values: ["disabled"]
{{- end }}

{{/*
CEL: the pod's sidecar.io/inject annotation says "false" (what the server treats as an
opt-out: case-insensitive, surrounding whitespace ignored). The character classes are
spelled out instead of (?i) so that the condition never matches a value the server
would not call an opt-out (RE2's case folding knows more letters than ASCII).
*/}}
{{- define "sidecar-injector.cel.optedOut" -}}
has(object.metadata.annotations) && 'sidecar.io/inject' in object.metadata.annotations && object.metadata.annotations['sidecar.io/inject'].matches('^\\s*[Ff][Aa][Ll][Ss][Ee]\\s*$')
{{- end }}

{{/* CEL: the pod asks for sidecars (has the annotation, with any value but an opt-out). */}}
{{- define "sidecar-injector.cel.asks" -}}
has(object.metadata.annotations) && 'sidecar.io/inject' in object.metadata.annotations && !object.metadata.annotations['sidecar.io/inject'].matches('^\\s*[Ff][Aa][Ll][Ss][Ee]\\s*$')
{{- end }}

{{/* CEL: the pod did not opt out. */}}
{{- define "sidecar-injector.cel.notOptedOut" -}}
!({{ include "sidecar-injector.cel.optedOut" . }})
{{- end }}

{{/*
One webhook entry. Arguments: dict "root" $ "name" ... "failurePolicy" ...
"namespace" (extra namespaceSelector requirements, YAML) "condition" (dict name expression, or nil).
*/}}
{{- define "sidecar-injector.webhook" -}}
{{- $root := .root }}
- name: {{ .name }}
  admissionReviewVersions: ["v1"]
  sideEffects: None
  reinvocationPolicy: IfNeeded
  failurePolicy: {{ .failurePolicy }}
  matchPolicy: Equivalent
  timeoutSeconds: {{ $root.Values.webhook.timeoutSeconds }}
  clientConfig:
    {{- include "sidecar-injector.clientConfig" (dict "root" $root "path" "/mutate") | trim | nindent 4 }}
  rules:
    - operations: ["CREATE"]
      apiGroups: [""]
      apiVersions: ["v1"]
      resources: ["pods"]
      scope: Namespaced
  namespaceSelector:
    matchExpressions:
      {{- include "sidecar-injector.namespaceExclusions" $root | nindent 6 }}
      {{- with .namespace }}
      {{- . | nindent 6 }}
      {{- end }}
  {{- if and $root.Values.webhook.matchConditions .condition }}
  matchConditions:
    - name: {{ .condition.name }}
      expression: {{ .condition.expression | quote }}
  {{- end }}
{{- end }}
