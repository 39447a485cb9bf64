#!/usr/bin/env python3
"""Generates values.schema.json (JSON Schema 2020-12) for the kvq chart.

Run from the repository root:  python3 helm/kvq/values.schema.py > helm/kvq/values.schema.json
scripts/verify-chart.sh fails when the committed schema differs from what this prints.
Objects reject unknown keys; enums name the allowed values."""
import json
def obj(props, required=None, extra=False):
    o={"type":"object","additionalProperties":extra,"properties":props}
    if required: o["required"]=required
    return o
S={"type":"string"}; I={"type":"integer"}; B={"type":"boolean"}
def Imin(m): return {"type":"integer","minimum":m}
OPT_INT={"oneOf":[{"type":"integer","minimum":0},{"type":"string","maxLength":0}]}
OPT_INT_OR_PCT={"oneOf":[{"type":"integer","minimum":0},{"type":"string","pattern":"^([0-9]+%?)?$"}]}
ANYOBJ={"type":"object"}; ANYARR={"type":"array"}
PORT={"type":"integer","minimum":1,"maximum":65535}
defs={
 "image": obj({"registry":S,"repository":{"type":"string","minLength":1},"tag":{"type":["string","number"]},"digest":{"type":"string","pattern":"^(sha256:[a-f0-9]{64})?$"},"pullPolicy":{"enum":["Always","IfNotPresent","Never"]}},["repository"]),
 "quantity": {"type":["string","number"]},
 "resources": obj({"requests":obj({"cpu":{"$ref":"#/$defs/quantity"},"memory":{"$ref":"#/$defs/quantity"},"ephemeral-storage":{"$ref":"#/$defs/quantity"}}),
                    "limits":obj({"cpu":{"$ref":"#/$defs/quantity"},"memory":{"$ref":"#/$defs/quantity"},"ephemeral-storage":{"$ref":"#/$defs/quantity"}})}),
 "antiAffinity": {"enum":["soft","hard","none"]},
 "probe": obj({"periodSeconds":Imin(1),"timeoutSeconds":Imin(1),"failureThreshold":Imin(1)}),
 "pdb": obj({"enabled":B,"minAvailable":OPT_INT_OR_PCT,"maxUnavailable":OPT_INT_OR_PCT}),
 "autoscaling": obj({"enabled":B,"minReplicas":Imin(1),"maxReplicas":Imin(1),"targetCPUUtilizationPercentage":{"type":"integer","minimum":1,"maximum":100},
                      "targetMemoryUtilizationPercentage":{"oneOf":[{"type":"integer","minimum":1,"maximum":100},{"type":"string","maxLength":0}]},"behavior":ANYOBJ}),
}
def app(extra_props):
    p={"image":{"$ref":"#/$defs/image"},"replicaCount":Imin(0),"containerPort":PORT,"terminationGracePeriodSeconds":Imin(0),
       "resources":{"$ref":"#/$defs/resources"},"podSecurityContext":ANYOBJ,"containerSecurityContext":ANYOBJ,
       "probes":obj({"startup":{"$ref":"#/$defs/probe"},"liveness":{"$ref":"#/$defs/probe"},"readiness":{"$ref":"#/$defs/probe"}}),
       "autoscaling":{"$ref":"#/$defs/autoscaling"},"pdb":{"$ref":"#/$defs/pdb"},
       "podAnnotations":ANYOBJ,"podLabels":ANYOBJ,"nodeSelector":ANYOBJ,"tolerations":ANYARR,"affinity":ANYOBJ,
       "podAntiAffinity":{"$ref":"#/$defs/antiAffinity"},"topologySpreadConstraints":ANYARR,"priorityClassName":S,
       "extraEnv":ANYARR,"extraVolumes":ANYARR,"extraVolumeMounts":ANYARR}
    p.update(extra_props); return obj(p)
server=app({"service":obj({"type":{"enum":["ClusterIP","NodePort","LoadBalancer"]},"port":PORT,"nodePort":{"oneOf":[{"type":"integer","minimum":30000,"maximum":32767},{"type":"string","maxLength":0}]},
                             "annotations":ANYOBJ,"loadBalancerSourceRanges":{"type":"array","items":S}}),
            "ingress":obj({"enabled":B,"className":S,"annotations":ANYOBJ,
                           "hosts":{"type":"array","items":obj({"host":S,"paths":{"type":"array","items":obj({"path":S,"pathType":{"enum":["Prefix","Exact","ImplementationSpecific"]}},["path","pathType"])}},["host","paths"])},
                           "tls":{"type":"array","items":obj({"secretName":S,"hosts":{"type":"array","items":S}},["secretName"])}})})
worker=app({"concurrency":Imin(1),"claimIdleMs":Imin(1),"maxAttempts":Imin(1),
            "metricsService":obj({"enabled":B,"port":PORT}),
            "keda":obj({"enabled":B,"minReplicaCount":Imin(0),"maxReplicaCount":Imin(1),"pollingInterval":Imin(1),"cooldownPeriod":Imin(0),"pendingEntriesCount":Imin(1),"redisAddress":S})})
redis=obj({
 "mode":{"enum":["sentinel","standalone","external"]},
 "image":{"$ref":"#/$defs/image"},"replicas":Imin(1),"port":PORT,"masterName":{"type":"string","pattern":"^[A-Za-z0-9._-]+$"},
 "minReplicasAck":OPT_INT,
 "auth":obj({"enabled":B,"existingSecret":S,"passwordKey":{"type":"string","minLength":1},"sentinelPasswordKey":{"type":"string","minLength":1},"password":S,"sentinelPassword":S}),
 "config":obj({"appendfsync":{"enum":["always","everysec","no"]},"minReplicasToWrite":Imin(0),"minReplicasMaxLag":Imin(1),"maxmemory":S,"extra":S}),
 "sentinel":obj({"port":PORT,"quorum":Imin(1),"downAfterMilliseconds":Imin(100),"failoverTimeout":Imin(1000),"parallelSyncs":Imin(1),
                 "discoveryTimeoutSeconds":Imin(1),"preStopTimeoutSeconds":Imin(1),"extra":S,"resources":{"$ref":"#/$defs/resources"},"service":obj({"port":PORT})}),
 "resources":{"$ref":"#/$defs/resources"},
 "persistence":obj({"enabled":B,"storageClass":S,"size":{"type":"string","pattern":"^[0-9]+(\\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$"},"accessModes":{"type":"array","items":{"enum":["ReadWriteOnce","ReadWriteOncePod","ReadWriteMany","ReadOnlyMany"]},"minItems":1}}),
 "podSecurityContext":ANYOBJ,"containerSecurityContext":ANYOBJ,"terminationGracePeriodSeconds":Imin(0),
 "podAntiAffinity":{"$ref":"#/$defs/antiAffinity"},"affinity":ANYOBJ,"topologySpreadConstraints":ANYARR,
 "pdb":obj({"enabled":B,"maxUnavailable":{"oneOf":[Imin(0),{"type":"string","pattern":"^[0-9]+%$"}]}}),
 "podAnnotations":ANYOBJ,"podLabels":ANYOBJ,"nodeSelector":ANYOBJ,"tolerations":ANYARR,"priorityClassName":S,
 "extraEnv":ANYARR,"extraVolumes":ANYARR,"extraVolumeMounts":ANYARR,
 "exporter":obj({"enabled":B,"image":{"$ref":"#/$defs/image"},"port":PORT,"resources":{"$ref":"#/$defs/resources"}}),
 "external":obj({"url":{"type":"string","pattern":"^(rediss?://[^@]+)?$"},"sentinels":{"type":"array","items":{"type":"string","pattern":"^[^:]+:[0-9]+$"}},"masterName":S}),
})
root=obj({
 "nameOverride":S,"fullnameOverride":S,"clusterDomain":S,"commonLabels":{"type":"object","additionalProperties":S},
 "imagePullSecrets":{"type":"array","items":obj({"name":S},["name"])},
 "config":obj({"logFormat":{"enum":["json","pretty"]},"rustLog":S,"keyPrefix":{"type":"string","pattern":"^[A-Za-z0-9_.-]{1,64}$"},"maxValueBytes":Imin(1),"taskRetentionSeconds":Imin(1)}),
 "serviceAccount":obj({"create":B,"name":S,"annotations":ANYOBJ,"automountServiceAccountToken":B}),
 "server":server,"worker":worker,"redis":redis,
 "networkPolicy":obj({"enabled":B,"serverIngressFrom":ANYARR,"metricsIngressFrom":ANYARR}),
 "serviceMonitor":obj({"enabled":B,"interval":S,"scrapeTimeout":S,"labels":ANYOBJ}),
 "tests":obj({"enabled":B,"image":{"$ref":"#/$defs/image"}}),
})
# Helm passes `global` to every chart; allow it.
root["properties"]["global"]={"type":"object"}
root={"$schema":"https://json-schema.org/draft/2020-12/schema","title":"kvq chart values", **root, "$defs":defs}
print(json.dumps(root,indent=2))
