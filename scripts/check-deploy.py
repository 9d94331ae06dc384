#!/usr/bin/env python3
"""Assertions on Herald's deployment files, run by scripts/check-deploy.sh.

    check-deploy.py [EXPECTATIONS] [--core-out FILE] RENDERED.yaml...
    check-deploy.py --compose deploy/compose.yaml
    check-deploy.py --dockerfile deploy/Dockerfile
    check-deploy.py --values-schema helm/herald/values.schema.json

The first form reads Kubernetes objects (`helm template` or `kubectl
kustomize` output) and checks what a schema cannot: every container is
probed, bounded and unprivileged; images are pinned; the router
StatefulSet, its headless Service, its peers and the gateways' router list
agree with the replica count; PDBs cover both workloads; the gateways'
grace period covers their drain; optional objects are present exactly when
expected. --core-out writes the objects that kubernetes-validate has
schemas for (everything but monitoring.coreos.com). Exits 1 naming each
failure.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ALERTS = os.path.join(ROOT, "deploy", "prometheus", "herald-alerts.yml")
WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet", "Job", "Pod")
CRD_GROUP = "monitoring.coreos.com/"


class Failures:
    """Collects failures so one run reports all of them."""

    def __init__(self):
        self.items = []

    def check(self, condition, message):
        if not condition:
            self.items.append(message)
        return condition


def name_of(obj):
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"


def load_objects(paths):
    objects = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for doc in yaml.safe_load_all(f):
                if doc:
                    objects.append(doc)
    return objects


def pod_spec(obj):
    if obj["kind"] == "Pod":
        return obj.get("spec", {})
    return obj.get("spec", {}).get("template", {}).get("spec", {})


def pod_labels(obj):
    if obj["kind"] == "Pod":
        return obj.get("metadata", {}).get("labels", {}) or {}
    return obj.get("spec", {}).get("template", {}).get("metadata", {}).get("labels", {}) or {}


def is_test_hook(obj):
    annotations = obj.get("metadata", {}).get("annotations", {}) or {}
    return annotations.get("helm.sh/hook") == "test"


def component(obj):
    return pod_labels(obj).get("app.kubernetes.io/component")


def selects(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def env_of(container):
    return {e["name"]: e.get("value") for e in container.get("env", []) or [] if "name" in e}


def image_pinned(image):
    """A tag other than latest, or a digest."""
    if "@sha256:" in image:
        return True
    last = image.rsplit("/", 1)[-1]
    if ":" not in last:
        return False
    return last.rsplit(":", 1)[1] not in ("", "latest")


def check_containers(obj, f):
    spec = pod_spec(obj)
    pod_security = spec.get("securityContext", {}) or {}
    where = name_of(obj)
    f.check(spec.get("automountServiceAccountToken") is False, f"{where}: automountServiceAccountToken must be false")
    f.check(spec.get("enableServiceLinks") is False,
            f"{where}: enableServiceLinks must be false (service variables named HERALD_* would be read as configuration)")
    containers = (spec.get("initContainers") or []) + (spec.get("containers") or [])
    f.check(bool(containers), f"{where}: no containers")
    for c in containers:
        at = f"{where} container {c.get('name')}"
        security = c.get("securityContext", {}) or {}
        image = c.get("image", "")
        f.check(image_pinned(image), f"{at}: image {image!r} is not pinned to a tag or digest (or is :latest)")
        resources = c.get("resources", {}) or {}
        requests, limits = resources.get("requests") or {}, resources.get("limits") or {}
        f.check("cpu" in requests and "memory" in requests, f"{at}: resources.requests needs cpu and memory")
        f.check("memory" in limits, f"{at}: resources.limits needs memory")
        non_root = security.get("runAsNonRoot", pod_security.get("runAsNonRoot"))
        f.check(non_root is True, f"{at}: runAsNonRoot must be true")
        user = security.get("runAsUser", pod_security.get("runAsUser"))
        f.check(user != 0, f"{at}: runAsUser must not be 0")
        f.check(security.get("readOnlyRootFilesystem") is True, f"{at}: readOnlyRootFilesystem must be true")
        f.check(security.get("allowPrivilegeEscalation") is False, f"{at}: allowPrivilegeEscalation must be false")
        f.check(security.get("privileged") in (None, False), f"{at}: must not be privileged")
        drop = (security.get("capabilities") or {}).get("drop") or []
        f.check("ALL" in drop, f"{at}: capabilities.drop must include ALL")
        f.check(not (security.get("capabilities") or {}).get("add"), f"{at}: must add no capabilities")
        seccomp = (security.get("seccompProfile") or pod_security.get("seccompProfile") or {}).get("type")
        f.check(seccomp in ("RuntimeDefault", "Localhost"), f"{at}: seccompProfile must be RuntimeDefault")
        if not is_test_hook(obj) and obj["kind"] != "Job":
            f.check("livenessProbe" in c, f"{at}: no livenessProbe")
            f.check("readinessProbe" in c, f"{at}: no readinessProbe")
            for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                path = ((c.get(probe) or {}).get("httpGet") or {}).get("path")
                if probe in c and path is not None:
                    expected = "/readyz" if probe == "readinessProbe" else "/healthz"
                    f.check(path == expected, f"{at}: {probe} should GET {expected}, not {path}")
        if "herald" in image.rsplit("/", 1)[-1].split(":")[0].split("@")[0]:
            # Distroless: no shell, so nothing may exec a command in it.
            for hook in ("livenessProbe", "readinessProbe", "startupProbe"):
                f.check("exec" not in (c.get(hook) or {}), f"{at}: {hook} uses exec; the image has no shell")
            for phase in ("preStop", "postStart"):
                handler = (c.get("lifecycle") or {}).get(phase) or {}
                f.check("exec" not in handler, f"{at}: lifecycle.{phase} uses exec; the image has no shell")


def peers_hosts(value, f, where):
    """Parses HERALD_PEERS: returns [(id, host, port)]."""
    parsed = []
    for item in (value or "").split(","):
        match = re.fullmatch(r"(\d+)=([A-Za-z0-9.-]+):(\d+)", item.strip())
        if f.check(match is not None, f"{where}: HERALD_PEERS entry {item!r} is not ID=HOST:PORT"):
            parsed.append((int(match.group(1)), match.group(2), int(match.group(3))))
    return parsed


def check_services(objects, f):
    workloads = [o for o in objects if o["kind"] in WORKLOADS]
    for svc in (o for o in objects if o["kind"] == "Service"):
        selector = svc.get("spec", {}).get("selector") or {}
        matched = [w for w in workloads if selects(selector, pod_labels(w))]
        if not f.check(bool(matched), f"{name_of(svc)}: selects no pods"):
            continue
        for port in svc["spec"].get("ports", []):
            target = port.get("targetPort", port.get("port"))
            if isinstance(target, str):
                names = {p.get("name") for w in matched for c in pod_spec(w).get("containers", []) for p in c.get("ports", []) or []}
                f.check(target in names, f"{name_of(svc)}: targetPort {target!r} is no container port of the pods it selects")


def check_router_and_gateway(objects, args, f):
    sts = [o for o in objects if o["kind"] == "StatefulSet" and component(o) == "router"]
    deps = [o for o in objects if o["kind"] == "Deployment" and component(o) == "gateway"]
    services = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Service"}
    if not f.check(len(sts) == 1, f"expected one router StatefulSet, found {len(sts)}"):
        return
    if not f.check(len(deps) == 1, f"expected one gateway Deployment, found {len(deps)}"):
        return
    router, gateway = sts[0], deps[0]
    rname = router["metadata"]["name"]
    spec = router["spec"]
    replicas = spec.get("replicas", 1)
    f.check(replicas % 2 == 1, f"{name_of(router)}: {replicas} replicas; Raft voters must be odd")
    if args.routers is not None:
        f.check(replicas == args.routers, f"{name_of(router)}: {replicas} replicas, expected {args.routers}")
    f.check(spec.get("podManagementPolicy") == "Parallel",
            f"{name_of(router)}: podManagementPolicy must be Parallel (routers are ready only once a majority runs)")
    claims = spec.get("volumeClaimTemplates") or []
    f.check(bool(claims), f"{name_of(router)}: no volumeClaimTemplates (the Raft log must persist)")
    container = pod_spec(router)["containers"][0]
    mounts = {m["name"]: m["mountPath"] for m in container.get("volumeMounts", [])}
    renv = env_of(container)
    for claim in claims:
        f.check(claim["metadata"]["name"] in mounts, f"{name_of(router)}: claim {claim['metadata']['name']} is not mounted")
    f.check(mounts.get("data") == renv.get("HERALD_DATA"), f"{name_of(router)}: HERALD_DATA is not the data volume's mount path")
    headless = services.get(spec.get("serviceName"))
    if f.check(headless is not None, f"{name_of(router)}: serviceName {spec.get('serviceName')!r} is not a rendered Service"):
        hs = headless["spec"]
        f.check(hs.get("clusterIP") == "None", f"{name_of(headless)}: must be headless (clusterIP: None)")
        f.check(hs.get("publishNotReadyAddresses") is True,
                f"{name_of(headless)}: publishNotReadyAddresses must be true (peers meet before any is ready)")
        f.check(selects(hs.get("selector"), pod_labels(router)), f"{name_of(headless)}: does not select the routers")
    f.check(renv.get("HERALD_NODE_ID") == "ordinal", f"{name_of(router)}: HERALD_NODE_ID must be 'ordinal'")
    grpc_port = next((p["containerPort"] for p in container.get("ports", []) if p.get("name") == "grpc"), None)
    f.check(renv.get("HERALD_GRPC", "").endswith(f":{grpc_port}"), f"{name_of(router)}: HERALD_GRPC does not listen on the grpc port")
    peers = peers_hosts(renv.get("HERALD_PEERS"), f, name_of(router))
    f.check(len(peers) == replicas, f"{name_of(router)}: HERALD_PEERS lists {len(peers)} routers for {replicas} replicas")
    expected_hosts = []
    for ordinal in range(replicas):
        expected_hosts.append(f"{rname}-{ordinal}.{spec.get('serviceName')}")
    for index, (node, host, port) in enumerate(peers):
        f.check(node == index + 1, f"{name_of(router)}: HERALD_PEERS entry {index} has id {node}, expected {index + 1} (ordinal + 1)")
        if index < len(expected_hosts):
            f.check(host == expected_hosts[index] or host.startswith(expected_hosts[index] + "."),
                    f"{name_of(router)}: peer {node} is {host}, expected {expected_hosts[index]}[.NAMESPACE.svc...]")
        f.check(port == grpc_port, f"{name_of(router)}: peer {node} port {port} is not the grpc port {grpc_port}")

    gcontainer = pod_spec(gateway)["containers"][0]
    genv = env_of(gcontainer)
    urls = [u for u in (genv.get("HERALD_ROUTER") or "").split(",") if u]
    f.check([u for u in urls] == [f"http://{h}:{p}" for _, h, p in peers],
            f"{name_of(gateway)}: HERALD_ROUTER {urls} does not list exactly the routers of HERALD_PEERS")
    f.check(genv.get("HERALD_NODE_ID") == "hostname", f"{name_of(gateway)}: HERALD_NODE_ID must be 'hostname'")
    f.check(genv.get("HERALD_CLUSTER_ID") == renv.get("HERALD_CLUSTER_ID"),
            f"{name_of(gateway)}: cluster id {genv.get('HERALD_CLUSTER_ID')!r} differs from the routers' {renv.get('HERALD_CLUSTER_ID')!r}")
    f.check(re.fullmatch(r"[A-Za-z][A-Za-z0-9_.-]*", renv.get("HERALD_CLUSTER_ID") or "") is not None,
            f"{name_of(router)}: HERALD_CLUSTER_ID must start with a letter (read as TOML)")
    drain = int(genv.get("HERALD_DRAIN_TIMEOUT_SECS") or 5)
    sleep = ((gcontainer.get("lifecycle") or {}).get("preStop") or {}).get("sleep", {}).get("seconds", 0)
    grace = pod_spec(gateway).get("terminationGracePeriodSeconds", 30)
    f.check(grace >= drain + sleep + 5,
            f"{name_of(gateway)}: terminationGracePeriodSeconds {grace} < preStop sleep {sleep} + drain timeout {drain} + 5")
    for obj in (router, gateway):
        env = env_of(pod_spec(obj)["containers"][0])
        ops = env.get("HERALD_OPS", "")
        ports = {p.get("name"): p["containerPort"] for p in pod_spec(obj)["containers"][0].get("ports", [])}
        f.check(ops.endswith(f":{ports.get('ops')}"), f"{name_of(obj)}: HERALD_OPS {ops!r} is not the ops port")
        f.check(env.get("HERALD_CONFIG", "").startswith(tuple(mounts_of(obj).values()) or ("/nowhere",)),
                f"{name_of(obj)}: HERALD_CONFIG {env.get('HERALD_CONFIG')!r} is not on a mounted volume")

    # PDBs for both workloads.
    pdbs = [o for o in objects if o["kind"] == "PodDisruptionBudget"]
    for obj in (router, gateway):
        covering = [p for p in pdbs if selects(p["spec"].get("selector", {}).get("matchLabels"), pod_labels(obj))]
        f.check(len(covering) == 1, f"{name_of(obj)}: {len(covering)} PodDisruptionBudgets select it, expected 1")
        if obj is router and covering:
            f.check(covering[0]["spec"].get("maxUnavailable") == 1, f"{name_of(covering[0])}: routers need maxUnavailable: 1")

    # Autoscaling.
    hpas = [o for o in objects if o["kind"] == "HorizontalPodAutoscaler"]
    if args.hpa == "absent":
        f.check(not hpas, "HorizontalPodAutoscaler rendered but not expected")
        f.check("replicas" in gateway["spec"], f"{name_of(gateway)}: replicas missing without autoscaling")
    elif args.hpa == "present":
        if f.check(len(hpas) == 1, f"expected one HorizontalPodAutoscaler, found {len(hpas)}"):
            hpa = hpas[0]
            target = hpa["spec"]["scaleTargetRef"]
            f.check(target.get("kind") == "Deployment" and target.get("name") == gateway["metadata"]["name"],
                    f"{name_of(hpa)}: does not scale {name_of(gateway)}")
            f.check(hpa["spec"]["maxReplicas"] >= hpa["spec"].get("minReplicas", 1), f"{name_of(hpa)}: maxReplicas < minReplicas")
            f.check("replicas" not in gateway["spec"], f"{name_of(gateway)}: sets replicas while an HPA scales it")
            down = ((hpa["spec"].get("behavior") or {}).get("scaleDown") or {})
            f.check(down.get("stabilizationWindowSeconds", 0) >= 300,
                    f"{name_of(hpa)}: scaleDown.stabilizationWindowSeconds under 300 (each removed pod drains its clients)")
            pods_metrics = [m for m in hpa["spec"].get("metrics", []) if m.get("type") == "Pods"]
            if args.hpa_connections:
                if f.check(len(pods_metrics) == 1, f"{name_of(hpa)}: no Pods metric on connections"):
                    metric = pods_metrics[0]["pods"]
                    name = metric["metric"]["name"]
                    f.check(metric["target"].get("type") == "AverageValue" and str(metric["target"].get("averageValue")) == str(args.hpa_connections),
                            f"{name_of(hpa)}: connections target is {metric['target']}, expected AverageValue {args.hpa_connections}")
                    f.check(metric_exported(name), f"{name_of(hpa)}: metric {name!r} is not one Herald exports")

    # TLS.
    tls_env = {k: v for k, v in genv.items() if k.startswith("HERALD_TLS_")}
    gports = {p.get("name"): p["containerPort"] for p in gcontainer.get("ports", [])}
    if args.tls == "present":
        f.check("mqtts" in gports, f"{name_of(gateway)}: no mqtts port with TLS on")
        f.check(tls_env.get("HERALD_TLS_MQTT", "").endswith(f":{gports.get('mqtts')}"), f"{name_of(gateway)}: HERALD_TLS_MQTT is not the mqtts port")
        gmounts = mounts_of(gateway)
        for key in ("HERALD_TLS_CERT_FILE", "HERALD_TLS_KEY_FILE"):
            path = tls_env.get(key, "")
            f.check(any(path.startswith(m + "/") for m in gmounts.values()), f"{name_of(gateway)}: {key} {path!r} is on no mounted volume")
        device_services = [s for s in objects if s["kind"] == "Service" and any(p.get("targetPort") == "mqtts" for p in s["spec"].get("ports", []))]
        f.check(bool(device_services), "no Service exposes the mqtts port")
    elif args.tls == "absent":
        f.check(not tls_env, f"{name_of(gateway)}: HERALD_TLS_* set with TLS off: {sorted(tls_env)}")

    # NetworkPolicy: gRPC to routers only from gateways and routers.
    policies = [o for o in objects if o["kind"] == "NetworkPolicy"]
    if args.network_policy == "absent":
        f.check(not policies, "NetworkPolicy rendered but not expected")
    elif args.network_policy == "present":
        router_policies = [p for p in policies if selects(p["spec"]["podSelector"].get("matchLabels"), pod_labels(router))]
        if f.check(len(router_policies) == 1, f"expected one NetworkPolicy selecting the routers, found {len(router_policies)}"):
            for rule in router_policies[0]["spec"].get("ingress", []):
                ports = {p.get("port") for p in rule.get("ports", [])}
                if "grpc" in ports:
                    sources = rule.get("from") or []
                    f.check(bool(sources), f"{name_of(router_policies[0])}: gRPC open to anyone")
                    for source in sources:
                        labels = (source.get("podSelector") or {}).get("matchLabels") or {}
                        f.check(selects(labels, pod_labels(router)) or selects(labels, pod_labels(gateway)),
                                f"{name_of(router_policies[0])}: gRPC allowed from {source}, not only gateways and routers")
        f.check(any(selects(p["spec"]["podSelector"].get("matchLabels"), pod_labels(gateway)) for p in policies),
                "no NetworkPolicy selects the gateways")


def mounts_of(obj):
    return {m["name"]: m["mountPath"] for m in pod_spec(obj)["containers"][0].get("volumeMounts", [])}


def metric_exported(name):
    """Whether Herald's sources name the metric (so the HPA can find it)."""
    needle = f'"{name}'
    for base in ("src", "gateway/src", "router/src"):
        for directory, _, files in os.walk(os.path.join(ROOT, base)):
            for file in files:
                if file.endswith(".rs"):
                    with open(os.path.join(directory, file), encoding="utf-8") as f:
                        if needle in f.read():
                            return True
    return False


def check_monitoring(objects, args, f):
    monitors = [o for o in objects if o["kind"] == "ServiceMonitor"]
    rules = [o for o in objects if o["kind"] == "PrometheusRule"]
    for kind, found, expected in (("ServiceMonitor", monitors, args.service_monitor), ("PrometheusRule", rules, args.prometheus_rule)):
        if expected == "present":
            f.check(len(found) == 1, f"expected one {kind}, found {len(found)}")
        elif expected == "absent":
            f.check(not found, f"{kind} rendered but not expected")
    for monitor in monitors:
        f.check(monitor["apiVersion"] == "monitoring.coreos.com/v1", f"{name_of(monitor)}: apiVersion must be monitoring.coreos.com/v1")
        selector = monitor["spec"].get("selector", {}).get("matchLabels") or {}
        selected = [s for s in objects if s["kind"] == "Service" and selects(selector, s["metadata"].get("labels") or {})]
        components = {(s["metadata"].get("labels") or {}).get("app.kubernetes.io/component") for s in selected}
        f.check(components == {"router", "gateway"}, f"{name_of(monitor)}: selects services of {sorted(filter(None, components))}, expected router and gateway")
        for s in selected:
            f.check(s["spec"].get("publishNotReadyAddresses") is True,
                    f"{name_of(monitor)}: scrapes {name_of(s)}, which hides pods that are not ready")
            names = {p.get("name") for p in s["spec"].get("ports", [])}
            for endpoint in monitor["spec"].get("endpoints", []):
                f.check(endpoint.get("port") in names, f"{name_of(monitor)}: port {endpoint.get('port')!r} is not a port of {name_of(s)}")
    for rule in rules:
        f.check(rule["apiVersion"] == "monitoring.coreos.com/v1", f"{name_of(rule)}: apiVersion must be monitoring.coreos.com/v1")
        with open(ALERTS, encoding="utf-8") as source:
            expected = yaml.safe_load(source)["groups"]
        f.check(rule["spec"].get("groups") == expected, f"{name_of(rule)}: rules differ from deploy/prometheus/herald-alerts.yml")
        promtool = shutil.which("promtool")
        if promtool:
            with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as out:
                yaml.safe_dump({"groups": rule["spec"]["groups"]}, out)
            result = subprocess.run([promtool, "check", "rules", out.name], capture_output=True, text=True)
            os.unlink(out.name)
            f.check(result.returncode == 0, f"{name_of(rule)}: promtool check rules failed: {result.stdout}{result.stderr}")


def check_manifests(args):
    f = Failures()
    objects = load_objects(args.files)
    f.check(bool(objects), "no objects rendered")
    for obj in objects:
        labels = obj.get("metadata", {}).get("labels") or {}
        f.check(labels.get("app.kubernetes.io/name") == "herald", f"{name_of(obj)}: label app.kubernetes.io/name=herald missing")
        f.check(obj["kind"] != "Secret", f"{name_of(obj)}: the chart must not ship secrets; reference existing ones")
        if obj["kind"] in WORKLOADS:
            check_containers(obj, f)
    check_services(objects, f)
    check_router_and_gateway(objects, args, f)
    check_monitoring(objects, args, f)
    if args.core_out:
        with open(args.core_out, "w", encoding="utf-8") as out:
            yaml.safe_dump_all([o for o in objects if not o.get("apiVersion", "").startswith(CRD_GROUP)], out, sort_keys=False)
    kinds = {}
    for obj in objects:
        kinds[obj["kind"]] = kinds.get(obj["kind"], 0) + 1
    summary = f"{len(objects)} objects (" + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())) + ")"
    rules = [o for o in objects if o["kind"] == "PrometheusRule"]
    if rules:
        count = sum(len(g.get("rules", [])) for r in rules for g in r["spec"].get("groups", []))
        summary += f"; {count} alert rules" + (", promtool ok" if shutil.which("promtool") else "")
    return f, summary


def check_compose(path):
    f = Failures()
    with open(path, encoding="utf-8") as source:
        compose = yaml.safe_load(source)
    base = os.path.dirname(os.path.abspath(path))
    services = compose.get("services", {})
    routers = {n: s for n, s in services.items() if s.get("command") == ["router"]}
    gateways = {n: s for n, s in services.items() if s.get("command") == ["gateway"]}
    f.check(len(routers) == 3, f"{path}: {len(routers)} routers, expected 3")
    f.check(len(gateways) == 2, f"{path}: {len(gateways)} gateways, expected 2")
    for name, service in services.items():
        image = service.get("image", "")
        f.check(image_pinned(image), f"{path}: service {name}: image {image!r} not pinned to a version")
        for volume in service.get("volumes", []) or []:
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                f.check(os.path.exists(os.path.join(base, source)), f"{path}: service {name}: {source} does not exist")
    for name, service in {**routers, **gateways}.items():
        f.check(service.get("read_only") is True, f"{path}: {name}: read_only must be true")
        f.check("ALL" in (service.get("cap_drop") or []), f"{name}: cap_drop must include ALL")
    peers = {s["environment"].get("HERALD_PEERS") for s in routers.values()}
    if f.check(len(peers) == 1, f"{path}: routers disagree on HERALD_PEERS: {peers}"):
        listed = dict(item.split("=", 1) for item in peers.pop().split(","))
        ids = {str(s["environment"].get("HERALD_NODE_ID")): n for n, s in routers.items()}
        f.check(set(listed) == set(ids), f"{path}: HERALD_PEERS ids {sorted(listed)} are not the routers' ids {sorted(ids)}")
        for node, address in listed.items():
            host, port = address.rsplit(":", 1)
            f.check(ids.get(node) == host, f"{path}: peer {node} is {host}, but router {ids.get(node)} has that id")
            router = routers.get(host)
            if router:
                f.check(router["environment"].get("HERALD_GRPC", "").endswith(":" + port), f"{path}: {host} does not listen on {port}")
                data = router["environment"].get("HERALD_DATA")
                f.check(any(v.split(":")[1] == data for v in router.get("volumes", [])), f"{path}: {host}: no volume at HERALD_DATA")
        for name, gateway in gateways.items():
            env = gateway["environment"]
            urls = env.get("HERALD_ROUTER", "").split(",")
            f.check(urls == [f"http://{a}" for a in listed.values()], f"{path}: {name}: HERALD_ROUTER does not list every router")
            drain = int(env.get("HERALD_DRAIN_TIMEOUT_SECS", 5))
            grace = int(str(gateway.get("stop_grace_period", "10s")).rstrip("s"))
            f.check(grace > drain, f"{path}: {name}: stop_grace_period {grace}s does not cover the drain timeout {drain}s")
            f.check(env.get("HERALD_CLUSTER_ID") == routers[next(iter(routers))]["environment"].get("HERALD_CLUSTER_ID"),
                    f"{path}: {name}: cluster id differs from the routers'")
    for optional in ("redis", "otel-collector", "prometheus"):
        f.check(optional in services and services[optional].get("profiles"), f"{path}: {optional} should exist behind a profile")
    return f, f"{len(routers)} routers, {len(gateways)} gateways, {len(services) - len(routers) - len(gateways)} optional services"


def check_dockerfile(path):
    f = Failures()
    with open(path, encoding="utf-8") as source:
        text = source.read()
    lines = [l.strip() for l in text.splitlines() if l.strip() and not l.strip().startswith("#")]
    froms = [l.split()[1] for l in lines if l.upper().startswith("FROM ")]
    f.check(len(froms) >= 2, f"{path}: expected a multi-stage build")
    for image in froms:
        f.check(image_pinned(image), f"{path}: FROM {image} is not pinned to a version")
    with open(os.path.join(ROOT, "rust-toolchain.toml"), encoding="utf-8") as source:
        channel = re.search(r'channel\s*=\s*"([^"]+)"', source.read()).group(1)
    f.check(froms and froms[0].startswith(f"rust:{channel}-"), f"{path}: builder {froms[0] if froms else None} is not rust:{channel} (rust-toolchain.toml)")
    build = " ".join(l for l in lines if "cargo build" in l)
    for flag in ("--release", "--locked", "-p herald"):
        f.check(flag in build, f"{path}: cargo build lacks {flag}")
    final = text[text.rfind("\nFROM "):]
    f.check(re.search(r"^USER 65532", final, re.M) is not None, f"{path}: the final stage must run as USER 65532")
    f.check('ENTRYPOINT ["/herald"]' in final, f"{path}: ENTRYPOINT must be [\"/herald\"]")
    f.check(froms and "nonroot" in froms[-1], f"{path}: the final image should be a nonroot distroless image")
    exposed = set(" ".join(l[7:] for l in lines if l.upper().startswith("EXPOSE ")).split())
    for port in ("1883", "8083", "8080", "7400", "9464"):
        f.check(port in exposed, f"{path}: EXPOSE lacks {port}")
    cmd = re.search(r"^CMD (.*)$", final, re.M)
    f.check(cmd is not None and "0.0.0.0" in cmd.group(1), f"{path}: CMD should bind 0.0.0.0")
    ignore = path + ".dockerignore"
    if f.check(os.path.exists(ignore), f"{ignore}: missing"):
        with open(ignore, encoding="utf-8") as source:
            entries = {l.strip() for l in source if l.strip() and not l.startswith("#")}
        for entry in (".git", "target"):
            f.check(entry in entries, f"{ignore}: does not exclude {entry}")
    return f, f"{len(froms)} stages, builder {froms[0] if froms else '?'}"


def check_values_schema(path):
    import jsonschema

    f = Failures()
    with open(path, encoding="utf-8") as source:
        schema = json.load(source)
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.exceptions.SchemaError as error:
        f.check(False, f"{path}: not a valid JSON schema: {error.message}")
    values_path = os.path.join(os.path.dirname(path), "values.yaml")
    with open(values_path, encoding="utf-8") as source:
        values = yaml.safe_load(source)
    validator = jsonschema.validators.validator_for(schema)(schema)
    for error in validator.iter_errors(values):
        f.check(False, f"{values_path}: {'.'.join(map(str, error.path))}: {error.message}")
    f.check(schema.get("additionalProperties") is False, f"{path}: top level must set additionalProperties: false")
    replicas = schema["properties"]["router"]["properties"]["replicas"]
    f.check(all(n % 2 == 1 for n in replicas.get("enum", [2])), f"{path}: router.replicas must allow odd counts only")
    return f, "valid draft-07 schema; values.yaml conforms"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    presence = ("present", "absent", "any")
    parser.add_argument("--routers", type=int, help="expected router replicas")
    parser.add_argument("--hpa", choices=presence, default="any")
    parser.add_argument("--hpa-connections", type=int, help="expected connections-per-pod target")
    parser.add_argument("--service-monitor", choices=presence, default="any")
    parser.add_argument("--prometheus-rule", choices=presence, default="any")
    parser.add_argument("--monitoring", choices=presence, help="sets both --service-monitor and --prometheus-rule")
    parser.add_argument("--tls", choices=presence, default="any")
    parser.add_argument("--network-policy", choices=presence, default="any")
    parser.add_argument("--core-out", help="write the objects other than monitoring.coreos.com ones here")
    parser.add_argument("--compose", help="check a compose file instead")
    parser.add_argument("--dockerfile", help="check a Dockerfile instead")
    parser.add_argument("--values-schema", help="check a chart's values.schema.json instead")
    parser.add_argument("files", nargs="*")
    args = parser.parse_args()
    if args.monitoring:
        args.service_monitor = args.prometheus_rule = args.monitoring
    if args.compose:
        failures, summary = check_compose(args.compose)
    elif args.dockerfile:
        failures, summary = check_dockerfile(args.dockerfile)
    elif args.values_schema:
        failures, summary = check_values_schema(args.values_schema)
    else:
        if not args.files:
            parser.error("give rendered YAML files")
        failures, summary = check_manifests(args)
    if failures.items:
        for item in failures.items:
            print(f"  {item}", file=sys.stderr)
        print(f"{len(failures.items)} problem(s)", file=sys.stderr)
        sys.exit(1)
    print(summary)


if __name__ == "__main__":
    main()
