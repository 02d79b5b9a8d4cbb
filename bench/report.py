#!/usr/bin/env python3
"""Turns the loadgen JSON reports of one bench/run.sh run into docs/benchmarks.md.

usage: bench/report.py RESULTS_DIR [--size default|full]  (markdown on stdout)
Hand-written analysis in bench/analysis.md is appended as is.
"""
import glob
import json
import os
import platform
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ORDER = ["raw", "onlychat-standalone", "onlychat-cluster", "centrifugo", "sockudo", "socketio",
         "centrifugo-cluster", "sockudo-cluster", "socketio-cluster"]


def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True, cwd=ROOT, timeout=30).stdout.strip()
    except Exception:  # noqa: BLE001 - a missing tool only blanks one line of the header
        return ""


def load(results):
    runs = {}
    for path in glob.glob(os.path.join(results, "*.json")):
        system, scenario, _ = os.path.basename(path).rsplit(".", 2)
        with open(path) as f:
            runs[(system, scenario)] = json.load(f)
        cmd = path[: -len(".json")] + ".cmd"
        if os.path.exists(cmd):
            runs[(system, scenario)]["_cmd"] = open(cmd).read().strip()
    return runs


def machine():
    cpu = sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2").strip()
    mem = sh("awk '/MemTotal/ {printf \"%.0f GiB\", $2/1048576}' /proc/meminfo")
    return f"{os.cpu_count()} cores ({cpu}), {mem}, Linux {platform.release()}"


def fmt(x, digits=1):
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:,.{digits}f}"
    return f"{x:,}"


def lat(r, key):
    l = r.get("latency_ms")
    return l[key] if l else None


def ratio(a, b, higher_better=True):
    if a is None or b is None or a == 0 or b == 0:
        return "-"
    return f"{(a / b if higher_better else b / a):.2f}x"


def systems_of(runs, scenario):
    present = {s for (s, sc) in runs if sc == scenario}
    return [s for s in ORDER if s in present] + sorted(present - set(ORDER))


SCENARIOS = [
    ("idle", "Idle connections", [
        ("held", lambda r: fmt(r["connections"]["established"])),
        ("of", lambda r: fmt(r["connections"]["attempted"])),
        ("connects/s", lambda r: fmt(r["connect_per_sec"], 0)),
        ("server RSS KiB/conn", lambda r: fmt((r.get("server_rss") or {}).get("per_connection_kib"), 2)),
        ("errors", lambda r: fmt(sum(r["errors"].values()) + sum(r["connections"]["errors"].values()))),
    ], lambda r: (r.get("server_rss") or {}).get("per_connection_kib"), False, "server RSS per connection"),
    # Every system keeps up with the offered rate here (deliveries/s are equal), so the
    # comparison is on latency at that rate.
    ("broadcast", "Broadcast", None, lambda r: lat(r, "p99"), False, "p99 send-to-deliver"),
    ("broadcast-peak", "Broadcast at five times the rate (saturation)", None, lambda r: lat(r, "p99"), False,
     "p99 send-to-deliver"),
    ("dm", "1:1 (dm)", None, lambda r: lat(r, "p99"), False, "p99 send-to-deliver"),
    ("cluster", "Cluster (2 instances), 100 rooms x 20 members, 1,000 msg/s in", None,
     lambda r: lat(r, "p99"), False, "p99 send-to-deliver"),
    ("reconnect-storm", "Reconnect storm", [
        ("clients", lambda r: fmt(r["storm"]["clients"])),
        ("back", lambda r: fmt(r["storm"]["back"])),
        ("99% back after ms", lambda r: fmt(r["storm"]["time_to_99pct_ms"], 0)),
        ("p50 ms", lambda r: fmt(lat(r, "p50"), 0)),
        ("max ms", lambda r: fmt(lat(r, "max"), 0)),
        ("errors", lambda r: ", ".join(f"{k} {v}" for k, v in r["errors"].items()) or "0"),
    ], lambda r: r["storm"]["time_to_99pct_ms"], False, "time until 99% back"),
    ("login-storm", "Login storm (onlychat only: the peers have no login)", None, None, False, ""),
]

MESSAGE_COLUMNS = [
    ("sockets", lambda r: fmt(r["connections"]["established"])),
    ("sent/s", lambda r: fmt(r["sent_per_sec"], 0)),
    ("deliveries/s", lambda r: fmt(r["deliveries_per_sec"], 0)),
    ("p50 ms", lambda r: fmt(lat(r, "p50"), 2)),
    ("p90 ms", lambda r: fmt(lat(r, "p90"), 2)),
    ("p99 ms", lambda r: fmt(lat(r, "p99"), 2)),
    ("p99.9 ms", lambda r: fmt(lat(r, "p999"), 2)),
    ("max ms", lambda r: fmt(lat(r, "max"), 1)),
    ("lost", lambda r: fmt(r["lost"])),
    ("dup", lambda r: fmt(r["duplicated"])),
]


def table(runs, scenario, columns):
    out = ["| system | " + " | ".join(c for c, _ in columns) + " |",
           "|---|" + "---:|" * len(columns)]
    for s in systems_of(runs, scenario):
        r = runs[(s, scenario)]
        out.append(f"| {s} | " + " | ".join(f(r) for _, f in columns) + " |")
    return out


def ratios(runs, scenario, metric, higher_better, what):
    systems = systems_of(runs, scenario)
    ours = [s for s in systems if s.startswith("onlychat")]
    if metric is None or not ours:
        return []
    out = [f"Ratio on {what} ({'higher' if higher_better else 'lower'} is better; above 1.00x means onlychat is ahead):", ""]
    for o in ours:
        for s in systems:
            if s.startswith("onlychat"):
                continue
            a, b = metric(runs[(o, scenario)]), metric(runs[(s, scenario)])
            label = "of the raw limit" if s == "raw" else f"vs {s}"
            out.append(f"- {o} {label}: {ratio(a, b, higher_better)}")
    return out + [""]


def main():
    results = sys.argv[1]
    size = sys.argv[sys.argv.index("--size") + 1] if "--size" in sys.argv else "default"
    runs = load(results)
    lines = [
        "# Benchmarks",
        "",
        "Every system runs the same scenario with the same client (`onlychat-loadgen`, one adapter",
        "per protocol) on the same machine in one `bench/run.sh` run; the client shares the 2 cores",
        "with the server. Regenerate with `bench/run.sh` (default size, about ten minutes) or",
        "`BENCH_SIZE=full bench/run.sh`; how each peer is set up is in `bench/peers/README.md`.",
        "",
        f"- machine: {machine()}",
        f"- onlychat: {sh('git rev-parse --short HEAD')}; {sh('rustc --version')}",
        f"- size: `{size}`; results: `{os.path.relpath(results, ROOT)}`",
    ]
    versions = sh("bench/peers.sh versions")
    if versions:
        lines.append("- peers: " + "; ".join(versions.splitlines()))
    lines.append("")
    for scenario, title, columns, metric, higher, what in SCENARIOS:
        if not systems_of(runs, scenario):
            continue
        lines += [f"## {title}", ""]
        if columns is None:
            columns = MESSAGE_COLUMNS
            if scenario == "login-storm":
                columns = next(c for name, _, c, *_ in SCENARIOS if name == "reconnect-storm")
        lines += table(runs, scenario, columns) + [""]
        lines += ratios(runs, scenario, metric, higher, what)
        cmds = [runs[(s, scenario)].get("_cmd") for s in systems_of(runs, scenario)]
        lines += ["Commands:", "", "```"] + [c for c in cmds if c] + ["```", ""]
    analysis = os.path.join(ROOT, "bench", "analysis.md")
    if os.path.exists(analysis):
        lines += [open(analysis).read().rstrip(), ""]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
