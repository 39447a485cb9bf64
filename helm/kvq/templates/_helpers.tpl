{{/* Chart name, truncated to 63 characters (DNS label limit). */}}
{{- define "kvq.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name: at most 46 characters, so that every name built from it fits
(the longest suffix is "-test-write-read", 16 characters, under the 63-character limit;
the StatefulSet "<fullname>-redis" stays within 52, as its pods' controller-revision-hash
label appends 11 characters). A longer name is cut to 39 characters plus "-" and the
first 6 hex digits of the SHA-256 of the whole name: stable across renders, distinct for
two long names with a common prefix. All objects share this one prefix, so different
suffixes never collide.
*/}}
{{- define "kvq.fullname" -}}
{{- $full := "" }}
{{- if .Values.fullnameOverride }}
{{- $full = .Values.fullnameOverride | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- $full = .Release.Name | trimSuffix "-" }}
{{- else }}
{{- $full = printf "%s-%s" .Release.Name $name | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- if gt (len $full) 46 }}
{{- printf "%s-%s" ($full | trunc 39 | trimSuffix "-") ($full | sha256sum | trunc 6) }}
{{- else }}
{{- $full }}
{{- end }}
{{- end }}

{{- define "kvq.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels. commonLabels may not use the reserved prefixes app.kubernetes.io/ and helm.sh/:
they would duplicate the chart's keys (invalid YAML maps) or change immutable selectors.
*/}}
{{- define "kvq.labels" -}}
helm.sh/chart: {{ include "kvq.chart" . }}
{{ include "kvq.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
{{ include "kvq.otherLabels" . }}
{{- end }}

{{/*
Labels that do not change with the chart version: every label but helm.sh/chart and
app.kubernetes.io/version. The Redis pod template uses these, so a chart bump that keeps the
Redis image does not restart (and fail over) every Redis pod.
*/}}
{{- define "kvq.stableLabels" -}}
{{ include "kvq.selectorLabels" . }}
{{ include "kvq.otherLabels" . }}
{{- end }}

{{- define "kvq.otherLabels" -}}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: kvq
{{- range $k, $_ := .Values.commonLabels }}
{{- if or (hasPrefix "app.kubernetes.io/" $k) (hasPrefix "helm.sh/" $k) }}
{{- fail (printf "commonLabels.%s: keys starting with app.kubernetes.io/ or helm.sh/ are set by the chart (a duplicate key, or a changed immutable selector); use another prefix" $k) }}
{{- end }}
{{- end }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "kvq.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kvq.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels of one component: (dict "ctx" $ "component" "server") */}}
{{- define "kvq.componentLabels" -}}
{{ include "kvq.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* kvq.stableLabels of one component (the Redis pod template). */}}
{{- define "kvq.componentStableLabels" -}}
{{ include "kvq.stableLabels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "kvq.componentSelectorLabels" -}}
{{ include "kvq.selectorLabels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "kvq.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "kvq.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Image reference from {registry, repository, tag, digest}: (dict "image" .Values.x.image "ctx" $) */}}
{{- define "kvq.image" -}}
{{- $repo := .image.repository }}
{{- if .image.registry }}{{ $repo = printf "%s/%s" .image.registry .image.repository }}{{ end }}
{{- if .image.digest }}
{{- printf "%s@%s" $repo .image.digest }}
{{- else }}
{{- printf "%s:%s" $repo (.image.tag | default .ctx.Chart.AppVersion | toString) }}
{{- end }}
{{- end }}

{{- define "kvq.redisName" -}}
{{- printf "%s-redis" (include "kvq.fullname" .) }}
{{- end }}

{{- define "kvq.redisHeadless" -}}
{{- printf "%s-redis-headless" (include "kvq.fullname" .) }}
{{- end }}

{{/* DNS domain of the headless service: <svc>.<ns>.svc.<clusterDomain> */}}
{{- define "kvq.redisHeadlessDomain" -}}
{{- printf "%s.%s.svc.%s" (include "kvq.redisHeadless" .) .Release.Namespace .Values.clusterDomain }}
{{- end }}

{{/* Replicas of the Redis StatefulSet. */}}
{{- define "kvq.redisReplicas" -}}
{{- $r := .Values.redis -}}
{{- if eq $r.mode "sentinel" }}{{ $r.replicas | int }}
{{- else if eq $r.mode "cluster" }}{{ mul (int $r.cluster.masters) (add 1 (int $r.cluster.replicasPerMaster)) }}
{{- else }}1{{ end }}
{{- end }}

{{/* Whether the app talks to a Redis Cluster: the chart's own, or an external one (endpoint list). */}}
{{- define "kvq.appCluster" -}}
{{- if or (eq .Values.redis.mode "cluster") (and (eq .Values.redis.mode "external") .Values.redis.external.cluster.nodes) }}true{{ end }}
{{- end }}

{{/* Seed nodes (host:port) of the app in cluster mode: every pod by its stable name, or the external list. */}}
{{- define "kvq.clusterNodes" -}}
{{- $out := list }}
{{- if eq .Values.redis.mode "external" }}
{{- $out = .Values.redis.external.cluster.nodes }}
{{- else }}
{{- $domain := include "kvq.redisHeadlessDomain" . }}
{{- $sts := include "kvq.redisName" . }}
{{- range $i := until (include "kvq.redisReplicas" . | int) }}
{{- $out = append $out (printf "%s-%d.%s:%d" $sts $i $domain ($.Values.redis.port | int)) }}
{{- end }}
{{- end }}
{{- join "," $out }}
{{- end }}

{{/* List of sentinel host:port the app and KEDA use. */}}
{{- define "kvq.sentinelAddresses" -}}
{{- $out := list }}
{{- if eq .Values.redis.mode "external" }}
{{- $out = .Values.redis.external.sentinels }}
{{- else }}
{{- $domain := include "kvq.redisHeadlessDomain" . }}
{{- $sts := include "kvq.redisName" . }}
{{- range $i := until (include "kvq.redisReplicas" . | int) }}
{{- $out = append $out (printf "%s-%d.%s:%d" $sts $i $domain ($.Values.redis.sentinel.port | int)) }}
{{- end }}
{{- end }}
{{- join "," $out }}
{{- end }}

{{/* Whether the app talks to Redis through sentinels. */}}
{{- define "kvq.appSentinel" -}}
{{- if or (eq .Values.redis.mode "sentinel") (and (eq .Values.redis.mode "external") .Values.redis.external.sentinels) }}true{{ end }}
{{- end }}

{{- define "kvq.masterName" -}}
{{- if eq .Values.redis.mode "external" }}{{ .Values.redis.external.masterName }}{{ else }}{{ .Values.redis.masterName }}{{ end }}
{{- end }}

{{/* Standalone URL the app uses. */}}
{{- define "kvq.redisUrl" -}}
{{- if eq .Values.redis.mode "external" }}
{{- required "redis.external.url, redis.external.sentinels or redis.external.cluster.nodes is required when redis.mode=external" .Values.redis.external.url }}
{{- else }}
{{- printf "%s://%s:%d" (ternary "rediss" "redis" .Values.redis.tls.enabled) (include "kvq.redisName" .) (.Values.redis.port | int) }}
{{- end }}
{{- end }}

{{- define "kvq.minReplicasAck" -}}
{{- if kindIs "string" .Values.redis.minReplicasAck }}
{{- if include "kvq.appSentinel" . }}1
{{- else if and (eq .Values.redis.mode "cluster") (ge (int .Values.redis.cluster.replicasPerMaster) 1) }}1
{{- else }}0{{ end }}
{{- else }}
{{- .Values.redis.minReplicasAck | int }}
{{- end }}
{{- end }}

{{/* Secret holding the Redis and Sentinel passwords. */}}
{{- define "kvq.redisSecretName" -}}
{{- default (printf "%s-redis-auth" (include "kvq.fullname" .)) .Values.redis.auth.existingSecret }}
{{- end }}

{{/* Whether passwords are in use: auth on, or external with an existing Secret. */}}
{{- define "kvq.redisAuth" -}}
{{- if eq .Values.redis.mode "external" }}
{{- if .Values.redis.auth.existingSecret }}true{{ end }}
{{- else if .Values.redis.auth.enabled }}true{{ end }}
{{- end }}

{{/* Env of the app containers: passwords from the Secret, log filter, config path. */}}
{{- define "kvq.appEnv" -}}
- name: KVQ_CONFIG
  value: /etc/kvq/config.yaml
- name: RUST_LOG
  value: {{ .Values.config.rustLog | quote }}
{{- if include "kvq.redisAuth" . }}
{{- if not (and .Values.redis.acl.enabled (ne .Values.redis.mode "external")) }}
- name: KVQ__REDIS__PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "kvq.redisSecretName" . }}
      key: {{ .Values.redis.auth.passwordKey }}
{{- end }}
{{- if include "kvq.appSentinel" . }}
- name: KVQ__REDIS__SENTINEL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "kvq.redisSecretName" . }}
      key: {{ .Values.redis.auth.sentinelPasswordKey }}
      {{- if eq .Values.redis.mode "external" }}
      # an external Sentinel set may run without a password
      optional: true
      {{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/* Checksums that roll the app pods when their config or Secret changes. */}}
{{- define "kvq.appChecksums" -}}
checksum/config: {{ include (print .Template.BasePath "/configmap.yaml") . | sha256sum }}
{{- if include "kvq.redisAuth" . }}
checksum/secret: {{ include "kvq.secretChecksum" . }}
{{- end }}
{{- if include "kvq.appTlsMount" . }}
checksum/tls: {{ include "kvq.tlsChecksum" . }}
{{- end }}
{{- end }}

{{/*
Checksum of what decides the passwords. A generated password never changes (lookup keeps
it), so only explicit passwords and the Secret's name count; hashing the rendered Secret
would differ between `helm template` runs and roll every pod once after the first upgrade.
*/}}
{{- define "kvq.secretChecksum" -}}
{{- $a := .Values.redis.auth -}}
{{- printf "%s\n%s\n%s\n%s\n%s" (include "kvq.redisSecretName" .) $a.password $a.sentinelPassword $a.passwordKey $a.extraPassword | sha256sum }}
{{- end }}

{{/*
Default anti-affinity: (dict "ctx" $ "component" "server" "mode" "soft")
*/}}
{{- define "kvq.antiAffinity" -}}
{{- if eq .mode "hard" }}
podAntiAffinity:
  requiredDuringSchedulingIgnoredDuringExecution:
    - topologyKey: kubernetes.io/hostname
      labelSelector:
        matchLabels:
          {{- include "kvq.componentSelectorLabels" (dict "ctx" .ctx "component" .component) | nindent 10 }}
{{- else if eq .mode "soft" }}
podAntiAffinity:
  preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 100
      podAffinityTerm:
        topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            {{- include "kvq.componentSelectorLabels" (dict "ctx" .ctx "component" .component) | nindent 12 }}
{{- end }}
{{- end }}

{{/* Topology spread constraints with a default labelSelector for the component. */}}
{{- define "kvq.topologySpread" -}}
{{- range .constraints }}
- {{ toYaml (omit . "labelSelector") | nindent 2 | trim }}
  labelSelector:
    {{- if .labelSelector }}
    {{- toYaml .labelSelector | nindent 4 }}
    {{- else }}
    matchLabels:
      {{- include "kvq.componentSelectorLabels" (dict "ctx" $.ctx "component" $.component) | nindent 6 }}
    {{- end }}
{{- end }}
{{- end }}

{{/* Env of the Redis pod scripts (helm/kvq/files/redis-lib.sh documents each). */}}
{{- define "kvq.redisScriptEnv" -}}
{{- $r := .Values.redis -}}
- name: REDIS_MODE
  value: {{ $r.mode | quote }}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: STATEFULSET_NAME
  value: {{ include "kvq.redisName" . | quote }}
- name: REPLICAS
  value: {{ include "kvq.redisReplicas" . | quote }}
- name: HEADLESS_DOMAIN
  value: {{ include "kvq.redisHeadlessDomain" . | quote }}
- name: REDIS_PORT
  value: {{ $r.port | quote }}
{{- if ne $r.mode "cluster" }}
- name: SENTINEL_PORT
  value: {{ $r.sentinel.port | quote }}
- name: MASTER_NAME
  value: {{ $r.masterName | quote }}
{{- end }}
- name: DATA_DIR
  value: /data
- name: CONF_DIR
  value: /run/redis
{{- if ne $r.mode "cluster" }}
- name: DISCOVERY_TIMEOUT
  value: {{ $r.sentinel.discoveryTimeoutSeconds | quote }}
- name: PRESTOP_TIMEOUT
  value: {{ $r.sentinel.preStopTimeoutSeconds | quote }}
- name: PRESTOP_SENTINEL_WAIT
  value: "15"
- name: PRESTOP_CATCHUP_WAIT
  value: "5"
{{- end }}
- name: CLI_TIMEOUT
  value: "3"
{{- if $r.tls.enabled }}
- name: REDIS_TLS
  value: "1"
- name: TLS_CERT_FILE
  value: {{ include "kvq.tlsDir" . }}/tls.crt
- name: TLS_KEY_FILE
  value: {{ include "kvq.tlsDir" . }}/tls.key
- name: TLS_CA_FILE
  value: {{ include "kvq.tlsDir" . }}/ca.crt
- name: TLS_AUTH_CLIENTS
  value: {{ ternary "yes" "no" $r.tls.authClients | quote }}
{{- end }}
{{- if and $r.auth.enabled $r.acl.enabled }}
- name: ACL_RULES_DIR
  value: /scripts
- name: ACL_PASSWORD_DIR
  value: /etc/redis-auth
- name: REDIS_USER
  value: probe
- name: REDIS_PASSWORD_FILE
  value: /etc/redis-auth/acl-probe
{{- if eq $r.mode "sentinel" }}
- name: SENTINEL_PASSWORD_FILE
  value: /etc/redis-auth/{{ $r.auth.sentinelPasswordKey }}
{{- end }}
{{- else if $r.auth.enabled }}
- name: REDIS_PASSWORD_FILE
  value: /etc/redis-auth/{{ $r.auth.passwordKey }}
{{- if $r.auth.extraPassword }}
- name: REDIS_EXTRA_PASSWORD_FILE
  value: /etc/redis-auth/{{ $r.auth.extraPasswordKey }}
{{- end }}
{{- if eq $r.mode "sentinel" }}
- name: SENTINEL_PASSWORD_FILE
  value: /etc/redis-auth/{{ $r.auth.sentinelPasswordKey }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Worst case of the Redis preStop hook (files/redis-prestop.sh), in seconds: 15 s for the
sentinels to learn every replica, 5 s for the replicas to catch up, preStopTimeoutSeconds for the
new master (and then for the sentinels to agree on it), and 3 s (CLI_TIMEOUT) for each of
replicas + 10 redis-cli calls (SENTINEL FAILOVER to each pod, ROLE, INFO, CLIENT PAUSE,
REPLICAOF, UNPAUSE, one overrun per wait loop).
The numbers match the PRESTOP_SENTINEL_WAIT, PRESTOP_CATCHUP_WAIT and CLI_TIMEOUT env above.
*/}}
{{- define "kvq.redisPreStopWorst" -}}
{{- $r := .Values.redis -}}
{{- add 15 5 (int $r.sentinel.preStopTimeoutSeconds) (mul 3 (add (int $r.replicas) 10)) }}
{{- end }}

{{/*
Grace period of the Redis pods: redis.terminationGracePeriodSeconds, or when empty the preStop
worst case + 10 s (redis' own shutdown: final AOF fsync), 60 s outside sentinel mode. In sentinel mode an explicit value
below that sum fails the render: the kubelet would kill the master mid-failover.
*/}}
{{- define "kvq.redisGracePeriod" -}}
{{- $r := .Values.redis -}}
{{- $set := not (kindIs "string" $r.terminationGracePeriodSeconds) -}}
{{- if eq $r.mode "cluster" }}
{{- /* cluster-prestop.sh: preStopTimeoutSeconds + 6 redis-cli calls of 3 s, and 10 s shutdown margin */ -}}
{{- $need := add (int $r.cluster.preStopTimeoutSeconds) 18 10 -}}
{{- if not $set }}{{ max 60 $need }}
{{- else if lt (int $r.terminationGracePeriodSeconds) $need }}
{{- fail (printf "redis.terminationGracePeriodSeconds (%d) is below the cluster preStop worst case: redis.cluster.preStopTimeoutSeconds (%d) + 6 x 3 s redis-cli calls + 10 s shutdown margin = %d s" (int $r.terminationGracePeriodSeconds) (int $r.cluster.preStopTimeoutSeconds) $need) }}
{{- else }}{{ $r.terminationGracePeriodSeconds | int }}{{ end }}
{{- else if ne $r.mode "sentinel" }}
{{- if $set }}{{ $r.terminationGracePeriodSeconds | int }}{{ else }}60{{ end }}
{{- else }}
{{- $need := add (include "kvq.redisPreStopWorst" . | int) 10 -}}
{{- if not $set }}
{{- $need }}
{{- else if lt (int $r.terminationGracePeriodSeconds) $need }}
{{- fail (printf "redis.terminationGracePeriodSeconds (%d) is below the Redis preStop worst case: 15 s (sentinels learn replicas) + 5 s (replica catch-up) + redis.sentinel.preStopTimeoutSeconds (%d) + 3 s x (redis.replicas (%d) + 10) redis-cli calls + 10 s shutdown margin = %d s; raise it or leave it empty to have the chart compute it" (int $r.terminationGracePeriodSeconds) (int $r.sentinel.preStopTimeoutSeconds) (int $r.replicas) $need) }}
{{- else }}
{{- $r.terminationGracePeriodSeconds | int }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Bytes of a memory size: (dict "q" "768mb" "redis" true) for a redis.conf size (k=1000, kb=1024,
m, mb, g, gb; any case), (dict "q" "1Gi") for a Kubernetes quantity (k, M, G, T, Ki, Mi, Gi, Ti).
*/}}
{{- define "kvq.bytes" -}}
{{- $s := toString .q | trim -}}
{{- $num := regexFind "^[0-9]+(\\.[0-9]+)?" $s -}}
{{- $unit := trimPrefix $num $s -}}
{{- $units := dict "" 1 "k" 1000 "M" 1000000 "G" 1000000000 "T" 1000000000000 "Ki" 1024 "Mi" 1048576 "Gi" 1073741824 "Ti" 1099511627776 -}}
{{- if .redis }}
{{- $unit = lower $unit -}}
{{- $units = dict "" 1 "k" 1000 "kb" 1024 "m" 1000000 "mb" 1048576 "g" 1000000000 "gb" 1073741824 -}}
{{- end }}
{{- if or (not $num) (not (hasKey $units $unit)) }}
{{- fail (printf "cannot read the memory size %q (%s)" $s .what) }}
{{- end }}
{{- mulf (float64 $num) (index $units $unit) | int64 }}
{{- end }}

{{/*
Share of the redis container's memory limit that redis.config.maxmemory may take: the rest
is for the fork of BGREWRITEAOF (copy-on-write of pages written meanwhile), replication and
client output buffers, and allocator fragmentation.
*/}}
{{- define "kvq.maxmemoryPercent" -}}70{{- end }}

{{- define "kvq.checkMaxmemory" -}}
{{- $r := .Values.redis -}}
{{- if $r.config.maxmemory }}
{{- $mm := include "kvq.bytes" (dict "q" $r.config.maxmemory "redis" true "what" "redis.config.maxmemory") | int64 -}}
{{- $budget := .Values.config.bookkeepingBytes | int64 -}}
{{- if gt $budget $mm }}
{{- fail (printf "config.bookkeepingBytes (%d) exceeds redis.config.maxmemory (%s = %d bytes): kvq's bookkeeping alone could fill Redis and every write would answer 507; lower the budget or raise maxmemory (maxmemory = data + budget + backlog headroom)" $budget (toString $r.config.maxmemory) $mm) }}
{{- end }}
{{- end }}
{{- $limit := "" -}}
{{- if and $r.resources $r.resources.limits }}{{ $limit = $r.resources.limits.memory | default "" }}{{ end -}}
{{- if and $r.config.maxmemory $limit }}
{{- $mm := include "kvq.bytes" (dict "q" $r.config.maxmemory "redis" true "what" "redis.config.maxmemory") | int64 -}}
{{- $lim := include "kvq.bytes" (dict "q" $limit "what" "redis.resources.limits.memory") | int64 -}}
{{- $pct := include "kvq.maxmemoryPercent" . | int64 -}}
{{- if gt (mul $mm 100) (mul $lim $pct) }}
{{- fail (printf "redis.config.maxmemory (%s = %d bytes) exceeds %d %% of redis.resources.limits.memory (%s = %d bytes): the fork for AOF rewrites (copy-on-write) and the replication and client buffers need the rest; lower maxmemory to at most %d bytes or raise the limit" (toString $r.config.maxmemory) $mm $pct (toString $limit) $lim (div (mul $lim $pct) 100)) }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Refuses Redis topologies on which every write fails, or on which an allowed disruption (one
PDB-sanctioned eviction) or the loss of the master stops writes or failover.
*/}}
{{- define "kvq.checkRedisTopology" -}}
{{- $r := .Values.redis -}}
{{- $ack := include "kvq.minReplicasAck" . | int -}}
{{- if eq $r.mode "sentinel" }}
{{- $n := int $r.replicas -}}
{{- if gt (int $r.sentinel.quorum) $n }}
{{- fail (printf "redis.sentinel.quorum (%d) cannot exceed redis.replicas (%d): no failover could ever be agreed" (int $r.sentinel.quorum) $n) }}
{{- end }}
{{- if gt (int $r.config.minReplicasToWrite) (sub $n 1) }}
{{- fail (printf "redis.config.minReplicasToWrite (%d) needs at least %d Redis pods (redis.replicas is %d)" (int $r.config.minReplicasToWrite) (add 1 (int $r.config.minReplicasToWrite)) $n) }}
{{- end }}
{{- if lt $n 3 }}
{{- fail (printf "redis.replicas is %d: sentinel mode needs at least 3 pods (a majority of sentinels must survive the loss of the master's pod to elect a failover leader, and a replica must remain for min-replicas-to-write); use 3 or more, or redis.mode=standalone" $n) }}
{{- end }}
{{- if ge $ack $n }}
{{- fail (printf "redis.minReplicasAck (%d) must be below redis.replicas (%d): a master has at most %d replicas, so every write would wait in vain and answer 503" $ack $n (sub $n 1)) }}
{{- end }}
{{- if gt (int $r.sentinel.quorum) (sub $n 1) }}
{{- fail (printf "redis.sentinel.quorum (%d) must be at most redis.replicas - 1 (%d): the master's pod runs a sentinel too, so after losing it only %d sentinels can agree the master is down" (int $r.sentinel.quorum) (sub $n 1) (sub $n 1)) }}
{{- end }}
{{- /* One pod may be evicted (PDB maxUnavailable) while another is the master: what is left must still satisfy the write rules. */ -}}
{{- $down := 1 -}}
{{- if and $r.pdb.enabled (kindIs "float64" $r.pdb.maxUnavailable) }}{{ $down = max 1 (int $r.pdb.maxUnavailable) }}{{ end -}}
{{- if and $r.pdb.enabled (kindIs "int64" $r.pdb.maxUnavailable) }}{{ $down = max 1 (int $r.pdb.maxUnavailable) }}{{ end -}}
{{- $left := sub (sub $n 1) $down -}}
{{- if gt (int $r.config.minReplicasToWrite) $left }}
{{- fail (printf "redis.config.minReplicasToWrite (%d) needs more replicas than remain while %d of redis.replicas (%d) pods are down (%d replicas left besides the master): writes would stop during every allowed disruption; lower it or add pods" (int $r.config.minReplicasToWrite) $down $n $left) }}
{{- end }}
{{- if gt $ack $left }}
{{- fail (printf "redis.minReplicasAck (%d) needs more replicas than remain while %d of redis.replicas (%d) pods are down (%d left besides the master): every write would answer 503 during an allowed disruption; lower it or add pods" $ack $down $n $left) }}
{{- end }}
{{- else if eq $r.mode "cluster" }}
{{- $c := $r.cluster -}}
{{- if lt (int $c.masters) 3 }}
{{- fail (printf "redis.cluster.masters is %d: Redis Cluster needs at least 3 masters (a failover needs the votes of a majority of masters, which must survive the loss of one)" (int $c.masters)) }}
{{- end }}
{{- if lt (int $c.replicasPerMaster) 0 }}
{{- fail "redis.cluster.replicasPerMaster cannot be negative" }}
{{- end }}
{{- if gt $ack (int $c.replicasPerMaster) }}
{{- fail (printf "redis.minReplicasAck (%d) exceeds redis.cluster.replicasPerMaster (%d): a shard's master has only that many replicas, so every write would wait in vain and answer 503" $ack (int $c.replicasPerMaster)) }}
{{- end }}
{{- if $r.acl.enabled }}
{{- fail "redis.acl.enabled is not supported with redis.mode=cluster yet (the pods' scripts run CLUSTER commands the least-privilege users do not have); use redis.auth (one password) with redis.tls" }}
{{- end }}
{{- end }}
{{- if and (include "kvq.appCluster" .) .Values.worker.keda.enabled }}
{{- fail "worker.keda.enabled is not supported in cluster mode yet: the queue is split into config.taskShards streams and KEDA's stream trigger reads one; use worker.autoscaling" }}
{{- end }}
{{- if and (eq $r.mode "external") $r.external.cluster.nodes (or $r.external.url $r.external.sentinels) }}
{{- fail "redis.external.cluster.nodes is set together with redis.external.url or redis.external.sentinels: set only the one kvq should use" }}
{{- end }}
{{- if or (lt (int .Values.config.taskShards) 1) (gt (int .Values.config.taskShards) 1024) }}
{{- fail (printf "config.taskShards (%d) must be between 1 and 1024" (int .Values.config.taskShards)) }}
{{- end }}
{{- if eq $r.mode "standalone" }}
{{- if gt $ack 0 }}
{{- fail (printf "redis.minReplicasAck (%d) must be 0 with redis.mode=standalone: a standalone Redis has no replica to acknowledge a write" $ack) }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The fewest pods of an app component: HPA or KEDA minimum, else replicaCount.
(dict "ctx" $ "component" "server" "v" .Values.server)
*/}}
{{- define "kvq.appMinReplicas" -}}
{{- $v := .v -}}
{{- if and $v.keda $v.keda.enabled }}{{ $v.keda.minReplicaCount | int }}
{{- else if $v.autoscaling.enabled }}{{ $v.autoscaling.minReplicas | int }}
{{- else }}{{ $v.replicaCount | int }}{{ end }}
{{- end }}

{{/*
Refuses app settings that block operations or autoscaling: (dict "ctx" $ "component" "server" "v" .Values.server)
*/}}
{{- define "kvq.checkApp" -}}
{{- $v := .v -}}
{{- $c := .component -}}
{{- $hpa := and $v.autoscaling.enabled (not (and $v.keda $v.keda.enabled)) -}}
{{- if $hpa }}
{{- $a := $v.autoscaling -}}
{{- if gt (int $a.minReplicas) (int $a.maxReplicas) }}
{{- fail (printf "%s.autoscaling.minReplicas (%d) exceeds %s.autoscaling.maxReplicas (%d)" $c (int $a.minReplicas) $c (int $a.maxReplicas)) }}
{{- end }}
{{- $req := dict -}}
{{- if and $v.resources $v.resources.requests }}{{ $req = $v.resources.requests }}{{ end -}}
{{- if not $req.cpu }}
{{- fail (printf "%s.autoscaling.enabled scales on CPU utilisation, a share of the CPU request, but %s.resources.requests.cpu is not set: the HPA could never compute it; set a CPU request or turn autoscaling off" $c $c) }}
{{- end }}
{{- if and $a.targetMemoryUtilizationPercentage (not $req.memory) }}
{{- fail (printf "%s.autoscaling.targetMemoryUtilizationPercentage is set but %s.resources.requests.memory is not" $c $c) }}
{{- end }}
{{- end }}
{{- if $v.pdb.enabled }}
{{- $min := include "kvq.appMinReplicas" . | int -}}
{{- $p := $v.pdb -}}
{{- $where := ternary (printf "%s.autoscaling.minReplicas" $c) (printf "%s.replicaCount" $c) (and $v.autoscaling.enabled true) -}}
{{- if and $v.keda $v.keda.enabled }}{{ $where = printf "%s.keda.minReplicaCount" $c }}{{ end -}}
{{- if or $p.maxUnavailable (eq (toString $p.maxUnavailable) "0") }}
{{- if or (eq (toString $p.maxUnavailable) "0") (eq (toString $p.maxUnavailable) "0%") }}
{{- fail (printf "%s.pdb.maxUnavailable is 0: no %s pod could ever be evicted, so every node drain blocks; use 1 or more" $c $c) }}
{{- end }}
{{- else }}
{{- $ma := toString $p.minAvailable -}}
{{- if hasSuffix "%" $ma }}
{{- /* the eviction API rounds a percentage of minAvailable up */ -}}
{{- $need := div (add (mul $min (int (trimSuffix "%" $ma))) 99) 100 -}}
{{- if ge $need $min }}
{{- fail (printf "%s.pdb.minAvailable is %s: with %s = %d that keeps all %d pods, so no %s pod could ever be evicted and every node drain blocks" $c $ma $where $min $min $c) }}
{{- end }}
{{- else if and (not (hasSuffix "%" $ma)) (ge (int $p.minAvailable) $min) }}
{{- fail (printf "%s.pdb.minAvailable (%d) is not below the fewest %s pods (%s = %d): no pod could be evicted and every node drain blocks; lower minAvailable, raise %s, or use %s.pdb.maxUnavailable" $c (int $p.minAvailable) $c $where $min $where $c) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/* The ACL users of the chart's Redis (redis.acl.enabled); their rules are files/acl/<user>.acl. */}}
{{- define "kvq.aclUsers" -}}
kvq-server kvq-worker replication sentinel exporter probe
{{- end }}

{{/* Whether kvq talks TLS to Redis (the chart's own with redis.tls.enabled, or an external one). */}}
{{- define "kvq.redisTls" -}}
{{- if .Values.redis.tls.enabled }}true{{ end }}
{{- end }}

{{/* Secret with the Redis certificates: the existing one, or the cert-manager Certificate's. */}}
{{- define "kvq.redisTlsSecret" -}}
{{- default (printf "%s-redis-tls" (include "kvq.fullname" .)) .Values.redis.tls.existingSecret }}
{{- end }}

{{/* Whether the app mounts the TLS Secret: always for the chart's Redis; external mode only with a Secret (else the system's roots). */}}
{{- define "kvq.appTlsMount" -}}
{{- if and .Values.redis.tls.enabled (or (ne .Values.redis.mode "external") .Values.redis.tls.existingSecret) }}true{{ end }}
{{- end }}

{{/* Where the app and the Redis pods mount the TLS Secret. */}}
{{- define "kvq.tlsDir" -}}/etc/redis-tls{{- end }}

{{/*
TLS and ACL combinations that cannot work: fail the render with the reason.
*/}}
{{- define "kvq.checkTlsAcl" -}}
{{- $r := .Values.redis -}}
{{- $external := eq $r.mode "external" -}}
{{- if and $r.tls.authClients (not $r.tls.enabled) }}
{{- fail "redis.tls.authClients needs redis.tls.enabled" }}
{{- end }}
{{- if $r.tls.enabled }}
{{- if and $r.tls.existingSecret $r.tls.certManager.issuerRef }}
{{- fail "redis.tls: set either existingSecret or certManager.issuerRef, not both" }}
{{- end }}
{{- if and (not $external) (not $r.tls.existingSecret) (not $r.tls.certManager.issuerRef) }}
{{- fail "redis.tls.enabled needs certificates: redis.tls.existingSecret (ca.crt, tls.crt, tls.key) or redis.tls.certManager.issuerRef" }}
{{- end }}
{{- if and $external $r.tls.certManager.issuerRef }}
{{- fail "redis.tls.certManager issues certificates for the chart's own Redis; in external mode give the CA in redis.tls.existingSecret (ca.crt) or nothing (system roots)" }}
{{- end }}
{{- if and $external $r.external.url (not (hasPrefix "rediss://" $r.external.url)) }}
{{- fail "redis.tls.enabled in external mode needs a rediss:// redis.external.url" }}
{{- end }}
{{- if and $external $r.tls.authClients (not $r.tls.existingSecret) }}
{{- fail "redis.tls.authClients in external mode needs redis.tls.existingSecret with tls.crt and tls.key" }}
{{- end }}
{{- end }}
{{- if and $external $r.external.url (hasPrefix "rediss://" $r.external.url) (not $r.tls.enabled) }}
{{- fail "redis.external.url is rediss://: set redis.tls.enabled (and redis.tls.existingSecret with ca.crt unless the system roots know the server's CA)" }}
{{- end }}
{{- if $r.acl.enabled }}
{{- if $external }}
{{- fail "redis.acl.enabled creates users on the chart's own Redis; in external mode set redis.external.username" }}
{{- end }}
{{- if not $r.auth.enabled }}
{{- fail "redis.acl.enabled needs redis.auth.enabled (the ACL users' passwords live in its Secret)" }}
{{- end }}
{{- if $r.auth.extraPassword }}
{{- fail "redis.auth.extraPassword (password rotation) applies to the default user, which redis.acl.enabled turns off" }}
{{- end }}
{{- end }}
{{- if and $r.external.username (not $external) }}
{{- fail "redis.external.username is for external mode; the chart's own Redis uses redis.acl.enabled" }}
{{- end }}
{{- if and $r.external.username (not $r.auth.existingSecret) }}
{{- fail "redis.external.username needs redis.auth.existingSecret holding its password" }}
{{- end }}
{{- end }}

{{/* Checksum of what decides the TLS material: a new Secret or issuer rolls the pods. */}}
{{- define "kvq.tlsChecksum" -}}
{{- $t := .Values.redis.tls -}}
{{- printf "%s\n%s\n%v" (include "kvq.redisTlsSecret" .) (toJson $t.certManager.issuerRef) $t.authClients | sha256sum }}
{{- end }}

{{/* Env of an app container for its own ACL user: (dict "ctx" $ "component" "server"). */}}
{{- define "kvq.appUserEnv" -}}
{{- $r := .ctx.Values.redis -}}
{{- if and $r.acl.enabled (ne $r.mode "external") }}
- name: KVQ__REDIS__USERNAME
  value: kvq-{{ .component }}
- name: KVQ__REDIS__PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "kvq.redisSecretName" .ctx }}
      key: acl-kvq-{{ .component }}
{{- else if and (eq $r.mode "external") $r.external.username }}
- name: KVQ__REDIS__USERNAME
  value: {{ $r.external.username | quote }}
{{- end }}
{{- end }}
