{{/*
Shared definitions of the two app workloads (server and worker), called with
(dict "ctx" $ "component" "server" "v" .Values.server). Each resource still has its own file.
*/}}

{{- define "kvq.appDeployment" -}}
{{- $ctx := .ctx -}}
{{- $v := .v -}}
{{- $name := printf "%s-%s" (include "kvq.fullname" $ctx) .component -}}
{{- $scaled := or (and $v.autoscaling $v.autoscaling.enabled) (and $v.keda $v.keda.enabled) -}}
{{- include "kvq.checkApp" . }}
{{- $hard := and (not $v.affinity) (eq $v.podAntiAffinity "hard") -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ $name }}
  namespace: {{ $ctx.Release.Namespace }}
  labels:
    {{- include "kvq.componentLabels" . | nindent 4 }}
spec:
  {{- if not $scaled }}
  replicas: {{ $v.replicaCount }}
  {{- end }}
  revisionHistoryLimit: 5
  strategy:
    type: RollingUpdate
    rollingUpdate:
      {{- if $hard }}
      # hard anti-affinity: a surge pod finds no free node when replicas equal nodes, so
      # replace pods one at a time instead of surging
      maxSurge: 0
      maxUnavailable: 1
      {{- else }}
      maxSurge: 25%
      maxUnavailable: 0
      {{- end }}
  selector:
    matchLabels:
      {{- include "kvq.componentSelectorLabels" . | nindent 6 }}
  template:
    metadata:
      annotations:
        {{- include "kvq.appChecksums" $ctx | nindent 8 }}
        {{- with $v.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      labels:
        {{- include "kvq.componentLabels" . | nindent 8 }}
        {{- with $v.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      serviceAccountName: {{ include "kvq.serviceAccountName" $ctx }}
      automountServiceAccountToken: {{ $ctx.Values.serviceAccount.automountServiceAccountToken }}
      terminationGracePeriodSeconds: {{ $v.terminationGracePeriodSeconds }}
      {{- with $ctx.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.priorityClassName }}
      priorityClassName: {{ . }}
      {{- end }}
      securityContext:
        {{- toYaml $v.podSecurityContext | nindent 8 }}
      containers:
        - name: {{ .component }}
          image: {{ include "kvq.image" (dict "image" $v.image "ctx" $ctx) }}
          imagePullPolicy: {{ $v.image.pullPolicy }}
          ports:
            - name: http
              containerPort: {{ $v.containerPort }}
              protocol: TCP
          env:
            {{- include "kvq.appEnv" $ctx | nindent 12 }}
            {{- if eq .component "server" }}
            {{- include "kvq.authEnv" $ctx | nindent 12 }}
            {{- end }}
            {{- include "kvq.appUserEnv" . | nindent 12 }}
            {{- with $v.extraEnv }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          startupProbe:
            httpGet:
              path: /healthz
              port: http
            periodSeconds: {{ $v.probes.startup.periodSeconds }}
            failureThreshold: {{ $v.probes.startup.failureThreshold }}
          livenessProbe:
            httpGet:
              path: /healthz
              port: http
            periodSeconds: {{ $v.probes.liveness.periodSeconds }}
            timeoutSeconds: {{ $v.probes.liveness.timeoutSeconds }}
            failureThreshold: {{ $v.probes.liveness.failureThreshold }}
          readinessProbe:
            httpGet:
              path: /readyz
              port: http
            periodSeconds: {{ $v.probes.readiness.periodSeconds }}
            timeoutSeconds: {{ $v.probes.readiness.timeoutSeconds }}
            failureThreshold: {{ $v.probes.readiness.failureThreshold }}
          securityContext:
            {{- toYaml $v.containerSecurityContext | nindent 12 }}
          resources:
            {{- toYaml $v.resources | nindent 12 }}
          volumeMounts:
            - name: config
              mountPath: /etc/kvq
              readOnly: true
            {{- if eq .component "server" }}
            {{- include "kvq.authVolumeMounts" $ctx | nindent 12 }}
            {{- end }}
            {{- if include "kvq.appTlsMount" $ctx }}
            - name: redis-tls
              mountPath: {{ include "kvq.tlsDir" $ctx }}
              readOnly: true
            {{- end }}
            {{- with $v.extraVolumeMounts }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
      volumes:
        - name: config
          configMap:
            name: {{ include "kvq.fullname" $ctx }}-config
        {{- if eq .component "server" }}
        {{- include "kvq.authVolumes" $ctx | nindent 8 }}
        {{- end }}
        {{- if include "kvq.appTlsMount" $ctx }}
        # The CA (and for mutual TLS the client certificate) from the Secret, never a
        # ConfigMap; kvq reads the files at every reconnect, so a renewal needs no restart.
        - name: redis-tls
          secret:
            secretName: {{ include "kvq.redisTlsSecret" $ctx }}
            defaultMode: 0440
            items:
              - key: ca.crt
                path: ca.crt
              {{- if $ctx.Values.redis.tls.authClients }}
              - key: tls.crt
                path: tls.crt
              - key: tls.key
                path: tls.key
              {{- end }}
        {{- end }}
        {{- with $v.extraVolumes }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- with $v.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- if $v.affinity }}
      affinity:
        {{- toYaml $v.affinity | nindent 8 }}
      {{- else if ne $v.podAntiAffinity "none" }}
      affinity:
        {{- include "kvq.antiAffinity" (dict "ctx" $ctx "component" .component "mode" $v.podAntiAffinity) | nindent 8 }}
      {{- end }}
      {{- with $v.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.topologySpreadConstraints }}
      topologySpreadConstraints:
        {{- include "kvq.topologySpread" (dict "ctx" $ctx "component" $.component "constraints" .) | nindent 8 }}
      {{- end }}
{{- end }}

{{- define "kvq.appHPA" -}}
{{- $ctx := .ctx -}}
{{- $a := .v.autoscaling -}}
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ include "kvq.fullname" $ctx }}-{{ .component }}
  namespace: {{ $ctx.Release.Namespace }}
  labels:
    {{- include "kvq.componentLabels" . | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ include "kvq.fullname" $ctx }}-{{ .component }}
  minReplicas: {{ $a.minReplicas }}
  maxReplicas: {{ $a.maxReplicas }}
  metrics:
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {{ $a.targetCPUUtilizationPercentage }}
    {{- if $a.targetMemoryUtilizationPercentage }}
    - type: Resource
      resource:
        name: memory
        target:
          type: Utilization
          averageUtilization: {{ $a.targetMemoryUtilizationPercentage }}
    {{- end }}
  {{- with $a.behavior }}
  behavior:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}

{{- define "kvq.pdb" -}}
{{- $ctx := .ctx -}}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ .name }}
  namespace: {{ $ctx.Release.Namespace }}
  labels:
    {{- include "kvq.componentLabels" . | nindent 4 }}
spec:
  {{- if or .pdb.maxUnavailable (eq (toString .pdb.maxUnavailable) "0") }}
  maxUnavailable: {{ .pdb.maxUnavailable }}
  {{- else }}
  minAvailable: {{ .pdb.minAvailable }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "kvq.componentSelectorLabels" . | nindent 6 }}
{{- end }}

{{- define "kvq.serviceMonitor" -}}
{{- $ctx := .ctx -}}
apiVersion: monitoring.coreos.com/v1
kind: ServiceMonitor
metadata:
  name: {{ include "kvq.fullname" $ctx }}-{{ .component }}
  namespace: {{ $ctx.Release.Namespace }}
  labels:
    {{- include "kvq.componentLabels" . | nindent 4 }}
    {{- with $ctx.Values.serviceMonitor.labels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  selector:
    matchLabels:
      {{- include "kvq.componentSelectorLabels" . | nindent 6 }}
  namespaceSelector:
    matchNames:
      - {{ $ctx.Release.Namespace }}
  endpoints:
    - port: {{ .port }}
      path: /metrics
      interval: {{ $ctx.Values.serviceMonitor.interval }}
      scrapeTimeout: {{ $ctx.Values.serviceMonitor.scrapeTimeout }}
{{- end }}
