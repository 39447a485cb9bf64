{{/*
The redis_exporter sidecar of the Redis pods (sentinel, standalone and cluster mode).
*/}}
{{- define "kvq.redisExporterContainer" -}}
{{- $r := .Values.redis -}}
{{- $tls := $r.tls.enabled -}}
{{- $acl := $r.acl.enabled -}}
{{- $auth := $r.auth.enabled -}}
- name: exporter
  image: {{ include "kvq.image" (dict "image" $r.exporter.image "ctx" $) }}
  imagePullPolicy: {{ $r.exporter.image.pullPolicy }}
  env:
    - name: REDIS_ADDR
      value: "{{ ternary "rediss" "redis" $tls }}://localhost:{{ $r.port }}"
    {{- if $tls }}
    - name: REDIS_EXPORTER_TLS_CA_CERT_FILE
      value: {{ include "kvq.tlsDir" . }}/ca.crt
    {{- if $r.tls.authClients }}
    - name: REDIS_EXPORTER_TLS_CLIENT_CERT_FILE
      value: {{ include "kvq.tlsDir" . }}/tls.crt
    - name: REDIS_EXPORTER_TLS_CLIENT_KEY_FILE
      value: {{ include "kvq.tlsDir" . }}/tls.key
    {{- end }}
    {{- end }}
    {{- if $acl }}
    - name: REDIS_USER
      value: exporter
    {{- end }}
    {{- if $auth }}
    - name: REDIS_PASSWORD
      valueFrom:
        secretKeyRef:
          name: {{ include "kvq.redisSecretName" . }}
          key: {{ ternary "acl-exporter" $r.auth.passwordKey $acl }}
    {{- end }}
    - name: REDIS_EXPORTER_WEB_LISTEN_ADDRESS
      value: "0.0.0.0:{{ $r.exporter.port }}"
  {{- if $tls }}
  volumeMounts:
    - name: tls
      mountPath: {{ include "kvq.tlsDir" . }}
      readOnly: true
  {{- end }}
  ports:
    - name: metrics
      containerPort: {{ $r.exporter.port }}
      protocol: TCP
  livenessProbe:
    httpGet:
      path: /health
      port: metrics
    periodSeconds: 10
  readinessProbe:
    httpGet:
      path: /health
      port: metrics
    periodSeconds: 10
  securityContext:
    {{- toYaml $r.containerSecurityContext | nindent 12 }}
  resources:
    {{- toYaml $r.exporter.resources | nindent 12 }}
{{- end }}

{{/*
The Secret volumes of the Redis pods: passwords (each key listed) and TLS certificates.
*/}}
{{- define "kvq.redisSecretVolumes" -}}
{{- $r := .Values.redis -}}
{{- $auth := $r.auth.enabled -}}
{{- $tls := $r.tls.enabled -}}
{{- $acl := $r.acl.enabled -}}
{{- $sentinel := eq $r.mode "sentinel" -}}
{{- if $auth }}
- name: auth
  secret:
    secretName: {{ include "kvq.redisSecretName" . }}
    defaultMode: 0440
    # Listed keys: a Secret missing one fails the mount and the pod does not start
    # (without items a missing key is just an absent file).
    items:
      - key: {{ $r.auth.passwordKey }}
        path: {{ $r.auth.passwordKey }}
      {{- if $sentinel }}
      - key: {{ $r.auth.sentinelPasswordKey }}
        path: {{ $r.auth.sentinelPasswordKey }}
      {{- end }}
      {{- if $r.auth.extraPassword }}
      - key: {{ $r.auth.extraPasswordKey }}
        path: {{ $r.auth.extraPasswordKey }}
      {{- end }}
      {{- if $acl }}
      {{- range (include "kvq.aclUsers" . | splitList " ") }}
      - key: acl-{{ . }}
        path: acl-{{ . }}
      {{- end }}
      {{- end }}
{{- end }}
{{- if $tls }}
- name: tls
  secret:
    secretName: {{ include "kvq.redisTlsSecret" . }}
    defaultMode: 0440
    # Listed keys: a Secret without one fails the mount instead of starting without TLS.
    items:
      - key: ca.crt
        path: ca.crt
      - key: tls.crt
        path: tls.crt
      - key: tls.key
        path: tls.key
{{- end }}
{{- end }}
