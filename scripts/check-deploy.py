#!/usr/bin/env python3
"""Offline, schema-aware checks of deploy/ and docker-compose.yml (run by scripts/check-deploy.sh,
which installs the tools and this script's Python packages, then passes their paths).

Checks, each of which can fail (``--self-test`` proves it on mutated copies):
  kustomize    every overlay and deploy/k8s/cluster builds with a real kustomize
  k8s-schema   every rendered object validates strictly (unknown fields fail) against the
               Kubernetes OpenAPI schemas (kubernetes-validate) or, for cert-manager and
               prometheus-operator kinds, against their CRDs' openAPIV3Schema; a kind with no
               schema fails
  k8s-policy   what the manifests promise: probes, drain timings, rollout strategy, resources,
               non-root, change-cause, HPA/PDB/Service/Ingress/TLS/Job/monitoring, no secrets
  compose      docker-compose.yml against the Compose Specification schema, plus references
               (services, volumes, files, scrape targets, the OTLP endpoint)
  prometheus   deploy/compose/prometheus.yml with `promtool check config`
  otel         deploy/compose/otel-collector.yaml: receivers/processors/exporters/pipelines
  grafana      provisioning files, and the dashboard JSON (parses, every query is PromQL)
  rules        the PrometheusRule's spec with `promtool check rules`; runbook anchors exist
  metrics      every onlychat_* metric in the dashboard and the rules is exported by crates/
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import importlib_resources
import jsonschema
import yaml
from referencing import Registry, Resource

OBJECT_META = "https://kubernetes.io/api/_definitions.json#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
CLUSTER_SCOPED_CORE = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume",
                       "StorageClass", "PriorityClass", "IngressClass", "CustomResourceDefinition"}
# onlychat keeps this much of the shutdown timeout after the drain window for the producer and
# trace flushes, and exits with code 2 at start if ONLYCHAT_DRAIN_WINDOW leaves less
# (FLUSH_RESERVE in crates/onlychat/src/serve.rs).
FLUSH_RESERVE = 2
SECRET_NAME = re.compile(r"SECRET|PASSWORD|TOKEN|PRIVATE|DATABASE_URL|REDIS_URL|_KEY$")


class Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # libyaml when present: the CRDs are big
    """Safe YAML; a bare `=` (PyYAML's "value" tag, which the CRDs use as an enum member) is a string."""


Loader.add_constructor("tag:yaml.org,2002:value", lambda loader, node: loader.construct_scalar(node))


def load_yaml(text: str):
    return yaml.load(text, Loader=Loader)


def load_yaml_all(text: str) -> list:
    return [d for d in yaml.load_all(text, Loader=Loader) if d]


class Report:
    """Collects results; every failure is printed at once and counted."""

    def __init__(self, quiet: bool = False):
        self.failures: list[str] = []
        self.quiet = quiet

    def ok(self, check: str, msg: str) -> None:
        if not self.quiet:
            print(f"  ok    {check}: {msg}")

    def fail(self, check: str, msg: str) -> None:
        self.failures.append(f"{check}: {msg}")
        if not self.quiet:
            print(f"  FAIL  {check}: {msg}")


class Ctx:
    """Where things are: the tree under check, the code the metrics come from, the tools."""

    def __init__(self, args: argparse.Namespace, root: Path):
        self.root = root
        self.crates = Path(args.crates or root / "crates")
        self.kustomize = args.kustomize
        self.promtool = args.promtool
        self.schemas = Path(args.schemas)
        self.k8s_versions = args.k8s_versions.split()

    @property
    def deploy(self) -> Path:
        return self.root / "deploy"


# ------------------------------------------------------------------------------------------
# small helpers
# ------------------------------------------------------------------------------------------

def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def tail(text: str, n: int = 12) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return "\n        " + "\n        ".join(lines[-n:]) if lines else ""


def duration_seconds(text: str) -> float | None:
    """humantime-style durations as onlychat reads them: 20s, 1m30s, 500ms, 2h."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)", text or "")
    if not parts or re.sub(r"[\d.\s]|ms|s|m|h|d", "", text):
        return None
    return sum(float(n) * units[u] for n, u in parts)


def obj_name(doc: dict) -> str:
    meta = doc.get("metadata") or {}
    ns = f"{meta['namespace']}/" if meta.get("namespace") else ""
    return f"{doc.get('kind')} {ns}{meta.get('name')}"


def err_path(error: jsonschema.ValidationError) -> str:
    out = ""
    for part in error.absolute_path:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out.lstrip(".") or "(root)"


def slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


# ------------------------------------------------------------------------------------------
# kustomize
# ------------------------------------------------------------------------------------------

def kustomize_targets(ctx: Ctx) -> list[Path]:
    k8s = ctx.deploy / "k8s"
    overlays = sorted(p for p in (k8s / "overlays").iterdir() if (p / "kustomization.yaml").exists())
    return overlays + [k8s / "cluster"]


def render(ctx: Ctx, rep: Report) -> dict[str, list[dict]]:
    rendered: dict[str, list[dict]] = {}
    for target in kustomize_targets(ctx):
        rel = str(target.relative_to(ctx.root))
        res = run([ctx.kustomize, "build", str(target)])
        if res.returncode != 0:
            rep.fail("kustomize", f"`kustomize build {rel}` failed:{tail(res.stderr)}")
            continue
        docs = load_yaml_all(res.stdout)
        rendered[rel] = docs
        rep.ok("kustomize", f"{rel}: {len(docs)} objects")
    return rendered


# ------------------------------------------------------------------------------------------
# schemas: Kubernetes (kubernetes-validate's bundled, strict) and CRDs (made strict here)
# ------------------------------------------------------------------------------------------

_K8S_DIR = importlib_resources.files("kubernetes_validate") / "kubernetes-json-schema"
_validators: dict = {}


def k8s_schema_dir(version: str):
    return _K8S_DIR / f"v{version}.0-local-strict"


def k8s_registry(version: str) -> Registry:
    key = ("registry", version)
    if key not in _validators:
        defs = json.loads((k8s_schema_dir(version) / "_definitions.json").read_text())
        _validators[key] = Resource.from_contents(defs) @ Registry()
    return _validators[key]


def k8s_validator(version: str, api_version: str, kind: str):
    """The strict validator for a core kind, or None when the schemas have no such kind."""
    key = ("k8s", version, api_version, kind)
    if key not in _validators:
        api = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
        path = k8s_schema_dir(version) / f"{kind.lower()}-{api}.json"
        if not path.is_file():
            _validators[key] = None
        else:
            schema = json.loads(path.read_text())
            _validators[key] = jsonschema.Draft202012Validator(schema, registry=k8s_registry(version))
    return _validators[key]


def strict_crd_schema(node, closed: bool = True):
    """An openAPIV3Schema with unknown fields rejected wherever Kubernetes would prune them
    (every object that does not say x-kubernetes-preserve-unknown-fields), and OpenAPI 3.0's
    `nullable` spelled as JSON Schema."""
    if not isinstance(node, dict):
        return node
    node = dict(node)
    if node.get("nullable") is True and isinstance(node.get("type"), str):
        node["type"] = [node["type"], "null"]
    for bound in ("exclusiveMinimum", "exclusiveMaximum"):
        if isinstance(node.get(bound), bool):
            limit = node.pop("minimum" if bound == "exclusiveMinimum" else "maximum", None)
            node.pop(bound)
            if limit is not None:
                node[bound] = limit
    if isinstance(node.get("properties"), dict):
        node["properties"] = {k: strict_crd_schema(v) for k, v in node["properties"].items()}
    if isinstance(node.get("items"), dict):
        node["items"] = strict_crd_schema(node["items"])
    if isinstance(node.get("additionalProperties"), dict):
        node["additionalProperties"] = strict_crd_schema(node["additionalProperties"])
    for combinator in ("allOf", "anyOf", "oneOf"):
        if isinstance(node.get(combinator), list):
            node[combinator] = [strict_crd_schema(s, closed=False) for s in node[combinator]]
    preserve = node.get("x-kubernetes-preserve-unknown-fields") is True
    if closed and node.get("type") == "object" and not preserve and "additionalProperties" not in node:
        node["additionalProperties"] = False
    return node


def load_crds(ctx: Ctx, rep: Report) -> dict[tuple[str, str], dict]:
    """(apiVersion, kind) -> {"validator", "scope", "source"} for every CRD under --schemas."""
    crds: dict[tuple[str, str], dict] = {}
    files = sorted(ctx.schemas.glob("crds/*/*.yaml"))
    if not files:
        rep.fail("k8s-schema", f"no CRD files under {ctx.schemas}/crds (tool cache incomplete?)")
    for path in files:
        for doc in load_yaml_all(path.read_text()):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            spec = doc["spec"]
            for version in spec["versions"]:
                schema = (version.get("schema") or {}).get("openAPIV3Schema")
                if not schema or not version.get("served", True):
                    continue
                strict = strict_crd_schema(schema)
                strict.setdefault("properties", {})["metadata"] = {"$ref": OBJECT_META}
                strict.setdefault("required", [])
                for field in ("apiVersion", "kind", "metadata"):
                    if field not in strict["required"]:
                        strict["required"].append(field)
                api_version = f"{spec['group']}/{version['name']}"
                registry = k8s_registry(ctx.k8s_versions[-1])
                crds[(api_version, spec["names"]["kind"])] = {
                    "validator": jsonschema.Draft202012Validator(strict, registry=registry),
                    "scope": spec["scope"],
                    "source": f"{path.parent.name}/{path.name}",
                }
    return crds


def schema_errors(validator, doc: dict, limit: int = 5) -> list[str]:
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
    out = [f"{err_path(e)}: {e.message}" for e in errors[:limit]]
    if len(errors) > limit:
        out.append(f"... and {len(errors) - limit} more")
    return out


def check_k8s_schemas(ctx: Ctx, rep: Report, rendered: dict[str, list[dict]]) -> None:
    for version in ctx.k8s_versions:
        if not k8s_schema_dir(version).is_dir():
            rep.fail("k8s-schema", f"kubernetes-validate has no schemas for Kubernetes {version}")
            return
    crds = load_crds(ctx, rep)
    for target, docs in rendered.items():
        bad = 0
        for doc in docs:
            bad += not check_object_schema(ctx, rep, crds, target, doc)
        if not bad:
            rep.ok("k8s-schema", f"{target}: {len(docs)} objects valid (strict; Kubernetes "
                                 f"{', '.join(ctx.k8s_versions)}; CRDs cert-manager, prometheus-operator)")


def check_object_schema(ctx: Ctx, rep: Report, crds: dict, target: str, doc: dict) -> bool:
    api_version, kind = doc.get("apiVersion", ""), doc.get("kind", "")
    where = f"{target}: {obj_name(doc)}"
    crd = crds.get((api_version, kind))
    problems: list[str] = []
    if crd:
        problems = schema_errors(crd["validator"], doc)
        if crd["scope"] == "Cluster" and (doc.get("metadata") or {}).get("namespace"):
            problems.append("metadata.namespace is set on a cluster-scoped kind")
        label = f"CRD {crd['source']}"
    else:
        label = "Kubernetes"
        versions_of: dict[str, list[str]] = {}
        for version in ctx.k8s_versions:
            validator = k8s_validator(version, api_version, kind)
            if validator is None:
                rep.fail("k8s-schema", f"{where}: no schema for kind {kind} ({api_version}) in "
                                       f"Kubernetes {version} or the vendored CRDs; add its CRD "
                                       "to scripts/check-deploy.sh or fix apiVersion/kind")
                return False
            for p in schema_errors(validator, doc):
                versions_of.setdefault(p, []).append(version)
        problems += [f"[{', '.join(v)}] {p}" for p, v in versions_of.items()]
        if kind in CLUSTER_SCOPED_CORE and (doc.get("metadata") or {}).get("namespace"):
            problems.append("metadata.namespace is set on a cluster-scoped kind")
    for problem in problems:
        rep.fail("k8s-schema", f"{where} ({label}): {problem}")
    return not problems


# ------------------------------------------------------------------------------------------
# policy: what the manifests promise (issue 7 item 3)
# ------------------------------------------------------------------------------------------

def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d.get("kind") == kind]


def labels_match(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def pod_env(docs: list[dict], container: dict) -> dict[str, str]:
    """The container's environment as the process sees it: ConfigMaps, then literal env."""
    env: dict[str, str] = {}
    maps = {d["metadata"]["name"]: d.get("data") or {} for d in by_kind(docs, "ConfigMap")}
    for source in container.get("envFrom") or []:
        ref = (source.get("configMapRef") or {}).get("name")
        env.update(maps.get(ref, {}))
    for var in container.get("env") or []:
        if "value" in var:
            env[var["name"]] = var["value"]
    return env


def prestop_seconds(container: dict) -> float | None:
    pre = ((container.get("lifecycle") or {}).get("preStop")) or {}
    if "sleep" in pre:
        return float(pre["sleep"].get("seconds", 0))
    cmd = (pre.get("exec") or {}).get("command") or []
    text = " ".join(str(c) for c in cmd)
    match = re.search(r"\bsleep\s+(\d+(?:\.\d+)?)", text)
    return float(match.group(1)) if match else (0.0 if pre else None)


def check_workload(rep: Report, target: str, docs: list[dict], dep: dict) -> None:
    """Probes, rollout, resources, security and drain timings of one onlychat Deployment."""
    name = f"{target}: Deployment {dep['metadata']['name']}"
    spec, pod = dep["spec"], dep["spec"]["template"]["spec"]
    fails: list[str] = []
    strategy = spec.get("strategy") or {}
    if strategy.get("type", "RollingUpdate") != "RollingUpdate" or \
            str((strategy.get("rollingUpdate") or {}).get("maxUnavailable")) != "0":
        fails.append("strategy must be RollingUpdate with maxUnavailable: 0")
    if not ((dep["metadata"].get("annotations") or {}).get("kubernetes.io/change-cause")):
        fails.append("no kubernetes.io/change-cause annotation")
    psc = pod.get("securityContext") or {}
    for c in pod["containers"]:
        csc = c.get("securityContext") or {}
        if not (csc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True) or \
                csc.get("runAsUser", psc.get("runAsUser", 1)) == 0:
            fails.append(f"container {c['name']}: not runAsNonRoot with a non-zero uid")
        if csc.get("allowPrivilegeEscalation") is not False:
            fails.append(f"container {c['name']}: allowPrivilegeEscalation is not false")
        fails += probe_problems(c)
        fails += resource_problems(c)
        fails += timing_problems(docs, dep, c)
    for f in fails:
        rep.fail("k8s-policy", f"{name}: {f}")
    if not fails:
        rep.ok("k8s-policy", f"{name}: probes, rollout, resources, non-root, drain timings")


def probe_problems(c: dict) -> list[str]:
    out = []
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        got = ((c.get(probe) or {}).get("httpGet") or {}).get("path")
        if got != path:
            out.append(f"container {c['name']}: {probe} must GET {path} (has {got})")
    if not c.get("startupProbe"):
        out.append(f"container {c['name']}: no startupProbe")
    if prestop_seconds(c) is None:
        out.append(f"container {c['name']}: no preStop hook")
    return out


def resource_problems(c: dict) -> list[str]:
    res = c.get("resources") or {}
    return [f"container {c['name']}: resources.{kind}.{r} missing"
            for kind in ("requests", "limits") for r in ("cpu", "memory")
            if r not in (res.get(kind) or {})]


def timing_problems(docs: list[dict], dep: dict, c: dict) -> list[str]:
    """preStop + shutdown timeout < grace period; drain window + 2 s <= shutdown timeout."""
    out = []
    env = pod_env(docs, c)
    raw_timeout, raw_drain = env.get("ONLYCHAT_SHUTDOWN_TIMEOUT"), env.get("ONLYCHAT_DRAIN_WINDOW")
    for key, raw in (("ONLYCHAT_SHUTDOWN_TIMEOUT", raw_timeout), ("ONLYCHAT_DRAIN_WINDOW", raw_drain)):
        if raw is None:
            out.append(f"container {c['name']}: {key} is not set (ConfigMap onlychat-config)")
        elif duration_seconds(raw) is None:
            out.append(f"container {c['name']}: {key}={raw!r} is not a duration")
    timeout = duration_seconds(raw_timeout or "")
    drain = duration_seconds(raw_drain or "")
    grace = dep["spec"]["template"]["spec"].get("terminationGracePeriodSeconds", 30)
    prestop = prestop_seconds(c) or 0
    if timeout is not None and not prestop + timeout < grace:
        out.append(f"terminationGracePeriodSeconds ({grace}) must exceed preStop sleep ({prestop:g}s)"
                   f" + ONLYCHAT_SHUTDOWN_TIMEOUT ({timeout:g}s)")
    if timeout is not None and drain is not None and not drain + FLUSH_RESERVE <= timeout:
        out.append(f"ONLYCHAT_DRAIN_WINDOW ({drain:g}s) must be at least {FLUSH_RESERVE}s below "
                   f"ONLYCHAT_SHUTDOWN_TIMEOUT ({timeout:g}s): sockets close and the producer "
                   "flushes before the hard deadline (onlychat refuses to start otherwise)")
    return out


def check_scaling(rep: Report, target: str, docs: list[dict], dep: dict) -> None:
    """An HPA at 70% CPU owns the replica count; a PDB and a Service select the pods."""
    name = dep["metadata"]["name"]
    pod_labels = dep["spec"]["template"]["metadata"].get("labels") or {}
    fails = []
    hpas = [h for h in by_kind(docs, "HorizontalPodAutoscaler")
            if h["spec"]["scaleTargetRef"].get("name") == name]
    cpu = [m["resource"]["target"].get("averageUtilization") for h in hpas
           for m in h["spec"].get("metrics") or []
           if m.get("type") == "Resource" and m["resource"]["name"] == "cpu"]
    if cpu != [70]:
        fails.append(f"needs one HPA with a 70% CPU target (found {cpu or 'none'})")
    if hpas and "replicas" in dep["spec"]:
        fails.append("sets spec.replicas although an HPA owns the count (every apply would reset it)")
    if not any(labels_match(p["spec"].get("selector", {}).get("matchLabels"), pod_labels)
               for p in by_kind(docs, "PodDisruptionBudget")):
        fails.append("no PodDisruptionBudget selects its pods")
    if not any(labels_match(s["spec"].get("selector"), pod_labels) for s in by_kind(docs, "Service")):
        fails.append("no Service selects its pods")
    for f in fails:
        rep.fail("k8s-policy", f"{target}: Deployment {name}: {f}")


def check_secrets(rep: Report, target: str, docs: list[dict]) -> None:
    """No secret values in the repository: no Secret objects, no literal secret-looking env."""
    fails = [f"{obj_name(d)} is rendered: secrets are created with kubectl, never committed"
             for d in by_kind(docs, "Secret")]
    for d in by_kind(docs, "ConfigMap"):
        fails += [f"{obj_name(d)}: key {k} looks like a secret; use the Secret onlychat-secrets"
                  for k in d.get("data") or {} if SECRET_NAME.search(k) and not k.endswith(".json")]
    for d in docs:
        pod = ((d.get("spec") or {}).get("template") or {}).get("spec") or {}
        for c in pod.get("containers") or []:
            fails += [f"{obj_name(d)}: env {v['name']} has a literal value; use secretKeyRef"
                      for v in c.get("env") or [] if SECRET_NAME.search(v["name"]) and "value" in v]
    for f in fails:
        rep.fail("k8s-policy", f"{target}: {f}")


def check_edge(rep: Report, target: str, docs: list[dict], cluster_docs: list[dict]) -> None:
    """Ingress (WebSocket timeouts, TLS from a cert-manager Certificate) and its issuers."""
    fails = []
    services = {s["metadata"]["name"]: s for s in by_kind(docs, "Service")}
    certs = {c["spec"]["secretName"]: c for c in by_kind(docs, "Certificate")}
    issuers = {(d["kind"], d["metadata"]["name"]) for d in docs + cluster_docs
               if d.get("kind") in ("Issuer", "ClusterIssuer")}
    ingresses = by_kind(docs, "Ingress")
    if not ingresses:
        fails.append("no Ingress")
    for ing in ingresses:
        notes = ing["metadata"].get("annotations") or {}
        for key in ("proxy-read-timeout", "proxy-send-timeout"):
            value = notes.get(f"nginx.ingress.kubernetes.io/{key}", "0")
            if not (value.isdigit() and int(value) >= 3600):
                fails.append(f"{obj_name(ing)}: {key} must be >= 3600 s for idle WebSockets (is {value})")
        tls = ing["spec"].get("tls") or []
        if not tls:
            fails.append(f"{obj_name(ing)}: no TLS")
        for t in tls:
            if t.get("secretName") not in certs:
                fails.append(f"{obj_name(ing)}: TLS secret {t.get('secretName')} is not issued by a Certificate")
        for rule in ing["spec"].get("rules") or []:
            for path in rule["http"]["paths"]:
                svc = path["backend"]["service"]
                ports = [p.get("name") for p in services.get(svc["name"], {}).get("spec", {}).get("ports", [])]
                if svc["port"].get("name") not in ports and svc["port"].get("number") is None:
                    fails.append(f"{obj_name(ing)}: {path['path']} -> {svc['name']}:{svc['port']} is no Service port")
    for cert in certs.values():
        ref = cert["spec"]["issuerRef"]
        if (ref.get("kind", "Issuer"), ref["name"]) not in issuers:
            fails.append(f"{obj_name(cert)}: issuer {ref.get('kind', 'Issuer')} {ref['name']} is not defined "
                         "here or in deploy/k8s/cluster")
    for f in fails:
        rep.fail("k8s-policy", f"{target}: {f}")


def check_monitoring(rep: Report, target: str, docs: list[dict]) -> None:
    """Migration Job, ServiceMonitor over the Services' ports, PrometheusRule, dashboard."""
    fails = []
    jobs = [j for j in by_kind(docs, "Job")
            if any("migrate" in (c.get("args") or []) + (c.get("command") or [])
                   for c in j["spec"]["template"]["spec"]["containers"])]
    if not jobs:
        fails.append("no Job runs `onlychat migrate`")
    for job in jobs:
        for c in job["spec"]["template"]["spec"]["containers"]:
            fails += [f"{obj_name(job)}: {p}" for p in resource_problems(c)]
    monitors = by_kind(docs, "ServiceMonitor")
    if not monitors:
        fails.append("no ServiceMonitor")
    for sm in monitors:
        selected = [s for s in by_kind(docs, "Service")
                    if labels_match(sm["spec"]["selector"].get("matchLabels"), s["metadata"].get("labels") or {})]
        if not selected:
            fails.append(f"{obj_name(sm)} selects no Service")
        for endpoint in sm["spec"]["endpoints"]:
            for s in selected:
                if endpoint.get("port") not in [p.get("name") for p in s["spec"]["ports"]]:
                    fails.append(f"{obj_name(sm)}: {obj_name(s)} has no port named {endpoint.get('port')}")
    if not by_kind(docs, "PrometheusRule"):
        fails.append("no PrometheusRule")
    if not any((d["metadata"].get("labels") or {}).get("grafana_dashboard") == "1"
               for d in by_kind(docs, "ConfigMap")):
        fails.append("no Grafana dashboard ConfigMap (label grafana_dashboard=1)")
    for f in fails:
        rep.fail("k8s-policy", f"{target}: {f}")


def check_k8s_policy(ctx: Ctx, rep: Report, rendered: dict[str, list[dict]]) -> None:
    cluster = rendered.get("deploy/k8s/cluster", [])
    for target, docs in rendered.items():
        if target == "deploy/k8s/cluster":
            continue
        deployments = {d["metadata"]["name"]: d for d in by_kind(docs, "Deployment")}
        for required in ("onlychat-gateway", "onlychat-node"):
            if required not in deployments:
                rep.fail("k8s-policy", f"{target}: no Deployment {required}")
            else:
                guarded(rep, "k8s-policy", check_scaling, rep, target, docs, deployments[required])
        for dep in deployments.values():
            guarded(rep, "k8s-policy", check_workload, rep, target, docs, dep)
        guarded(rep, "k8s-policy", check_secrets, rep, target, docs)
        guarded(rep, "k8s-policy", check_edge, rep, target, docs, cluster)
        guarded(rep, "k8s-policy", check_monitoring, rep, target, docs)


# ------------------------------------------------------------------------------------------
# docker-compose.yml and the configs it mounts
# ------------------------------------------------------------------------------------------

def load_compose(ctx: Ctx, rep: Report) -> dict | None:
    path = ctx.root / "docker-compose.yml"
    try:
        data = load_yaml(path.read_text())  # resolves anchors and `<<` merge keys
    except (OSError, yaml.YAMLError) as e:
        rep.fail("compose", f"docker-compose.yml does not load: {e}")
        return None
    if not isinstance(data, dict):
        rep.fail("compose", "docker-compose.yml is not a mapping")
        return None
    return data


def check_compose(ctx: Ctx, rep: Report) -> None:
    data = load_compose(ctx, rep)
    if data is None:
        return
    schema = json.loads((ctx.schemas / "compose-spec.json").read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    problems = schema_errors(validator, data, limit=10)
    for p in problems:
        rep.fail("compose", f"docker-compose.yml (Compose Specification): {p}")
    refs = compose_reference_problems(ctx, data)
    for p in refs:
        rep.fail("compose", f"docker-compose.yml: {p}")
    if not problems and not refs:
        rep.ok("compose", f"docker-compose.yml: {len(data.get('services', {}))} services valid against "
                          "compose-spec.json; services, volumes, files and endpoints resolve")


def compose_reference_problems(ctx: Ctx, data: dict) -> list[str]:
    services = data.get("services") or {}
    volumes = set((data.get("volumes") or {}).keys())
    out = []
    for name, svc in services.items():
        deps = svc.get("depends_on") or []
        for dep in deps if isinstance(deps, list) else deps.keys():
            if dep not in services:
                out.append(f"service {name} depends_on unknown service {dep}")
        for vol in svc.get("volumes") or []:
            source = vol.split(":")[0] if isinstance(vol, str) else vol.get("source", "")
            if source.startswith((".", "/")):
                if source.startswith(".") and not (ctx.root / source).exists():
                    out.append(f"service {name} mounts {source}, which does not exist")
            elif source and source not in volumes:
                out.append(f"service {name} uses volume {source}, not declared under volumes:")
        build = svc.get("build")
        if isinstance(build, dict) and build.get("dockerfile"):
            if not (ctx.root / build.get("context", ".") / build["dockerfile"]).is_file():
                out.append(f"service {name} builds from {build['dockerfile']}, which does not exist")
        out += onlychat_service_problems(name, svc, services)
    return out


def onlychat_service_problems(name: str, svc: dict, services: dict) -> list[str]:
    """Every onlychat process names itself for tracing and sends OTLP to a compose service."""
    env = svc.get("environment") or {}
    if not isinstance(env, dict) or not any(k.startswith("ONLYCHAT_") for k in env):
        return []
    out = []
    if not env.get("OTEL_SERVICE_NAME"):
        out.append(f"service {name}: no OTEL_SERVICE_NAME")
    endpoint = str(env.get("OTEL_EXPORTER_OTLP_ENDPOINT", ""))
    host = re.sub(r"^\w+://([^:/]+).*", r"\1", endpoint)
    if not endpoint or host not in services:
        out.append(f"service {name}: OTEL_EXPORTER_OTLP_ENDPOINT {endpoint!r} is not a compose service")
    return out


def listen_ports(services: dict) -> dict[str, str]:
    out = {}
    for name, svc in services.items():
        env = svc.get("environment") or {}
        if isinstance(env, dict) and env.get("ONLYCHAT_LISTEN"):
            out[name] = str(env["ONLYCHAT_LISTEN"]).rsplit(":", 1)[-1]
    return out


def check_prometheus_config(ctx: Ctx, rep: Report) -> None:
    path = ctx.deploy / "compose" / "prometheus.yml"
    res = run([ctx.promtool, "check", "config", str(path)])
    if res.returncode != 0:
        rep.fail("prometheus", f"promtool check config deploy/compose/prometheus.yml:{tail(res.stdout + res.stderr)}")
        return
    compose = load_compose(ctx, Report(quiet=True)) or {}
    services = compose.get("services") or {}
    ports = listen_ports(services)
    config = load_yaml(path.read_text())
    fails, onlychat_targets = [], 0
    for job in config.get("scrape_configs") or []:
        for static in job.get("static_configs") or []:
            for target in static.get("targets") or []:
                host, _, port = target.rpartition(":")
                if host != "localhost" and host not in services:
                    fails.append(f"scrape target {target} is not a compose service")
                elif host in ports:
                    onlychat_targets += 1
                    if port != ports[host]:
                        fails.append(f"scrape target {target}: {host} listens on {ports[host]}")
    missing = sorted(set(ports) - {t.rpartition(":")[0] for j in config.get("scrape_configs") or []
                                    for s in j.get("static_configs") or [] for t in s.get("targets") or []})
    fails += [f"onlychat service {m} is not scraped" for m in missing]
    for f in fails:
        rep.fail("prometheus", f"deploy/compose/prometheus.yml: {f}")
    if not fails:
        rep.ok("prometheus", f"deploy/compose/prometheus.yml: promtool check config passed; "
                             f"{onlychat_targets} onlychat targets match the compose services")


def check_otel(ctx: Ctx, rep: Report) -> None:
    path = ctx.deploy / "compose" / "otel-collector.yaml"
    try:
        config = load_yaml(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        rep.fail("otel", f"deploy/compose/otel-collector.yaml does not load: {e}")
        return
    fails = []
    sections = {s: (config.get(s) or {}) for s in ("receivers", "processors", "exporters", "extensions")}
    for required in ("receivers", "exporters"):
        if not sections[required]:
            fails.append(f"no {required}")
    pipelines = ((config.get("service") or {}).get("pipelines")) or {}
    if "traces" not in pipelines:
        fails.append("no service.pipelines.traces")
    for pname, pipe in pipelines.items():
        for kind in ("receivers", "processors", "exporters"):
            for comp in pipe.get(kind) or []:
                if comp not in sections[kind]:
                    fails.append(f"pipeline {pname} uses {kind[:-1]} {comp}, which is not defined")
        for kind in ("receivers", "exporters"):
            if not pipe.get(kind):
                fails.append(f"pipeline {pname} has no {kind}")
    for ext in (config.get("service") or {}).get("extensions") or []:
        if ext not in sections["extensions"]:
            fails.append(f"service uses extension {ext}, which is not defined")
    protocols = ((sections["receivers"].get("otlp") or {}).get("protocols")) or {}
    if "http" not in protocols or "grpc" not in protocols:
        fails.append("receiver otlp must accept both http (4318) and grpc (4317)")
    elif not str((protocols["http"] or {}).get("endpoint", "")).endswith(":4318"):
        fails.append("receiver otlp http must listen on :4318 (OTEL_EXPORTER_OTLP_ENDPOINT in compose)")
    for f in fails:
        rep.fail("otel", f"deploy/compose/otel-collector.yaml: {f}")
    if not fails:
        rep.ok("otel", f"deploy/compose/otel-collector.yaml: pipelines {', '.join(pipelines)} "
                       "reference defined receivers, processors and exporters")


def check_grafana_provisioning(ctx: Ctx, rep: Report) -> None:
    base = ctx.deploy / "compose" / "grafana" / "provisioning"
    compose = load_compose(ctx, Report(quiet=True)) or {}
    services = compose.get("services") or {}
    mounts = [str(v) for v in (services.get("grafana") or {}).get("volumes") or []]
    fails, count = [], 0
    for path in sorted(base.glob("*/*.y*ml")):
        count += 1
        rel = path.relative_to(ctx.root)
        try:
            doc = load_yaml(path.read_text()) or {}
        except yaml.YAMLError as e:
            fails.append(f"{rel} does not load: {e}")
            continue
        if doc.get("apiVersion") != 1:
            fails.append(f"{rel}: apiVersion must be 1")
        for ds in doc.get("datasources") or []:
            host = re.sub(r"^\w+://([^:/]+).*", r"\1", str(ds.get("url", "")))
            if not ds.get("type") or host not in services:
                fails.append(f"{rel}: data source {ds.get('name')} must have a type and a compose service URL")
        for prov in doc.get("providers") or []:
            where = (prov.get("options") or {}).get("path", "")
            if not any(m.split(":")[1].startswith(where) for m in mounts if m.count(":") >= 1) or not where:
                fails.append(f"{rel}: provider path {where!r} is not where docker-compose.yml mounts a dashboard")
    if not {p.parent.name for p in base.glob("*/*.y*ml")} >= {"datasources", "dashboards"}:
        fails.append("deploy/compose/grafana/provisioning needs datasources/ and dashboards/ files")
    for f in fails:
        rep.fail("grafana", f)
    if not fails:
        rep.ok("grafana", f"provisioning: {count} files load; data source and dashboard path match the compose file")


# ------------------------------------------------------------------------------------------
# PromQL: dashboard queries and the PrometheusRule
# ------------------------------------------------------------------------------------------

def dashboard_queries(ctx: Ctx, rep: Report) -> list[tuple[str, str]] | None:
    """(where, PromQL) of every panel target and query variable; None if the JSON is broken."""
    path = ctx.deploy / "grafana" / "onlychat-dashboard.json"
    try:
        dash = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        rep.fail("grafana", f"deploy/grafana/onlychat-dashboard.json is not JSON: {e}")
        return None
    out = []

    def walk(panels):
        for p in panels or []:
            for t in p.get("targets") or []:
                if t.get("expr"):
                    out.append((f"panel {p.get('id')} {p.get('title')!r} {t.get('refId')}", t["expr"]))
            walk(p.get("panels"))
    walk(dash.get("panels"))
    for var in (dash.get("templating") or {}).get("list") or []:
        query = var.get("query")
        query = query.get("query") if isinstance(query, dict) else query
        if var.get("type") == "query" and isinstance(query, str):
            m = re.fullmatch(r"\s*(?:label_values|query_result)\((.*?)(?:,\s*\w+)?\)\s*", query)
            expr = m.group(1) if m else query
            if "(" in query and not re.fullmatch(r"label_values\(\s*\w+\s*\)", query.strip()):
                out.append((f"variable {var.get('name')}", expr))
    ids = [p.get("id") for p in dash.get("panels") or []]
    if len(ids) != len(set(ids)) or not dash.get("uid"):
        rep.fail("grafana", "onlychat-dashboard.json: panel ids must be unique and the dashboard needs a uid")
    return out


def grafana_to_promql(expr: str) -> str:
    expr = re.sub(r"\$__(rate_interval|interval|range)|\$\{__(rate_interval|interval|range)\}", "5m", expr)
    return re.sub(r"\$\{?\w+\}?", "x", expr)


def promtool_rules(ctx: Ctx, groups: list[dict]) -> subprocess.CompletedProcess:
    with tempfile.NamedTemporaryFile("w", suffix=".rules.yml", delete=False) as f:
        yaml.safe_dump({"groups": groups}, f, sort_keys=False)
    try:
        return run([ctx.promtool, "check", "rules", f.name])
    finally:
        Path(f.name).unlink()


def check_dashboard(ctx: Ctx, rep: Report) -> list[tuple[str, str]]:
    queries = dashboard_queries(ctx, rep)
    if queries is None:
        return []
    rules = [{"record": f"dashboard:query_{i}", "expr": grafana_to_promql(e)} for i, (_, e) in enumerate(queries)]
    res = promtool_rules(ctx, [{"name": "dashboard", "rules": rules}])
    if res.returncode != 0:
        text = res.stdout + res.stderr
        for i, (where, expr) in enumerate(queries):
            if f"dashboard:query_{i}" in text or f"rule {i + 1}" in text:
                rep.fail("grafana", f"onlychat-dashboard.json {where}: not valid PromQL: {expr}")
        rep.fail("grafana", f"onlychat-dashboard.json: promtool rejects its queries:{tail(text)}")
    else:
        rep.ok("grafana", f"onlychat-dashboard.json: JSON parses; {len(queries)} queries are valid PromQL (promtool)")
    return queries


def prometheus_rules(rendered: dict[str, list[dict]]) -> dict[str, dict]:
    """The distinct PrometheusRule specs of every render (the overlays share the base's)."""
    out: dict[str, dict] = {}
    for target, docs in rendered.items():
        for d in by_kind(docs, "PrometheusRule"):
            key = json.dumps(d["spec"], sort_keys=True)
            out.setdefault(key, {"where": f"{target}: {obj_name(d)}", "spec": d["spec"]})
    return out


def check_rules(ctx: Ctx, rep: Report, rendered: dict[str, list[dict]]) -> list[tuple[str, str]]:
    exprs = []
    anchors = {slug(m) for m in re.findall(r"^#+\s+(.*)$", read_text(ctx.root / "docs" / "operations.md"), re.M)}
    for rule in prometheus_rules(rendered).values():
        res = promtool_rules(ctx, rule["spec"]["groups"])
        if res.returncode != 0:
            rep.fail("rules", f"{rule['where']}: promtool check rules failed:{tail(res.stdout + res.stderr)}")
        else:
            rep.ok("rules", f"{rule['where']}: {res.stdout.strip().splitlines()[-1].strip()} (promtool check rules)")
        for group in rule["spec"]["groups"]:
            for r in group["rules"]:
                exprs.append((f"rule {r.get('alert') or r.get('record')}", str(r["expr"])))
                if "alert" not in r:
                    continue
                notes, labels = r.get("annotations") or {}, r.get("labels") or {}
                if not labels.get("severity") or not notes.get("summary") or not notes.get("description"):
                    rep.fail("rules", f"alert {r['alert']}: needs labels.severity and summary/description annotations")
                runbook = notes.get("runbook", "")
                if not runbook.startswith("docs/operations.md#") or runbook.split("#", 1)[1] not in anchors:
                    rep.fail("rules", f"alert {r['alert']}: runbook {runbook!r} is not a heading in docs/operations.md")
    return exprs


def read_text(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


# ------------------------------------------------------------------------------------------
# metric names: what the PromQL uses against what crates/ exports
# ------------------------------------------------------------------------------------------

def exported_metrics(crates: Path) -> tuple[dict[str, str], bool]:
    """name -> counter|gauge|histogram from metrics::{counter,gauge,histogram}! calls (string
    literals or `const NAME: &str = "onlychat_..."`), and whether histogram buckets are set."""
    consts, calls, buckets = {}, [], False
    for path in crates.rglob("*.rs"):
        if "target" in path.parts:
            continue
        text = path.read_text(errors="replace")
        buckets = buckets or "set_buckets" in text
        consts.update(re.findall(r'const\s+(\w+)\s*:\s*&(?:\'static\s+)?str\s*=\s*"(onlychat_\w+)"', text))
        calls += re.findall(r'\b(counter|gauge|histogram)!\s*\(\s*("onlychat_\w+"|\w+)', text)
    names = {}
    for kind, arg in calls:
        name = arg.strip('"') if arg.startswith('"') else consts.get(arg)
        if name:
            names[name] = kind
    return names, buckets


def used_metrics(expr: str) -> set[str]:
    expr = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)  # label values
    return set(re.findall(r"(?<![\w:])onlychat_[a-zA-Z0-9_]+(?![\w:])", expr))


def check_metric_names(ctx: Ctx, rep: Report, queries: list[tuple[str, str]], recorded: set[str]) -> None:
    exported, buckets = exported_metrics(ctx.crates)
    series = {}
    for name, kind in exported.items():
        if kind == "histogram":
            series.update({f"{name}{s}": name for s in ("_bucket", "_sum", "_count")})
        else:
            series[name] = name
    missing: dict[str, list[str]] = {}
    bucket_users = []
    for where, expr in queries:
        for name in used_metrics(expr):
            if name not in series:
                missing.setdefault(name, []).append(where)
            elif name.endswith("_bucket"):
                bucket_users.append(name)
        for name in set(re.findall(r"(?<![\w:])onlychat:[\w:]+", expr)) - recorded:
            rep.fail("metrics", f"{where}: recording rule {name} is used but not defined")
    for name, wheres in sorted(missing.items()):
        hint = " (a histogram: use _bucket/_sum/_count)" if exported.get(name) == "histogram" else ""
        rep.fail("metrics", f"{name} is not exported by crates/{hint}; used by {'; '.join(sorted(set(wheres))[:4])}")
    if bucket_users and not buckets:
        rep.fail("metrics", "histogram buckets are queried but the exporter sets none (PrometheusBuilder "
                            "set_buckets*), so it would render summaries with no _bucket series")
    if not missing:
        rep.ok("metrics", f"{len(queries)} expressions use only metrics exported by crates/ "
                          f"({len(exported)} onlychat_* metrics found there)")


# ------------------------------------------------------------------------------------------
# the whole check, and the self-test
# ------------------------------------------------------------------------------------------

def guarded(rep: Report, name: str, fn, *args, default=None):
    """Runs one check; a file too malformed for it (a missing or mistyped field, which the
    schema checks report on their own) is a failure of that check, not a crash."""
    try:
        return fn(*args)
    except (KeyError, TypeError, AttributeError, IndexError, ValueError) as e:
        rep.fail(name, f"could not finish ({type(e).__name__}: {e}); a file is malformed, see above")
        return default


def check_all(ctx: Ctx, rep: Report, only: set[str] | None = None) -> None:
    def want(name: str) -> bool:
        return only is None or name in only
    rendered = render(ctx, rep) if want("k8s") or want("rules") or want("metrics") else {}
    if want("k8s"):
        guarded(rep, "k8s-schema", check_k8s_schemas, ctx, rep, rendered)
        guarded(rep, "k8s-policy", check_k8s_policy, ctx, rep, rendered)
    if want("compose"):
        guarded(rep, "compose", check_compose, ctx, rep)
        guarded(rep, "prometheus", check_prometheus_config, ctx, rep)
        guarded(rep, "otel", check_otel, ctx, rep)
        guarded(rep, "grafana", check_grafana_provisioning, ctx, rep)
    if want("metrics") or want("rules"):
        queries = guarded(rep, "grafana", check_dashboard, ctx, rep, default=[])
        rules = guarded(rep, "rules", check_rules, ctx, rep, rendered, default=[])
        recorded = {r.get("record") for spec in prometheus_rules(rendered).values()
                    for g in spec["spec"].get("groups") or [] for r in g.get("rules") or []}
        guarded(rep, "metrics", check_metric_names, ctx, rep, queries + rules, recorded)


# (what it proves, file, text, replacement, which checks, a word the failure must contain)
MUTATIONS = [
    ("a misspelled Deployment field", "deploy/k8s/base/chat-node.yaml",
     "  revisionHistoryLimit: 10\n", "  replicass: 2\n  revisionHistoryLimit: 10\n", "k8s", "replicass"),
    ("a misspelled container field", "deploy/k8s/base/gateway.yaml",
     "          readinessProbe:", "          readinesProbe:", "k8s", "readinesProbe"),
    ("a misspelled Certificate field", "deploy/k8s/base/certificate.yaml",
     "  secretName: onlychat-tls", "  secretNmae: onlychat-tls", "k8s", "secretNmae"),
    ("a misspelled ClusterIssuer field", "deploy/k8s/cluster/cluster-issuer.yaml",
     "    email: ops@example.com", "    emial: ops@example.com", "k8s", "emial"),
    ("a misspelled ServiceMonitor field", "deploy/k8s/base/servicemonitor.yaml",
     "      interval: 15s", "      intervall: 15s", "k8s", "intervall"),
    ("a misspelled PrometheusRule field", "deploy/k8s/base/prometheusrule.yaml",
     "      interval: 30s", "      intervals: 30s", "k8s", "intervals"),
    ("a kind with no schema", "deploy/k8s/base/pdb.yaml", "\nspec:\n",
     "\nspec:\n", "k8s", "no schema"),  # the text is appended below
    ("a Secret with values", "deploy/k8s/base/pdb.yaml", "\nspec:\n", "\nspec:\n", "k8s", "Secret"),
    ("grace period too short for preStop + shutdown", "deploy/k8s/base/chat-node.yaml",
     "terminationGracePeriodSeconds: 40", "terminationGracePeriodSeconds: 20", "k8s", "terminationGracePeriodSeconds"),
    ("drain window not below the shutdown timeout", "deploy/k8s/base/kustomization.yaml",
     "ONLYCHAT_DRAIN_WINDOW=10s", "ONLYCHAT_DRAIN_WINDOW=30s", "k8s", "ONLYCHAT_DRAIN_WINDOW"),
    ("a rollout that may take pods down", "deploy/k8s/base/chat-node.yaml",
     "maxUnavailable: 0", "maxUnavailable: 1", "k8s", "maxUnavailable"),
    ("an Ingress without WebSocket timeouts", "deploy/k8s/base/ingress.yaml",
     'proxy-read-timeout: "3600"', 'proxy-read-timeout: "60"', "k8s", "proxy-read-timeout"),
    ("a broken kustomization", "deploy/k8s/overlays/dev/kustomization.yaml",
     "  - ../../base\n", "  - ../../bsae\n", "k8s", "kustomize build"),
    ("a misspelled compose key", "docker-compose.yml",
     "    stop_grace_period: 30s", "    stop_grace_periode: 30s", "compose", "stop_grace_periode"),
    ("a compose dependency on no service", "docker-compose.yml",
     "      - jaeger\n", "      - jaegre\n", "compose", "jaegre"),
    ("a misspelled Prometheus config key", "deploy/compose/prometheus.yml",
     "  scrape_interval: 15s", "  scrape_intervall: 15s", "compose", "promtool check config"),
    ("an undefined collector exporter", "deploy/compose/otel-collector.yaml",
     "exporters: [otlp/jaeger, debug]", "exporters: [otlp/jaegr, debug]", "compose", "otlp/jaegr"),
    ("a Grafana data source on no service", "deploy/compose/grafana/provisioning/datasources/prometheus.yaml",
     "http://prometheus:9090", "http://promethues:9090", "compose", "data source"),
    ("a dashboard that is not JSON", "deploy/grafana/onlychat-dashboard.json",
     '"uid": "onlychat-overview",', '"uid": "onlychat-overview",,', "metrics", "not JSON"),
    ("a dashboard metric the code does not export", "deploy/grafana/onlychat-dashboard.json",
     "onlychat_frames_in_total", "onlychat_frame_in_total", "metrics", "onlychat_frame_in_total"),
    ("a dashboard query that is not PromQL", "deploy/grafana/onlychat-dashboard.json",
     "sum(onlychat_connections{", "sum(onlychat_connections{{", "metrics", "PromQL"),
    ("an alert metric the code does not export", "deploy/k8s/base/prometheusrule.yaml",
     "onlychat_redis_errors_total", "onlychat_redis_error_total", "metrics", "onlychat_redis_error_total"),
    ("an alert that is not PromQL", "deploy/k8s/base/prometheusrule.yaml",
     "expr: sum(onlychat_connections)", "expr: sum(onlychat_connections", "rules", "promtool check rules"),
    ("an alert whose runbook is missing", "deploy/k8s/base/prometheusrule.yaml",
     "docs/operations.md#onlychatnodefull", "docs/operations.md#onlychatnodeful", "rules", "#onlychatnodeful'"),
]
EXTRA_DOCS = {
    "a kind with no schema": "---\napiVersion: example.com/v1\nkind: Frobnicator\nmetadata:\n  name: x\n",
    "a Secret with values": "---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: leaked\n"
                            "stringData:\n  ONLYCHAT_JWT_SECRET: not-a-real-secret\n",
}


def fresh_copy(ctx: Ctx, copy: Path) -> Ctx:
    """deploy/, docker-compose.yml and docs/operations.md copied to `copy`; crates/ stays put."""
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(ctx.deploy, copy / "deploy")
    for f in ("docker-compose.yml", "docs/operations.md"):
        if (ctx.root / f).exists():
            (copy / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(ctx.root / f, copy / f)
    sub = Ctx.__new__(Ctx)
    sub.__dict__.update(ctx.__dict__, root=copy, crates=ctx.crates)
    return sub


def self_test(ctx: Ctx) -> int:
    """Each mutation must make its check fail with a message naming what is wrong, and that
    failure must not be there without the mutation."""
    failed = 0
    with tempfile.TemporaryDirectory(prefix="check-deploy-") as tmp:
        copy = Path(tmp) / "tree"
        baseline: dict[str, set[str]] = {}
        for checks in sorted({m[4] for m in MUTATIONS}):
            rep = Report(quiet=True)
            check_all(fresh_copy(ctx, copy), rep, only={checks})
            baseline[checks] = set(rep.failures)
        for what, rel, old, new, checks, expect in MUTATIONS:
            sub = fresh_copy(ctx, copy)
            target = copy / rel
            text = target.read_text()
            if old not in text:
                print(f"  FAIL  self-test: {what}: {rel} no longer contains {old.strip()!r}; update MUTATIONS")
                failed += 1
                continue
            text = text.replace(old, new, 1) + EXTRA_DOCS.get(what, "")
            target.write_text(text)
            rep = Report(quiet=True)
            check_all(sub, rep, only={checks})
            hits = [f for f in rep.failures if expect in f and f not in baseline[checks]]
            if hits:
                print(f"  ok    self-test: {what} -> {first_line(hits[0])}")
            else:
                failed += 1
                got = first_line(rep.failures[0]) if rep.failures else "no failure at all"
                print(f"  FAIL  self-test: {what} was not caught (wanted {expect!r}; got: {got})")
    print(f"self-test: {len(MUTATIONS) - failed} of {len(MUTATIONS)} mutations caught")
    return 1 if failed else 0


def first_line(text: str, width: int = 150) -> str:
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 3] + "..."


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True)
    parser.add_argument("--crates", help="where the metric names come from [ROOT/crates]")
    parser.add_argument("--kustomize", required=True)
    parser.add_argument("--promtool", required=True)
    parser.add_argument("--schemas", required=True, help="dir with compose-spec.json and crds/*/")
    parser.add_argument("--k8s-versions", default="1.30 1.37")
    parser.add_argument("--self-test", action="store_true")
    args = parser.parse_args()
    ctx = Ctx(args, Path(args.root).resolve())
    start = time.monotonic()
    if args.self_test:
        print("check-deploy: self-test (each check must fail on a broken copy)")
        return self_test(ctx)
    rep = Report()
    check_all(ctx, rep)
    took = time.monotonic() - start
    if rep.failures:
        print(f"check-deploy: {len(rep.failures)} problem(s) found in {took:.1f}s:", file=sys.stderr)
        for f in rep.failures:
            print(f"  - {first_line(f, 400)}", file=sys.stderr)
        return 1
    print(f"check-deploy: all checks passed in {took:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
