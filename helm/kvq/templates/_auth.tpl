{{/*
API authentication (README "Authentication"): the server reads its tokens from files mounted
from Secrets, the chart's own (inline `auth.tokens`, the generated admin and helm-test tokens)
and optionally the user's `auth.existingSecret`. Whole-Secret volumes, never subPath: the
kubelet then updates the files in place and the server reloads them without a restart.
*/}}

{{- define "kvq.authOn" -}}
{{- if eq .Values.auth.mode "tokens" }}true{{ end }}
{{- end }}

{{/* The chart's own auth Secret. */}}
{{- define "kvq.authSecretName" -}}
{{- printf "%s-auth" (include "kvq.fullname" .) }}
{{- end }}

{{/* Whether the chart renders its own auth Secret: something of its own to put in it. */}}
{{- define "kvq.authChartSecret" -}}
{{- if and (include "kvq.authOn" .) (or .Values.auth.tokens .Values.auth.generateToken .Values.tests.enabled) }}true{{ end }}
{{- end }}

{{/* Mount points of the two token files. */}}
{{- define "kvq.authChartDir" -}}/etc/kvq-auth/chart{{- end }}
{{- define "kvq.authExistingDir" -}}/etc/kvq-auth/existing{{- end }}

{{/* Refuse, at render time, a tokens mode nobody could ever call. */}}
{{- define "kvq.checkAuth" -}}
{{- $a := .Values.auth -}}
{{- if and (eq $a.mode "tokens") (not $a.existingSecret) (not $a.tokens) (not $a.generateToken) }}
{{- fail "auth.mode=tokens has no token source, so every request would be refused: set auth.existingSecret (a Secret holding a tokens file; recommended for GitOps), auth.tokens (hashed entries), or auth.generateToken=true; or choose auth.mode=none explicitly" }}
{{- end }}
{{- /* The server refuses a file whose names repeat: say so here rather than in a crash loop. */ -}}
{{- $reserved := list -}}
{{- if $a.generateToken }}{{ $reserved = append $reserved "admin" }}{{ end -}}
{{- if .Values.tests.enabled }}{{ $reserved = append $reserved "helm-test" }}{{ end -}}
{{- $seen := list -}}
{{- range $a.tokens }}
{{- if has .name $reserved }}
{{- fail (printf "auth.tokens: the name %q is the chart's generated token's; choose another" .name) }}
{{- end }}
{{- if has .name $seen }}
{{- fail (printf "auth.tokens: the name %q appears twice" .name) }}
{{- end }}
{{- $seen = append $seen .name -}}
{{- end }}
{{- end }}

{{/* Server env: where the token files are (comma-separated; the server merges them). */}}
{{- define "kvq.authEnv" -}}
{{- if include "kvq.authOn" . }}
{{- $files := list -}}
{{- if include "kvq.authChartSecret" . }}{{ $files = append $files (printf "%s/tokens.yaml" (include "kvq.authChartDir" .)) }}{{ end -}}
{{- if .Values.auth.existingSecret }}{{ $files = append $files (printf "%s/%s" (include "kvq.authExistingDir" .) .Values.auth.existingSecretKey) }}{{ end }}
- name: KVQ__AUTH__TOKENS_FILE
  value: {{ join "," $files | quote }}
{{- end }}
{{- end }}

{{- define "kvq.authVolumeMounts" -}}
{{- if include "kvq.authChartSecret" . }}
- name: auth-tokens
  mountPath: {{ include "kvq.authChartDir" . }}
  readOnly: true
{{- end }}
{{- if and (include "kvq.authOn" .) .Values.auth.existingSecret }}
- name: auth-existing
  mountPath: {{ include "kvq.authExistingDir" . }}
  readOnly: true
{{- end }}
{{- end }}

{{- define "kvq.authVolumes" -}}
{{- if include "kvq.authChartSecret" . }}
- name: auth-tokens
  secret:
    secretName: {{ include "kvq.authSecretName" . }}
    items:
      - key: tokens.yaml
        path: tokens.yaml
{{- end }}
{{- if and (include "kvq.authOn" .) .Values.auth.existingSecret }}
- name: auth-existing
  secret:
    secretName: {{ .Values.auth.existingSecret }}
    items:
      - key: {{ .Values.auth.existingSecretKey }}
        path: {{ .Values.auth.existingSecretKey }}
{{- end }}
{{- end }}
