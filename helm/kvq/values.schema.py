#!/usr/bin/env python3
"""Generates values.schema.json (JSON Schema 2020-12) for the kvq chart.

Run from the repository root:

    python3 helm/kvq/values.schema.py > helm/kvq/values.schema.json

scripts/verify-chart.sh fails when the committed schema differs from what this prints.
Every object rejects unknown keys, so a typo in a values file fails `helm install` instead of
being ignored; enums name the allowed values; numeric ranges match what the app accepts
(src/config.rs), so a value the binaries would refuse at start is refused at render time.
"""
import json

# ---------------------------------------------------------------- building blocks

STRING = {"type": "string"}
BOOLEAN = {"type": "boolean"}
ANY_OBJECT = {"type": "object"}
ANY_ARRAY = {"type": "array"}
PORT = {"type": "integer", "minimum": 1, "maximum": 65535}


def obj(properties, required=None, additional=False):
    """An object with the given properties; unknown keys are errors unless `additional`."""
    schema = {"type": "object", "additionalProperties": additional, "properties": properties}
    if required:
        schema["required"] = required
    return schema


def integer(minimum, maximum=None):
    schema = {"type": "integer", "minimum": minimum}
    if maximum is not None:
        schema["maximum"] = maximum
    return schema


def ref(name):
    return {"$ref": f"#/$defs/{name}"}


def array_of(items, min_items=None):
    schema = {"type": "array", "items": items}
    if min_items is not None:
        schema["minItems"] = min_items
    return schema


def one_of(*schemas):
    return {"oneOf": list(schemas)}


EMPTY_STRING = {"type": "string", "maxLength": 0}
# An integer, or "" for "not set" (the template then picks a default).
OPTIONAL_COUNT = one_of(integer(0), EMPTY_STRING)
# A PDB figure: a count or a percentage.
COUNT_OR_PERCENT = one_of(integer(0), {"type": "string", "pattern": "^([0-9]+%?)?$"})
PERCENT = integer(1, 100)
# A Prometheus duration (`for:` of an alert), e.g. 5m, 1h30m.
DURATION = {"type": "string", "pattern": "^([0-9]+(ms|s|m|h|d|w|y))+$"}
RATIO = {"type": "number", "exclusiveMinimum": 0, "maximum": 1}

# ---------------------------------------------------------------- shared definitions

QUANTITIES = {name: ref("quantity") for name in ("cpu", "memory", "ephemeral-storage")}

DEFINITIONS = {
    "image": obj(
        {
            "registry": STRING,
            "repository": {"type": "string", "minLength": 1},
            "tag": {"type": ["string", "number"]},
            "digest": {"type": "string", "pattern": "^(sha256:[a-f0-9]{64})?$"},
            "pullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]},
        },
        required=["repository"],
    ),
    "quantity": {"type": ["string", "number"]},
    "resources": obj({"requests": obj(QUANTITIES), "limits": obj(QUANTITIES)}),
    "antiAffinity": {"enum": ["soft", "hard", "none"]},
    "probe": obj({"periodSeconds": integer(1), "timeoutSeconds": integer(1), "failureThreshold": integer(1)}),
    "pdb": obj({"enabled": BOOLEAN, "minAvailable": COUNT_OR_PERCENT, "maxUnavailable": COUNT_OR_PERCENT}),
    "autoscaling": obj(
        {
            "enabled": BOOLEAN,
            "minReplicas": integer(1),
            "maxReplicas": integer(1),
            "targetCPUUtilizationPercentage": PERCENT,
            "targetMemoryUtilizationPercentage": one_of(PERCENT, EMPTY_STRING),
            "behavior": ANY_OBJECT,
        }
    ),
}

# ---------------------------------------------------------------- kvq-server and kvq-worker


def app_component(own_properties):
    """What the server and the worker Deployments share, plus their own values."""
    properties = {
        "image": ref("image"),
        "replicaCount": integer(0),
        "containerPort": PORT,
        "terminationGracePeriodSeconds": integer(0),
        "resources": ref("resources"),
        "podSecurityContext": ANY_OBJECT,
        "containerSecurityContext": ANY_OBJECT,
        "probes": obj({"startup": ref("probe"), "liveness": ref("probe"), "readiness": ref("probe")}),
        "autoscaling": ref("autoscaling"),
        "pdb": ref("pdb"),
        "podAnnotations": ANY_OBJECT,
        "podLabels": ANY_OBJECT,
        "nodeSelector": ANY_OBJECT,
        "tolerations": ANY_ARRAY,
        "affinity": ANY_OBJECT,
        "podAntiAffinity": ref("antiAffinity"),
        "topologySpreadConstraints": ANY_ARRAY,
        "priorityClassName": STRING,
        "extraEnv": ANY_ARRAY,
        "extraVolumes": ANY_ARRAY,
        "extraVolumeMounts": ANY_ARRAY,
    }
    properties.update(own_properties)
    return obj(properties)


INGRESS_PATH = obj(
    {"path": STRING, "pathType": {"enum": ["Prefix", "Exact", "ImplementationSpecific"]}},
    required=["path", "pathType"],
)

SERVER = app_component(
    {
        "service": obj(
            {
                "type": {"enum": ["ClusterIP", "NodePort", "LoadBalancer"]},
                "port": PORT,
                "nodePort": one_of(integer(30000, 32767), EMPTY_STRING),
                "annotations": ANY_OBJECT,
                "loadBalancerSourceRanges": array_of(STRING),
            }
        ),
        "ingress": obj(
            {
                "enabled": BOOLEAN,
                "className": STRING,
                "annotations": ANY_OBJECT,
                "hosts": array_of(obj({"host": STRING, "paths": array_of(INGRESS_PATH)}, required=["host", "paths"])),
                "tls": array_of(obj({"secretName": STRING, "hosts": array_of(STRING)}, required=["secretName"])),
            }
        ),
    }
)

WORKER = app_component(
    {
        "concurrency": integer(1, 1024),
        "claimIdleMs": integer(10, 86_400_000),
        "maxAttempts": integer(1, 1000),
        "metricsService": obj({"enabled": BOOLEAN, "port": PORT}),
        "keda": obj(
            {
                "enabled": BOOLEAN,
                "minReplicaCount": integer(0),
                "maxReplicaCount": integer(1),
                "pollingInterval": integer(1),
                "cooldownPeriod": integer(0),
                "lagCount": integer(1),
                "activationLagCount": integer(0),
                "pendingEntriesCount": one_of(integer(1), EMPTY_STRING),
                "redisAddress": STRING,
            }
        ),
    }
)

# ---------------------------------------------------------------- Redis

REDIS = obj(
    {
        "mode": {"enum": ["sentinel", "cluster", "standalone", "external"]},
        "image": ref("image"),
        "replicas": integer(1),
        "port": PORT,
        "masterName": {"type": "string", "pattern": "^[A-Za-z0-9._-]+$"},
        "minReplicasAck": OPTIONAL_COUNT,
        "auth": obj(
            {
                "enabled": BOOLEAN,
                "existingSecret": STRING,
                "passwordKey": {"type": "string", "minLength": 1},
                "sentinelPasswordKey": {"type": "string", "minLength": 1},
                "password": STRING,
                "sentinelPassword": STRING,
                "extraPassword": STRING,
                "extraPasswordKey": {"type": "string", "minLength": 1},
                "generateWithoutCluster": BOOLEAN,
            }
        ),
        "tls": obj(
            {
                "enabled": BOOLEAN,
                "existingSecret": STRING,
                "authClients": BOOLEAN,
                "certManager": obj(
                    {
                        # name, kind, group of a cert-manager issuer
                        "issuerRef": obj({"name": STRING, "kind": STRING, "group": STRING}),
                        "duration": {"type": "string", "pattern": "^[0-9]+(h|m|s)$"},
                        "renewBefore": {"type": "string", "pattern": "^[0-9]+(h|m|s)$"},
                    }
                ),
            }
        ),
        "acl": obj({"enabled": BOOLEAN}),
        "config": obj(
            {
                "appendfsync": {"enum": ["always", "everysec", "no"]},
                "minReplicasToWrite": integer(0),
                "minReplicasMaxLag": integer(1),
                "maxmemory": STRING,
                "extra": STRING,
            }
        ),
        "cluster": obj(
            {
                "masters": integer(1),
                "replicasPerMaster": integer(0),
                "busPort": PORT,
                "nodeTimeoutMs": integer(500),
                "preStopTimeoutSeconds": integer(1),
                "createTimeoutSeconds": integer(10),
            }
        ),
        "sentinel": obj(
            {
                "port": PORT,
                "quorum": integer(1),
                "downAfterMilliseconds": integer(100),
                "failoverTimeout": integer(1000),
                "parallelSyncs": integer(1),
                "discoveryTimeoutSeconds": integer(1),
                "preStopTimeoutSeconds": integer(1),
                "extra": STRING,
                "resources": ref("resources"),
                "service": obj({"port": PORT}),
            }
        ),
        "resources": ref("resources"),
        "persistence": obj(
            {
                "enabled": BOOLEAN,
                "storageClass": STRING,
                "size": {"type": "string", "pattern": "^[0-9]+(\\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$"},
                "accessModes": array_of(
                    {"enum": ["ReadWriteOnce", "ReadWriteOncePod", "ReadWriteMany", "ReadOnlyMany"]}, min_items=1
                ),
            }
        ),
        "podSecurityContext": ANY_OBJECT,
        "containerSecurityContext": ANY_OBJECT,
        "terminationGracePeriodSeconds": OPTIONAL_COUNT,
        "podAntiAffinity": ref("antiAffinity"),
        "affinity": ANY_OBJECT,
        "topologySpreadConstraints": ANY_ARRAY,
        "pdb": obj({"enabled": BOOLEAN, "maxUnavailable": one_of(integer(0), {"type": "string", "pattern": "^[0-9]+%$"})}),
        "podAnnotations": ANY_OBJECT,
        "podLabels": ANY_OBJECT,
        "nodeSelector": ANY_OBJECT,
        "tolerations": ANY_ARRAY,
        "priorityClassName": STRING,
        "extraEnv": ANY_ARRAY,
        "extraVolumes": ANY_ARRAY,
        "extraVolumeMounts": ANY_ARRAY,
        "exporter": obj({"enabled": BOOLEAN, "image": ref("image"), "port": PORT, "resources": ref("resources")}),
        "external": obj(
            {
                # No credentials in the URL: the password comes from the Secret.
                "url": {"type": "string", "pattern": "^(rediss?://[^@]+)?$"},
                "sentinels": array_of({"type": "string", "pattern": "^[^:]+:[0-9]+$"}),
                "masterName": STRING,
                "cluster": obj({"nodes": array_of({"type": "string", "pattern": "^[^:]+:[0-9]+$"})}),
                # An ACL user name: no spaces (kvq refuses them too).
                "username": {"type": "string", "pattern": "^[^\\s]*$"},
            }
        ),
    }
)

# ---------------------------------------------------------------- the whole values file

VALUES = obj(
    {
        "nameOverride": STRING,
        "fullnameOverride": STRING,
        "clusterDomain": STRING,
        "commonLabels": {"type": "object", "additionalProperties": STRING},
        "imagePullSecrets": array_of(obj({"name": STRING}, required=["name"])),
        "config": obj(
            {
                "logFormat": {"enum": ["json", "pretty"]},
                "rustLog": STRING,
                # The app refuses any other prefix (one could nest inside another's key space).
                "keyPrefix": {"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,64}$"},
                "maxValueBytes": integer(1, 536_870_912),
                "taskRetentionSeconds": integer(1, 315_360_000),
                # Redis memory kvq may spend on task records, idempotency keys and tombstones.
                "bookkeepingBytes": integer(65_536, 1_099_511_627_776),
                # Queue shards in cluster mode; fixed after install.
                "taskShards": integer(1, 1024),
            }
        ),
        "auth": obj(
            {
                "mode": {"enum": ["tokens", "none"]},
                "existingSecret": STRING,
                "existingSecretKey": {"type": "string", "pattern": "^[-._a-zA-Z0-9]+$"},
                # Hashes only: an entry with the token itself is refused (no `token` property).
                "tokens": array_of(
                    obj(
                        {
                            "name": {"type": "string", "minLength": 1, "maxLength": 128},
                            "sha256": {"type": "string", "pattern": "^[0-9a-fA-F]{64}$"},
                            "scopes": {
                                "type": "array",
                                "items": {"enum": ["read", "write"]},
                                "minItems": 1,
                                "uniqueItems": True,
                            },
                            "prefixes": array_of({"type": "string", "minLength": 1}, min_items=1),
                        },
                        required=["name", "sha256", "scopes"],
                    )
                ),
                "generateToken": BOOLEAN,
                "generateWithoutCluster": BOOLEAN,
            }
        ),
        "serviceAccount": obj(
            {"create": BOOLEAN, "name": STRING, "annotations": ANY_OBJECT, "automountServiceAccountToken": BOOLEAN}
        ),
        "server": SERVER,
        "worker": WORKER,
        "redis": REDIS,
        "networkPolicy": obj(
            {
                "enabled": BOOLEAN,
                "serverIngressFrom": ANY_ARRAY,
                "metricsIngressFrom": ANY_ARRAY,
                "kedaNamespace": {"type": "string", "minLength": 1},
                "extraIngress": obj({"redis": ANY_ARRAY, "server": ANY_ARRAY, "worker": ANY_ARRAY}),
            }
        ),
        "serviceMonitor": obj({"enabled": BOOLEAN, "interval": STRING, "scrapeTimeout": STRING, "labels": ANY_OBJECT}),
        "prometheusRule": obj(
            {
                "enabled": BOOLEAN,
                "force": BOOLEAN,
                "labels": ANY_OBJECT,
                "runbookBaseUrl": {"type": "string", "minLength": 1},
                "selector": STRING,
                "alerts": obj(
                    {
                        "oldestTaskAgeWarningSeconds": integer(1),
                        "oldestTaskAgeCriticalSeconds": integer(1),
                        "backlogTasks": integer(1),
                        "backlogFor": DURATION,
                        "writeErrorRatio": RATIO,
                        "notConsumingFor": DURATION,
                        "masterUnwritableFor": DURATION,
                        "memoryWarningRatio": RATIO,
                        "memoryCriticalRatio": RATIO,
                        "replicaAckFailureRatio": RATIO,
                        "defaultFor": DURATION,
                    }
                ),
            }
        ),
        "grafanaDashboard": obj(
            {
                "enabled": BOOLEAN,
                "namespace": STRING,
                "label": {"type": "string", "minLength": 1},
                "labelValue": STRING,
                "labels": ANY_OBJECT,
                "annotations": ANY_OBJECT,
            }
        ),
        "tests": obj({"enabled": BOOLEAN, "image": ref("image")}),
    }
)
# Helm passes `global` to every chart; allow it.
VALUES["properties"]["global"] = {"type": "object"}

SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "kvq chart values",
    **VALUES,
    "$defs": DEFINITIONS,
}

if __name__ == "__main__":
    print(json.dumps(SCHEMA, indent=2))
