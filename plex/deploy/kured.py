"""kured for the kube nodes: the plex's `reboot_windows` as one kured DaemonSet manifest. Pure.

MicroOS kube nodes do not reboot by themselves: transactional-update writes kured's sentinel
(`REBOOT_METHOD=kured`, see plex.bake.windows) and kured, running on every kube node, drains
and reboots one node at a time inside its window. kured has ONE window (start, end, days, time
zone) for the whole cluster: plex.model.reboot computes it from the plex's windows.

The manifest ships like any bootstrap manifest (plex.plexfile.bootstrap): into RKE2's auto-deploy
directory on the servers at create. Flags and their parsing rules are pinned in
deploy/kured/kured-flags.txt with their upstream source.
"""

from __future__ import annotations

import json

from plex.model.plex import Plex
from plex.model.reboot import KuredWindow, kured_enabled, kured_window
from plex.plexfile.bootstrap import Manifest, load_manifests

MANIFEST_NAME = "plex-kured.yaml"
SENTINEL_MOUNT = "/sentinel"


def args(window: KuredWindow) -> list[str]:
    return [
        "/usr/bin/kured",
        f"--reboot-sentinel={SENTINEL_MOUNT}/reboot-required",
        f"--reboot-days={','.join(window.days)}",
        f"--start-time={window.start}",
        f"--end-time={window.end}",
        f"--time-zone={window.time_zone}",
        "--period=1h",
        "--concurrency=1",
    ]


def manifest(plex: Plex) -> str:
    """The kured ServiceAccount, RBAC and DaemonSet, as one multi-document YAML file.

    Written as JSON documents (valid YAML) so no YAML emitter quirk can change a value."""
    window = kured_window(plex.reboot_windows, plex.kured.time_zone)
    labels = {"app.kubernetes.io/name": "kured", "app.kubernetes.io/managed-by": "plex"}
    meta = {"name": "kured", "namespace": "kube-system", "labels": labels}
    docs: list[dict[str, object]] = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "kured", "labels": labels},
            "rules": [
                {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "patch"]},
                {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "delete", "get"]},
                {"apiGroups": ["apps"], "resources": ["daemonsets"], "verbs": ["get"]},
                {"apiGroups": [""], "resources": ["pods/eviction"], "verbs": ["create"]},
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "kured", "labels": labels},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "kured",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "kured", "namespace": "kube-system"}],
        },
        # The lock lives in an annotation of kured's own DaemonSet.
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": meta,
            "rules": [
                {
                    "apiGroups": ["apps"],
                    "resources": ["daemonsets"],
                    "resourceNames": ["kured"],
                    "verbs": ["update", "patch"],
                }
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": meta,
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "kured"},
            "subjects": [{"kind": "ServiceAccount", "name": "kured", "namespace": "kube-system"}],
        },
        {
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "metadata": meta,
            "spec": {
                "selector": {"matchLabels": {"name": "kured"}},
                "updateStrategy": {"type": "RollingUpdate"},
                "template": {
                    "metadata": {"labels": {"name": "kured", **labels}},
                    "spec": {
                        "serviceAccountName": "kured",
                        "tolerations": [
                            {
                                "key": "node-role.kubernetes.io/control-plane",
                                "effect": "NoSchedule",
                            },
                            {"key": "node-role.kubernetes.io/etcd", "effect": "NoExecute"},
                        ],
                        "hostPID": True,
                        "restartPolicy": "Always",
                        "volumes": [
                            {
                                "name": "sentinel",
                                "hostPath": {"path": "/var/run", "type": "Directory"},
                            }
                        ],
                        "containers": [
                            {
                                "name": "kured",
                                "image": plex.kured.image,
                                "imagePullPolicy": "IfNotPresent",
                                "securityContext": {
                                    "privileged": True,
                                    "readOnlyRootFilesystem": True,
                                },
                                "env": [
                                    {
                                        "name": "KURED_NODE_ID",
                                        "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}},
                                    }
                                ],
                                "volumeMounts": [
                                    {
                                        "mountPath": SENTINEL_MOUNT,
                                        "name": "sentinel",
                                        "readOnly": True,
                                    }
                                ],
                                "command": args(window),
                            }
                        ],
                    },
                },
            },
        },
    ]
    head = (
        f"# Written by plex for plex {plex.name}: kured reboots kube nodes one at a time, "
        f"{','.join(window.days)} {window.start}-{window.end} {window.time_zone}.\n"
    )
    return head + "".join(f"---\n{json.dumps(d, indent=2)}\n" for d in docs)


def server_manifests(plex: Plex) -> list[Manifest]:
    """What goes into every server's auto-deploy directory: the user's bootstrap manifests and,
    when kured is on, plex's kured manifest."""
    extra = [Manifest(MANIFEST_NAME, manifest(plex).encode())] if kured_enabled(plex) else []
    return load_manifests(plex, extra)
