#!/usr/bin/env python3
"""Checks Kubernetes manifests against the restricted Pod Security Standard
(https://kubernetes.io/docs/concepts/security/pod-security-standards/,
"Restricted", as of v1.31) and Citadel's own rules for its workloads.

Usage: check_k8s_restricted.py FILE.yaml...
Prints one line per violation and exits 1 if there is any; on success
prints a JSON object {"workloads": N, "args": {container: [args...]}} so a
caller can check the flags against the binary.

Restricted profile, for every pod template (containers, init and ephemeral):
  - baseline: no hostNetwork / hostPID / hostIPC; no hostPort; no privileged
    container; no Windows hostProcess; SELinux type among the container_*
    types and no user or role; procMount Default; only the safe sysctls;
    AppArmor RuntimeDefault or Localhost (field or annotation)
  - volumes only of the allowed types (no hostPath, ...)
  - runAsNonRoot true (pod or each container) and false nowhere; no runAsUser 0
  - allowPrivilegeEscalation false in each container
  - capabilities drop ALL; add nothing but NET_BIND_SERVICE
  - seccompProfile RuntimeDefault or Localhost (pod or each container), Unconfined nowhere
Citadel's rules on top:
  - readOnlyRootFilesystem true; automountServiceAccountToken false
  - readiness and liveness probes; CPU and memory limits
  - the namespace enforces the restricted profile; a default-deny
    NetworkPolicy (ingress and egress) exists
"""

import json
import sys

import yaml

ALLOWED_VOLUMES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
    "persistentVolumeClaim", "projected", "secret",
}
SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
}
SELINUX_TYPES = {None, "", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "Pod", "CronJob"}


def pod_spec(doc):
    kind = doc.get("kind")
    spec = doc.get("spec") or {}
    if kind == "Pod":
        return spec
    if kind == "CronJob":
        return ((spec.get("jobTemplate") or {}).get("spec") or {}).get("template", {}).get("spec") or {}
    return (spec.get("template") or {}).get("spec") or {}


def check_context(where, sc, problems):
    """Baseline rules that apply to a pod's and a container's securityContext alike."""
    se = sc.get("seLinuxOptions") or {}
    if se.get("type") not in SELINUX_TYPES:
        problems.append(f"{where}: seLinuxOptions.type {se.get('type')} is not a container type")
    for k in ("user", "role"):
        if se.get(k):
            problems.append(f"{where}: seLinuxOptions.{k} may not be set")
    if (sc.get("windowsOptions") or {}).get("hostProcess"):
        problems.append(f"{where}: windowsOptions.hostProcess")
    if sc.get("runAsNonRoot") is False:
        problems.append(f"{where}: runAsNonRoot is false")
    if (sc.get("seccompProfile") or {}).get("type") == "Unconfined":
        problems.append(f"{where}: seccompProfile is Unconfined")
    apparmor = (sc.get("appArmorProfile") or {}).get("type")
    if apparmor not in (None, "RuntimeDefault", "Localhost"):
        problems.append(f"{where}: appArmorProfile {apparmor}")


def check_pod(name, pod, problems, annotations=None):
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(key):
            problems.append(f"{name}: {key} is set")
    psc = pod.get("securityContext") or {}
    check_context(name, psc, problems)
    for sysctl in psc.get("sysctls") or []:
        if sysctl.get("name") not in SAFE_SYSCTLS:
            problems.append(f"{name}: sysctl {sysctl.get('name')} is not in the safe set")
    for key, value in (annotations or {}).items():
        if key.startswith("container.apparmor.security.beta.kubernetes.io/") and value not in ("runtime/default",) and not value.startswith("localhost/"):
            problems.append(f"{name}: AppArmor annotation {key}={value}")
    if pod.get("automountServiceAccountToken") is not False:
        problems.append(f"{name}: automountServiceAccountToken must be false")
    for v in pod.get("volumes") or []:
        kinds = set(v) - {"name"}
        if not kinds <= ALLOWED_VOLUMES:
            problems.append(f"{name}: volume {v.get('name')} is of a type the restricted profile forbids: {sorted(kinds - ALLOWED_VOLUMES)}")
    if psc.get("runAsUser") == 0:
        problems.append(f"{name}: pod runAsUser is 0")
    containers = (pod.get("containers") or []) + (pod.get("initContainers") or []) + (pod.get("ephemeralContainers") or [])
    if not containers:
        problems.append(f"{name}: no containers")
    for c in containers:
        cname = f"{name}/{c.get('name')}"
        sc = c.get("securityContext") or {}
        check_context(cname, sc, problems)
        if sc.get("procMount") not in (None, "Default"):
            problems.append(f"{cname}: procMount {sc.get('procMount')}")
        if sc.get("privileged"):
            problems.append(f"{cname}: privileged")
        if not (sc.get("runAsNonRoot") is True or (psc.get("runAsNonRoot") is True and sc.get("runAsNonRoot") is not False)):
            problems.append(f"{cname}: runAsNonRoot must be true")
        if sc.get("runAsUser") == 0:
            problems.append(f"{cname}: runAsUser is 0")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{cname}: allowPrivilegeEscalation must be false")
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            problems.append(f"{cname}: capabilities must drop ALL")
        extra = set(caps.get("add") or []) - {"NET_BIND_SERVICE"}
        if extra:
            problems.append(f"{cname}: adds capabilities {sorted(extra)}")
        seccomp = (sc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{cname}: seccompProfile must be RuntimeDefault or Localhost, not {seccomp}")
        if sc.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{cname}: readOnlyRootFilesystem must be true")
        for p in c.get("ports") or []:
            if p.get("hostPort"):
                problems.append(f"{cname}: hostPort {p['hostPort']}")
        if c in (pod.get("containers") or []):
            for probe in ("readinessProbe", "livenessProbe"):
                if not c.get(probe):
                    problems.append(f"{cname}: no {probe}")
            limits = (c.get("resources") or {}).get("limits") or {}
            for r in ("cpu", "memory"):
                if r not in limits:
                    problems.append(f"{cname}: no {r} limit")


def main(paths):
    problems, workloads, args = [], 0, {}
    namespaces, default_deny = {}, set()
    docs = []
    for path in paths:
        with open(path) as f:
            docs += [d for d in yaml.safe_load_all(f) if d]
    for doc in docs:
        kind, meta = doc.get("kind"), doc.get("metadata") or {}
        name = f"{kind}/{meta.get('name')}"
        if kind == "Namespace":
            namespaces[meta.get("name")] = meta.get("labels") or {}
        if kind == "NetworkPolicy":
            spec = doc.get("spec") or {}
            if spec.get("podSelector") == {} and set(spec.get("policyTypes") or []) == {"Ingress", "Egress"} \
                    and not spec.get("ingress") and not spec.get("egress"):
                default_deny.add(meta.get("namespace"))
        if kind in WORKLOADS:
            workloads += 1
            pod = pod_spec(doc)
            template = (doc.get("spec") or {}).get("template") or {}
            annotations = (template.get("metadata") or {}).get("annotations") if kind != "Pod" else meta.get("annotations")
            check_pod(name, pod, problems, annotations)
            for c in pod.get("containers") or []:
                args[c.get("name")] = c.get("args") or []
    for doc in docs:
        ns = (doc.get("metadata") or {}).get("namespace")
        if doc.get("kind") in WORKLOADS:
            labels = namespaces.get(ns)
            if labels is None:
                problems.append(f"{doc['kind']}/{doc['metadata'].get('name')}: namespace {ns} is not defined here")
            elif labels.get("pod-security.kubernetes.io/enforce") != "restricted":
                problems.append(f"namespace {ns} does not enforce the restricted Pod Security Standard")
            if ns not in default_deny:
                problems.append(f"namespace {ns} has no default-deny NetworkPolicy (ingress and egress)")
    if workloads == 0:
        problems.append("no workload found")
    for p in sorted(set(problems)):
        print(p)
    if problems:
        return 1
    print(json.dumps({"workloads": workloads, "args": args}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
