"""Render every kustomization, validate every object against its schema (strict), check the serving policies."""

from __future__ import annotations

import json
import re

import jsonschema
import kubernetes_validate
import pytest
from k8s_helpers import (
    EXTRAS,
    K8S,
    KUBERNETES_VERSIONS,
    OVERLAYS,
    ROOT,
    flag,
    one,
    quantity_bytes,
    render,
    server_container,
    strictify,
)
from stylize.contract import descriptors
from stylize_k8s import generate

pytestmark = pytest.mark.k8s

ALL = OVERLAYS + EXTRAS
CRDS = {("monitoring.coreos.com/v1", "ServiceMonitor"): K8S / "schemas" / "servicemonitor-monitoring-v1.json"}


def _pod_templates(objects):
    for o in objects:
        if o["kind"] in ("Deployment", "Job"):
            yield o, o["spec"]["template"]


# ---- schemas -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kustomization", ALL)
def test_renders(kustomization):
    assert render(kustomization), f"{kustomization} rendered nothing"


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("kustomization", ALL)
def test_objects_validate_strictly(kustomization, version):
    for obj in render(kustomization):
        if (obj["apiVersion"], obj["kind"]) in CRDS:
            continue
        # raises ValidationError (unknown field, wrong type, ...) or SchemaNotFoundError (unknown kind/apiVersion)
        kubernetes_validate.validate(obj, version, strict=True)


def test_servicemonitor_validates_against_its_crd_schema():
    schema = strictify(json.loads(CRDS[("monitoring.coreos.com/v1", "ServiceMonitor")].read_text()))
    jsonschema.Draft202012Validator.check_schema(schema)
    for kustomization in OVERLAYS:
        sm = one(render(kustomization), "ServiceMonitor")
        jsonschema.Draft202012Validator(schema).validate(sm)


def test_servicemonitor_schema_rejects_what_the_crd_rejects():
    """The transcribed schema is not vacuous: unknown fields, bad durations and missing selectors fail."""
    validator = jsonschema.Draft202012Validator(
        strictify(json.loads(CRDS[("monitoring.coreos.com/v1", "ServiceMonitor")].read_text()))
    )
    good = one(render("overlays/cpu"), "ServiceMonitor")
    assert validator.is_valid(good)
    typo = json.loads(json.dumps(good))
    typo["spec"]["endpoints"][0]["intervall"] = "15s"
    bad_duration = json.loads(json.dumps(good))
    bad_duration["spec"]["endpoints"][0]["interval"] = "15 seconds"
    no_selector = json.loads(json.dumps(good))
    del no_selector["spec"]["selector"]
    for bad in (typo, bad_duration, no_selector):
        assert not validator.is_valid(bad)


# ---- wiring between objects ------------------------------------------------------------------------------------


def _matches(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items()) and bool(selector)


@pytest.mark.parametrize("kustomization", OVERLAYS)
def test_selectors_and_ports_connect(kustomization):
    objs = render(kustomization)
    dep = one(objs, "Deployment", "triton")
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    container = server_container(dep)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 8000, "grpc": 8001, "metrics": 8002}
    args = container["args"]
    assert flag(args, "http-port") == ["8000"] and flag(args, "grpc-port") == ["8001"]
    assert flag(args, "metrics-port") == ["8002"]

    assert _matches(dep["spec"]["selector"], pod_labels)
    services = [o for o in objs if o["kind"] == "Service"]
    for svc in services:
        assert all(pod_labels.get(k) == v for k, v in svc["spec"]["selector"].items())
        for p in svc["spec"]["ports"]:
            assert p["targetPort"] in ports, f"{svc['metadata']['name']}: unknown target port {p['targetPort']}"
    headless = one(objs, "Service", "triton-headless")
    assert headless["spec"]["clusterIP"] == "None" and not headless["spec"].get("publishNotReadyAddresses")

    # exactly one Service is scraped (the headless one would scrape every pod twice), on its metrics port
    sm = one(objs, "ServiceMonitor")
    scraped = [s for s in services if _matches(sm["spec"]["selector"], s["metadata"].get("labels", {}))]
    assert [s["metadata"]["name"] for s in scraped] == ["triton"]
    assert {e["port"] for e in sm["spec"]["endpoints"]} <= {p["name"] for p in scraped[0]["spec"]["ports"]}
    assert all(e.get("path", "/metrics") == "/metrics" for e in sm["spec"]["endpoints"])

    pdb = one(objs, "PodDisruptionBudget")
    assert _matches(pdb["spec"]["selector"], pod_labels)
    assert pdb["spec"]["maxUnavailable"] == 1
    for tsc in dep["spec"]["template"]["spec"]["topologySpreadConstraints"]:
        assert _matches(tsc["labelSelector"], pod_labels)
    assert {t["topologyKey"] for t in dep["spec"]["template"]["spec"]["topologySpreadConstraints"]} == {
        "topology.kubernetes.io/zone",
        "kubernetes.io/hostname",
    }

    hpa = one(objs, "HorizontalPodAutoscaler")
    ref = hpa["spec"]["scaleTargetRef"]
    assert (ref["kind"], ref["name"], ref["apiVersion"]) == ("Deployment", "triton", "apps/v1")
    assert "replicas" not in dep["spec"], "the HPA owns the replica count"
    sa = one(objs, "ServiceAccount", dep["spec"]["template"]["spec"]["serviceAccountName"])
    assert sa["automountServiceAccountToken"] is False


def _hard_spread_capacity(nodes: dict[str, int], max_skew: int = 1) -> int:
    """Pods the scheduler places one after another under a DoNotSchedule hostname spread: each goes to a node with
    room where count + 1 - min(counts over every domain) <= maxSkew; every selectable node is a domain, with room or
    not (pod topology spread: the global minimum counts all eligible domains)."""
    counts = dict.fromkeys(nodes, 0)
    placed = 0
    while True:
        low = min(counts.values())
        fits = [n for n in nodes if counts[n] < nodes[n] and counts[n] + 1 - low <= max_skew]
        if not fits:
            return placed
        counts[min(fits, key=counts.get)] += 1
        placed += 1


@pytest.mark.parametrize("kustomization", OVERLAYS)
def test_topology_spread_never_leaves_pods_pending(kustomization):
    """A hard (DoNotSchedule) hostname spread lets a node too small for the pod cap every other node at one pod:
    three nodes with room for 4 pods each and one with room for none place 3 pods, not 12. The spread is a
    preference (ScheduleAnyway) on every overlay; the scheduler still scores spread placements first."""
    assert _hard_spread_capacity({"big-a": 4, "big-b": 4, "big-c": 4, "small": 0}) == 3
    assert _hard_spread_capacity({"big-a": 4, "big-b": 4, "big-c": 4}) == 12
    spec = one(render(kustomization), "Deployment", "triton")["spec"]["template"]["spec"]
    for tsc in spec["topologySpreadConstraints"]:
        assert tsc["whenUnsatisfiable"] == "ScheduleAnyway", tsc["topologyKey"]


@pytest.mark.parametrize("kustomization", OVERLAYS)
def test_network_policy(kustomization):
    objs = render(kustomization)
    dep = one(objs, "Deployment", "triton")
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    np_ = one(objs, "NetworkPolicy", "triton")
    assert _matches(np_["spec"]["podSelector"], pod_labels)
    assert set(np_["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    named = {p["name"] for p in server_container(dep)["ports"]}
    by_port: dict[str, list] = {}
    for rule in np_["spec"]["ingress"]:
        for p in rule["ports"]:
            assert p["port"] in named
            by_port.setdefault(p["port"], []).extend(rule["from"])
    # inference ports admit the load-test Job's pods; the metrics port admits only the monitoring namespace
    job_labels = one(render("loadtest"), "Job")["spec"]["template"]["metadata"]["labels"]
    for port in ("http", "grpc"):
        assert any(
            "podSelector" in f and "namespaceSelector" not in f and _matches(f["podSelector"], job_labels)
            for f in by_port[port]
        )
    assert by_port["metrics"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
    egress_ports = {(p["port"], p["protocol"]) for r in np_["spec"]["egress"] for p in r["ports"]}
    assert egress_ports == {(53, "UDP"), (53, "TCP")}  # the base policy: DNS only, in every overlay
    others = [o for o in objs if o["kind"] == "NetworkPolicy" and o["metadata"]["name"] != "triton"]
    if kustomization == "overlays/cpu-objectstore":
        # the init container reaches the object store: HTTPS to its address range, a policy of its own
        (store,) = others
        assert store["metadata"]["name"] == "triton-object-store" and store["spec"]["policyTypes"] == ["Egress"]
        assert _matches(store["spec"]["podSelector"], pod_labels)
        assert store["metadata"]["namespace"] == dep["metadata"]["namespace"]
        assert [[p for p in r["ports"]] for r in store["spec"]["egress"]] == [[{"port": 443, "protocol": "TCP"}]]
    else:
        assert others == []  # baked image: DNS only


# ---- the server's pod ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kustomization", OVERLAYS)
def test_probes(kustomization):
    dep = one(render(kustomization), "Deployment", "triton")
    c = server_container(dep)
    startup, ready, live = c["startupProbe"], c["readinessProbe"], c["livenessProbe"]
    assert startup["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    # readiness and liveness also fail on a dead python stub (tests/serving/test_healing.py runs this probe)
    probe = ["/opt/stylize/venv/bin/python", "-m", "stylize.server.healing", "--check", "--ready-url"]
    assert ready["exec"]["command"] == probe + ["http://127.0.0.1:8000/v2/health/ready"]
    assert live["exec"]["command"] == probe + ["http://127.0.0.1:8000/v2/health/live"]
    assert (flag(c["args"], "http-port") or ["8000"]) == ["8000"]
    # model loading gets at least 5 minutes before the kubelet gives up on the pod
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300
    # a busy server is not killed faster than it is taken out of the endpoints
    assert live["periodSeconds"] * live["failureThreshold"] > ready["periodSeconds"] * ready["failureThreshold"]
    assert flag(c["args"], "strict-readiness") == ["true"]


@pytest.mark.parametrize("kustomization", OVERLAYS)
def test_graceful_shutdown_covers_the_drain(kustomization):
    dep = one(render(kustomization), "Deployment", "triton")
    c = server_container(dep)
    (exit_timeout,) = map(int, flag(c["args"], "exit-timeout-secs"))
    cmd = c["lifecycle"]["preStop"]["exec"]["command"]
    assert cmd[0] == "sleep"
    pre_stop = int(cmd[1])
    assert dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > pre_stop + exit_timeout
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


@pytest.mark.parametrize("kustomization", OVERLAYS)
def test_shared_memory_and_writable_dirs(kustomization):
    dep = one(render(kustomization), "Deployment", "triton")
    spec = dep["spec"]["template"]["spec"]
    c = server_container(dep)
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    shm = volumes[mounts["/dev/shm"]]["emptyDir"]
    assert shm["medium"] == "Memory"
    shm_bytes = quantity_bytes(shm["sizeLimit"])
    assert shm_bytes >= 1 << 30, "python steps pass decoded images through /dev/shm"
    # memory-backed: it is charged to the container, so the limit must hold it and leave room for the models
    assert quantity_bytes(c["resources"]["limits"]["memory"]) >= shm_bytes + (4 << 30)
    # read-only root filesystem: every place the server writes is a mounted emptyDir
    env = {e["name"]: e.get("value") for e in c.get("env", [])}
    for path in ["/tmp", env["HOME"]] + [v for k, v in env.items() if k.endswith("_PATH") and v]:
        assert any(path == m or path.startswith(m.rstrip("/") + "/") for m in mounts), path
        mount = next(m for m in sorted(mounts, key=len, reverse=True) if path.startswith(m))
        assert "emptyDir" in volumes[mounts[mount]]
    shm_flags = dict(
        f.split(",", 1)[1].split("=") for f in flag(c["args"], "backend-config") if f.startswith("python,shm-")
    )
    assert int(shm_flags["shm-default-byte-size"]) < shm_bytes


@pytest.mark.parametrize("kustomization", OVERLAYS + ("loadtest",))
def test_security_context(kustomization):
    """Every container of every pod template meets the Pod Security "restricted" profile, plus a read-only root."""
    objs = render(kustomization)
    ns = [o for o in objs if o["kind"] == "Namespace"]
    for n in ns:
        assert n["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for owner, tmpl in _pod_templates(objs):
        pod = tmpl["spec"]
        psc = pod.get("securityContext", {})
        assert pod.get("automountServiceAccountToken") is False
        assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")
        for v in pod.get("volumes", []):
            assert set(v) - {"name"} <= {"emptyDir", "configMap", "secret", "projected"}, v
        for c in pod.get("initContainers", []) + pod["containers"]:
            sc = c["securityContext"]
            where = f"{owner['kind']}/{owner['metadata']['name']}/{c['name']}"
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["capabilities"]["drop"] == ["ALL"] and not sc["capabilities"].get("add"), where
            assert sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True, where
            assert sc.get("runAsUser", psc.get("runAsUser", 1)) != 0, where
            seccomp = sc.get("seccompProfile", psc.get("seccompProfile", {}))
            assert seccomp.get("type") == "RuntimeDefault", where
            assert not sc.get("privileged"), where


@pytest.mark.parametrize("kustomization", OVERLAYS + ("loadtest",))
def test_requests_and_limits(kustomization):
    for owner, tmpl in _pod_templates(render(kustomization)):
        for c in tmpl["spec"].get("initContainers", []) + tmpl["spec"]["containers"]:
            res = c["resources"]
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(res[kind]), f"{c['name']}: {kind}"
    dep = one(render(kustomization), "Deployment", "triton") if kustomization != "loadtest" else None
    if dep:
        res = server_container(dep)["resources"]
        # Guaranteed QoS: the pod has exactly the CPU the load test measured (capacity numbers transfer)
        assert res["requests"]["cpu"] == res["limits"]["cpu"]
        assert res["requests"]["memory"] == res["limits"]["memory"]


# ---- local disk (ephemeral storage) ------------------------------------------------------------------------------

# Container logs on node disk, charged to the container's ephemeral storage: containerLogMaxSize 10Mi x
# containerLogMaxFiles 5 (kubelet defaults), for the running container and the dead one the kubelet keeps.
LOG_BUDGET = 100 << 20
CONFIGMAP_MAX = 1 << 20  # a ConfigMap holds at most 1 MiB (the API's limit); its volume is on node disk


def ephemeral_storage_problems(pod: dict) -> list[str]:
    """What a pod spec leaves unbounded on node disk: a container or init container without ephemeral-storage
    requests and limits, an emptyDir on disk (not medium Memory) without a sizeLimit, a container whose limit is
    below what it may write (the sizeLimits of the disk emptyDirs it mounts, its ConfigMap volumes, its logs), a
    request above its limit, app containers whose limits together hold less than every disk emptyDir of the pod
    (the kubelet evicts a pod whose emptyDirs and containers use more than the sum of its limits)."""
    problems = []
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    on_disk = {}
    for name, v in volumes.items():
        if "emptyDir" in v and v["emptyDir"].get("medium") != "Memory":
            if "sizeLimit" not in v["emptyDir"]:
                problems.append(f"emptyDir {name}: no sizeLimit")
            on_disk[name] = quantity_bytes(v["emptyDir"].get("sizeLimit", "0"))
        elif "configMap" in v:
            on_disk[name] = CONFIGMAP_MAX
    for c in pod.get("initContainers", []) + pod["containers"]:
        res = c.get("resources", {})
        req, lim = (res.get(k, {}).get("ephemeral-storage") for k in ("requests", "limits"))
        if req is None or lim is None:
            problems.append(f"{c['name']}: no ephemeral-storage {'request' if req is None else 'limit'}")
            continue
        writes = LOG_BUDGET + sum(on_disk.get(m["name"], 0) for m in c.get("volumeMounts", []))
        if quantity_bytes(lim) < writes:
            problems.append(
                f"{c['name']}: ephemeral-storage limit {lim} < {writes >> 20}Mi (its emptyDirs' "
                "sizeLimits, ConfigMaps and logs)"
            )
        if quantity_bytes(req) > quantity_bytes(lim):
            problems.append(f"{c['name']}: ephemeral-storage request {req} > limit {lim}")
    pod_limit = sum(
        quantity_bytes(c.get("resources", {}).get("limits", {}).get("ephemeral-storage", "0"))
        for c in pod["containers"]
    )
    if pod_limit < sum(on_disk.values()):
        problems.append(f"the pod's containers' limits ({pod_limit >> 20}Mi) hold less than its disk volumes")
    return problems


@pytest.mark.parametrize("kustomization", OVERLAYS + ("loadtest",))
def test_every_container_bounds_its_local_disk(kustomization):
    """Issue 13: ephemeral-storage requests and limits on every container and init container of every pod
    template, a sizeLimit on every emptyDir on disk, and limits that cover what each container may write."""
    templates = list(_pod_templates(render(kustomization)))
    assert templates
    for owner, tmpl in templates:
        assert ephemeral_storage_problems(tmpl["spec"]) == [], f"{owner['kind']}/{owner['metadata']['name']}"


def test_the_local_disk_check_finds_what_is_missing():
    """The check above is not vacuous: each kind of gap in a rendered pod is reported."""
    pod = one(render("overlays/cpu-objectstore"), "Deployment", "triton")["spec"]["template"]["spec"]
    assert ephemeral_storage_problems(pod) == []

    def mutated(change):
        copy = json.loads(json.dumps(pod))
        change(copy)
        return ephemeral_storage_problems(copy)

    def no_limit(p):
        del p["containers"][0]["resources"]["limits"]["ephemeral-storage"]

    def no_request(p):
        del p["initContainers"][0]["resources"]["requests"]["ephemeral-storage"]

    def no_size(p):
        del next(v for v in p["volumes"] if v["name"] == "models")["emptyDir"]["sizeLimit"]

    def grown(p):
        next(v for v in p["volumes"] if v["name"] == "tmp")["emptyDir"]["sizeLimit"] = "4Gi"

    assert mutated(no_limit) == [
        "triton: no ephemeral-storage limit",
        "the pod's containers' limits (0Mi) hold less than its disk volumes",
    ]
    assert mutated(no_request) == ["model-sync: no ephemeral-storage request"]
    assert mutated(no_size) == ["emptyDir models: no sizeLimit"]
    grown_problems = mutated(grown)
    assert any(p.startswith("triton: ephemeral-storage limit") for p in grown_problems)
    assert any(p.startswith("model-sync: ephemeral-storage limit") for p in grown_problems)
    # memory-backed /dev/shm is memory, not disk: no sizeLimit needed for this check, nothing charged to disk
    shm = next(v for v in pod["volumes"] if v["emptyDir"].get("medium") == "Memory")
    assert shm["name"] == "dshm"


def test_local_disk_figures_hold_the_measurement():
    """The sizeLimits hold what k8s/capacity/disk-usage.json measured (python -m stylize_k8s.disk_usage
    --measure): the tmp emptyDir the image steps' OpenVINO model cache, the object-store variant's models emptyDir
    the repository's files."""
    from stylize_k8s import disk_usage

    report = disk_usage.load()
    for kustomization in OVERLAYS:
        volumes = {
            v["name"]: v
            for v in one(render(kustomization), "Deployment", "triton")["spec"]["template"]["spec"]["volumes"]
        }
        assert quantity_bytes(volumes["tmp"]["emptyDir"]["sizeLimit"]) >= 2 * report["openvino_cache"]["bytes"]
        if "models" in volumes:
            assert quantity_bytes(volumes["models"]["emptyDir"]["sizeLimit"]) >= 2 * report["model_repository"]["bytes"]
    # the report covers every image step the repository compiles in process, each served version
    networks = report["openvino_cache"]["networks"]
    assert {n["step"] for n in networks} == {d.image_model for d in descriptors.MODELS if not d.window}
    # and every network model the CPU pod's Python-based OpenVINO backend compiles (k8s/image/Dockerfile)
    backend_models = report["openvino_cache"]["backend_models"]
    assert {n["model"] for n in backend_models} == {d.net_model for d in descriptors.MODELS}
    assert report["openvino_cache"]["bytes"] >= sum(n["cache_bytes_added"] for n in networks + backend_models) > 0


# ---- egress ----------------------------------------------------------------------------------------------------


def _port_covers(rule_port: dict, port: int) -> bool:
    if "port" not in rule_port:  # protocol only: every port
        return True
    p = rule_port["port"]
    if isinstance(p, str):  # a named port: whatever the destination calls it, possibly this one
        return True
    return p <= port <= rule_port.get("endPort", p)


def egress_open_to_any_host(objects, pod_labels: dict, port: int) -> list[str]:
    """The egress rules of the NetworkPolicies that select a pod with ``pod_labels`` and let it reach any host on
    ``port``: a rule without ``to`` (every destination), or with an ipBlock of prefix 0 (0.0.0.0/0, ::/0). Rules of
    a policy without Egress in its policyTypes restrict nothing and are not read (such a policy allows nothing
    either)."""
    import ipaddress

    open_rules = []
    for np_ in objects:
        if np_["kind"] != "NetworkPolicy" or "Egress" not in np_["spec"].get("policyTypes", ["Ingress"]):
            continue
        if not all(pod_labels.get(k) == v for k, v in np_["spec"]["podSelector"].get("matchLabels", {}).items()):
            continue
        for i, rule in enumerate(np_["spec"].get("egress", [])):
            if rule.get("ports") and not any(_port_covers(p, port) for p in rule["ports"]):
                continue
            where = f"{np_['metadata']['name']} egress[{i}]"
            if not rule.get("to"):
                open_rules.append(f"{where}: any destination")
            for peer in rule.get("to", []):
                cidr = peer.get("ipBlock", {}).get("cidr")
                try:
                    if cidr is not None and ipaddress.ip_network(cidr, strict=False).prefixlen == 0:
                        open_rules.append(f"{where}: {cidr}")
                except ValueError:  # not a CIDR: the API server refuses the policy
                    pass
    return open_rules


@pytest.mark.parametrize("kustomization", OVERLAYS)
def test_no_egress_to_any_host_on_443(kustomization):
    """Issue 13: the object-store variant opened egress to any host on 443 for the whole pod, Triton included.
    No overlay lets the server pod reach any host on 443 (0.0.0.0/0, ::/0, or a rule with no destination)."""
    objs = render(kustomization)
    pod_labels = one(objs, "Deployment", "triton")["spec"]["template"]["metadata"]["labels"]
    assert egress_open_to_any_host(objs, pod_labels, 443) == []


def test_the_object_store_egress_is_a_cidr_you_must_set(tmp_path):
    """The object-store variant's HTTPS egress goes to one address range, a value the user sets: the tracked
    placeholder is no CIDR (the API server refuses the policy, the sync cannot reach the store: closed, not open),
    and the documented patch in an overlay of one's own sets it and validates."""
    import ipaddress
    import os
    import subprocess

    import yaml
    from k8s_helpers import kubectl

    objs = render("overlays/cpu-objectstore")
    store = one(objs, "NetworkPolicy", "triton-object-store")
    (rule,) = store["spec"]["egress"]
    (peer,) = rule["to"]
    assert set(peer) == {"ipBlock"}
    placeholder = peer["ipBlock"]["cidr"]
    assert placeholder.startswith("SET-TO-")
    with pytest.raises(ValueError):
        ipaddress.ip_network(placeholder, strict=False)

    mine = tmp_path / "stylize-mine"
    mine.mkdir()
    base = os.path.relpath(K8S / "overlays" / "cpu-objectstore", mine)
    (mine / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources: [{base}]\n"
        "patches: [{target: {kind: NetworkPolicy, name: triton-object-store},\n"
        '           patch: \'[{"op": "replace", "path": "/spec/egress/0/to/0/ipBlock/cidr", '
        '"value": "203.0.113.0/24"}]\'}]\n'
    )
    out = subprocess.run([kubectl(), "kustomize", str(mine)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    mine_objs = tuple(d for d in yaml.safe_load_all(out.stdout) if d)
    set_store = one(mine_objs, "NetworkPolicy", "triton-object-store")
    assert set_store["spec"]["egress"][0]["to"] == [{"ipBlock": {"cidr": "203.0.113.0/24"}}]
    for version in KUBERNETES_VERSIONS:
        kubernetes_validate.validate(set_store, version, strict=True)
    pod_labels = one(mine_objs, "Deployment", "triton")["spec"]["template"]["metadata"]["labels"]
    assert egress_open_to_any_host(mine_objs, pod_labels, 443) == []
    assert one(mine_objs, "NetworkPolicy", "triton") == one(objs, "NetworkPolicy", "triton")  # DNS only


def test_the_egress_check_finds_rules_open_to_any_host():
    """The check above is not vacuous: the old component's rule (443, no destination), 0.0.0.0/0, ::/0 and a rule
    for every port are reported; a policy that selects other pods, another port, or a real range is not."""
    labels = {"app.kubernetes.io/name": "triton"}

    def policy(*rules, selector=labels, types=("Egress",)):
        return {
            "kind": "NetworkPolicy",
            "metadata": {"name": "p"},
            "spec": {"podSelector": {"matchLabels": selector}, "policyTypes": list(types), "egress": list(rules)},
        }

    https = [{"port": 443, "protocol": "TCP"}]
    old_component = policy({"ports": https})
    assert egress_open_to_any_host([old_component], labels, 443) == ["p egress[0]: any destination"]
    for cidr in ("0.0.0.0/0", "::/0"):
        assert egress_open_to_any_host(
            [policy({"to": [{"ipBlock": {"cidr": cidr}}], "ports": https})], labels, 443
        ) == [f"p egress[0]: {cidr}"]
    assert egress_open_to_any_host([policy({})], labels, 443) == ["p egress[0]: any destination"]
    assert egress_open_to_any_host(
        [policy({"ports": [{"port": 400, "endPort": 500, "protocol": "TCP"}]})], labels, 443
    ) == ["p egress[0]: any destination"]
    assert egress_open_to_any_host([policy({"ports": https}, selector={"app": "other"})], labels, 443) == []
    assert egress_open_to_any_host([policy({"ports": [{"port": 53, "protocol": "UDP"}]})], labels, 443) == []
    assert (
        egress_open_to_any_host(
            [policy({"to": [{"ipBlock": {"cidr": "203.0.113.0/24"}}], "ports": https})], labels, 443
        )
        == []
    )


def test_server_args_and_images():
    for kustomization in OVERLAYS:
        c = server_container(one(render(kustomization), "Deployment", "triton"))
        # the entrypoint cleans /dev/shm of a crashed server's regions, then execs tritonserver with the args
        # (tests/k8s/test_pod_entrypoint.py runs it as the pod does)
        assert c["command"] == [
            "/opt/stylize/venv/bin/python",
            "-m",
            "stylize.server.entrypoint",
            "/opt/tritonserver/bin/tritonserver",
        ]
        assert flag(c["args"], "model-repository") == ["/models"]
        (cache,) = flag(c["args"], "cache-config")
        assert re.fullmatch(r"local,size=\d+", cache)
        assert flag(c["args"], "metrics-config") == ["summary_latencies=true"]  # the dashboard's p50/p95
        assert c["image"].startswith("localhost:5000/stylize-triton:") and "triton24.10" in c["image"]
    job = one(render("loadtest"), "Job")
    (pa,) = job["spec"]["template"]["spec"]["containers"]
    assert pa["image"] == "nvcr.io/nvidia/tritonserver:24.10-py3-sdk"  # same release as the server


def test_overlays_cpu_and_gpu_differ_where_they_must():
    cpu = server_container(one(render("overlays/cpu"), "Deployment", "triton"))
    gpu_dep = one(render("overlays/gpu"), "Deployment", "triton")
    gpu = server_container(gpu_dep)

    assert "nvidia.com/gpu" not in cpu["resources"]["limits"]
    assert flag(cpu["args"], "allow-gpu-metrics") == ["false"]
    assert not flag(cpu["args"], "model-control-mode")  # CPU loads the whole repository

    assert gpu["resources"]["limits"]["nvidia.com/gpu"] == 1
    spec = gpu_dep["spec"]["template"]["spec"]
    # the GPU model the TensorRT plans were built on, by its GPU feature discovery label; a full GPU (MIG slices
    # are another resource, docs/k8s.md)
    assert set(spec["nodeSelector"]) == {"nvidia.com/gpu.present", "nvidia.com/gpu.product"}
    assert spec["nodeSelector"]["nvidia.com/gpu.present"] == "true"
    assert re.fullmatch(r"[A-Za-z0-9][-A-Za-z0-9_.]{0,61}[A-Za-z0-9]", spec["nodeSelector"]["nvidia.com/gpu.product"])
    assert not any(k.startswith("nvidia.com/mig") for k in gpu["resources"]["limits"])
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    assert flag(gpu["args"], "allow-gpu-metrics") == ["true"]
    assert flag(gpu["args"], "model-control-mode") == ["explicit"]
    loaded = flag(gpu["args"], "load-model")
    assert loaded == generate.gpu_models()
    for d in descriptors.MODELS:  # every TensorRT plan and ensemble, never the ONNX network
        assert d.trt_model in loaded and d.id in loaded and d.net_model not in loaded


@pytest.mark.parametrize("kustomization", OVERLAYS)
def test_admin_apis_are_restricted_with_the_key_from_a_secret(kustomization):
    """Issue 13, defect 1: the model-repository (load/unload), model-config, shared-memory, logging and trace APIs
    need the admin key on both endpoints, in every overlay (the GPU one runs explicit model control); the pod
    still listens on all interfaces (no --*-address: Triton's default 0.0.0.0)."""
    from stylize.contract import access

    c = server_container(one(render(kustomization), "Deployment", "triton"))
    restrictions = [a for a in c["args"] if "restricted" in a]
    assert restrictions == access.restriction_args(f"$({access.ADMIN_KEY_ENV})")
    apis = {a.split("=", 1)[1].split(":", 1)[0] for a in restrictions}
    assert apis == {",".join(access.RESTRICTED_APIS)} and "inference" not in access.RESTRICTED_APIS
    (env,) = [e for e in c["env"] if e["name"] == access.ADMIN_KEY_ENV]
    ref = env["valueFrom"]["secretKeyRef"]
    assert ref["name"] == "triton-admin-key" and ref["key"] == "key" and not ref.get("optional", False)
    # the kubelet expands $(STYLIZE_ADMIN_KEY) only for a variable defined in the container's env (it is)
    assert not any(flag(c["args"], f"{p}-address") for p in ("http", "grpc", "metrics"))


def test_the_generator_refuses_explicit_model_control_without_the_restriction(tmp_path, monkeypatch):
    text = (K8S / "base" / "deployment.yaml").read_text()
    open_base = tmp_path / "deployment.yaml"
    open_base.write_text("\n".join(line for line in text.splitlines() if "restricted" not in line) + "\n")
    monkeypatch.setattr(generate, "BASE_DEPLOYMENT", open_base)
    with pytest.raises(SystemExit, match="explicit model control would let any client load code"):
        generate.gpu_patch_text()


def test_hpa_replicas_and_behaviour_per_overlay():
    expected = {"overlays/cpu": (2, 20), "overlays/gpu": (2, 8), "overlays/cpu-objectstore": (2, 20)}
    for kustomization, (lo, hi) in expected.items():
        hpa = one(render(kustomization), "HorizontalPodAutoscaler")["spec"]
        assert (hpa["minReplicas"], hpa["maxReplicas"]) == (lo, hi)
        # min 2: the PDB (maxUnavailable 1) can then drain a node without dropping to zero pods
        assert hpa["minReplicas"] >= 2
        up, down = hpa["behavior"]["scaleUp"], hpa["behavior"]["scaleDown"]
        assert up["stabilizationWindowSeconds"] == 0
        # scale-down waits longer than a pod takes to load (startup probe budget): no flapping on short dips
        startup = server_container(one(render(kustomization), "Deployment", "triton"))["startupProbe"]
        assert down["stabilizationWindowSeconds"] >= startup["periodSeconds"] * startup["failureThreshold"]
        assert up["policies"] and down["policies"]


def test_dockerfile_builds_from_the_pinned_release():
    text = (K8S / "image" / "Dockerfile").read_text()
    assert re.search(r"^ARG TRITON_IMAGE=nvcr\.io/nvidia/tritonserver:24\.10-py3$", text, re.M)
    stages = re.findall(r"^FROM (\S+) AS (\S+)$", text, re.M)
    # the server is the last stage (what a plain `docker build` makes); plan-builder and server-cpu (FROM a
    # CPU-only Triton, tests/k8s/test_image_pinning.py) are for `--target` only
    assert stages == [
        ("${TRITON_IMAGE}", "server-base"),
        ("server-base", "plan-builder"),
        ("server-base", "server-cpu"),
        ("server-base", "server"),
    ]
    users = re.findall(r"^USER (\S+)$", text, re.M)
    assert users and users[-1].split(":")[0] not in ("0", "root")
    assert '"/src[server]"' in text
    assert re.search(r"^COPY \$\{MODEL_REPOSITORY\} /models$", text, re.M)
    # the stub the image links to exists at that path in the pinned nvidia-pytriton wheel
    stub_rel = re.search(r"site-packages/(pytriton/\S+/triton_python_backend_stub)", text).group(1)
    import importlib.util

    site = importlib.util.find_spec("pytriton")
    if site is None:
        pytest.skip("nvidia-pytriton (the `server` extra) is not installed: cannot check the stub path")
    site_packages = ROOT.joinpath(list(site.submodule_search_locations)[0]).parent
    assert (site_packages / stub_rel).is_file()
    # the pip pin of nvidia-pytriton in pyproject is the 24.10 line (Triton 2.51)
    assert '"nvidia-pytriton==0.7.0"' in (ROOT / "pyproject.toml").read_text()


def test_your_registry_goes_in_an_overlay_of_your_own_with_the_installed_kubectl(tmp_path):
    """README step 3: no `kustomize edit` (kubectl kustomize cannot edit): a two-line overlay of the CPU overlay
    sets the image, with the kubectl the project installs."""
    import os
    import subprocess

    from k8s_helpers import kubectl

    mine = tmp_path / "stylize-mine"
    mine.mkdir()
    cpu = os.path.relpath(K8S / "overlays" / "cpu", mine)
    image = "registry.example.com/team/stylize-triton"
    (mine / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources: [{cpu}]\n"
        f"images: [{{name: localhost:5000/stylize-triton, newName: {image}, newTag: 0.1.0-triton24.10-cpu}}]\n"
    )
    out = subprocess.run([kubectl(), "kustomize", str(mine)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    images = set(re.findall(r"^\s+image: (\S+)$", out.stdout, re.M))
    assert images == {f"{image}:0.1.0-triton24.10-cpu"}
    cpu_images = (K8S / "overlays" / "cpu" / "kustomization.yaml").read_text()
    assert "newName: localhost:5000/stylize-triton" in cpu_images  # the name the README's overlay replaces
