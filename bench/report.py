"""Turns the load generator's raw results of one bench/run into the table on stdout,
bench/results/latest.json (figures under the issue's key names), latest-detail.json (sizes,
versions, per-run detail) and latency.png (delivery latency distributions)."""

import argparse
import json
import pathlib

SERVERS = ["estuary-sqlite", "estuary-postgres", "synapse-sqlite", "synapse-postgres", "prosody"]
# One colour per server in every chart.
COLOURS = dict(zip(SERVERS, ["tab:blue", "tab:cyan", "tab:red", "tab:orange", "tab:green"]))

MATRIX = SERVERS[:4]
XMPP = ["estuary-sqlite", "estuary-postgres", "prosody"]
# (workload in latest.json, {raw workload feeding it: servers it applies to}, figures)
WORKLOADS = [
    ("matrix_messaging", {"matrix_messaging": MATRIX},
     ["events_per_s", "p50_ms", "p99_ms", "errors"]),
    # The same, paced (open loop) at a steady rate below each server's saturation rate.
    ("matrix_paced", {"matrix_paced": MATRIX},
     ["events_per_s", "p50_ms", "p99_ms", "errors"]),
    ("matrix_initial_sync", {"matrix_initial_sync": MATRIX},
     ["initial_sync_ms", "full_state_sync_ms", "errors"]),
    ("xmpp_messaging", {"xmpp_messaging": XMPP},
     ["messages_per_s", "p50_ms", "p99_ms", "errors"]),
    # Synapse has no c2s connections: only its idle RSS.
    ("idle_footprint", {"idle_rss": SERVERS, "idle_connections": XMPP},
     ["idle_rss_mb", "rss_per_conn_kb", "connections", "errors"]),
]
# The raw workload each figure comes from, where it matters for "n/a".
FIGURE_SOURCE = {"rss_per_conn_kb": "idle_connections", "connections": "idle_connections"}
# Which way is better, for the ratios.
HIGHER_IS_BETTER = {"events_per_s", "messages_per_s", "connections"}
PEERS = {
    "matrix_messaging": ["synapse-sqlite", "synapse-postgres"],
    "matrix_paced": ["synapse-sqlite", "synapse-postgres"],
    "matrix_initial_sync": ["synapse-sqlite", "synapse-postgres"],
    "xmpp_messaging": ["prosody"],
    "idle_footprint": ["synapse-sqlite", "synapse-postgres", "prosody"],
}


def load_raw(raw_dir):
    runs = {}
    for server in SERVERS:
        path = raw_dir / f"{server}.jsonl"
        if not path.exists():
            continue
        runs[server] = {}
        for line in path.read_text().splitlines():
            if line.strip():
                obj = json.loads(line)
                if obj["workload"] == "rss_after":
                    runs[server].setdefault("rss_after", {})[obj["after"]] = obj["rss_mb"]
                else:
                    runs[server][obj["workload"]] = obj
    return runs


def fmt(v):
    if v is None:
        return "none"
    if isinstance(v, float):
        if v >= 100:
            return f"{v:.0f}"
        if v >= 10:
            return f"{v:.1f}"
        return f"{v:.2f}"
    return str(v)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--raw", required=True, type=pathlib.Path)
    ap.add_argument("--meta", required=True, type=pathlib.Path)
    ap.add_argument("--out", required=True, type=pathlib.Path)
    args = ap.parse_args()
    runs = load_raw(args.raw)
    meta = json.loads(args.meta.read_text())

    latest, detail = {}, {"meta": meta}
    for name, raws, figures in WORKLOADS:
        latest[name], detail[name] = {}, {}
        for server in SERVERS:
            if server not in runs or not any(server in s for s in raws.values()):
                continue
            entry, det, failed = {}, {}, []
            for raw, applies in raws.items():
                if server not in applies:
                    continue
                r = runs[server].get(raw)
                if r is None:
                    failed.append(f"{raw}: no result")
                elif "failed" in r:
                    failed.append(f"{raw}: {r['failed']}")
                else:
                    for k, v in r.get("figures", {}).items():
                        if k == "errors" and "errors" in entry:
                            entry["errors"] += v
                        else:
                            entry[k] = v
                    det.update(r.get("detail", {}))
            if name == "idle_footprint" and "rss_after" in runs[server]:
                det["rss_mb_after_each_workload"] = runs[server]["rss_after"]
            if failed:
                entry["failed"] = "; ".join(failed)
            latest[name][server] = entry
            detail[name][server] = det

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "latest.json").write_text(json.dumps(latest, indent=2) + "\n")
    (args.out / "latest-detail.json").write_text(json.dumps(detail, indent=2) + "\n")

    # The table: one column per server; "n/a" where a workload does not apply to a server,
    # "FAILED" where it applies and did not complete, "-" where the server was not in this run.
    cols = SERVERS
    width = 18
    print()
    print(f"Benchmark ({meta['mode']}), {meta['date_utc']}, {meta['cores']} cores, {meta['cpu']}")
    print(f"{'':<34}" + "".join(f"{c:>{width}}" for c in cols))
    for name, raws, figures in WORKLOADS:
        print(name)
        for fig in figures:
            row = f"  {fig:<32}"
            for c in cols:
                source = FIGURE_SOURCE.get(fig)
                applies = raws[source] if source in raws else set().union(*raws.values())
                if c not in runs:
                    cell = "-"
                elif c not in applies:
                    cell = "n/a"
                else:
                    e = latest[name].get(c, {})
                    if fig in e:
                        cell = fmt(e[fig])
                    elif "failed" in e:
                        cell = "FAILED"
                    else:
                        cell = "n/a"
                row += f"{cell:>{width}}"
            print(row)
    for name, _, _ in WORKLOADS:
        for server, e in latest[name].items():
            if "failed" in e:
                print(f"FAILED {name} on {server}: {e['failed']}")

    # Ratios: Estuary's figure against each peer's, oriented so that > 1 means Estuary is better.
    print()
    print("Ratios (Estuary / peer, oriented so that > 1 means Estuary is better):")
    ratios = {}
    for name, _, figures in WORKLOADS:
        for est in ["estuary-sqlite", "estuary-postgres"]:
            for peer in PEERS[name]:
                a, b = latest[name].get(est, {}), latest[name].get(peer, {})
                for fig in figures:
                    # A paced workload's rate is the pace set, the same for every server.
                    if fig in ("errors", "connections") or (name, fig) == ("matrix_paced", "events_per_s"):
                        continue
                    x, y = a.get(fig), b.get(fig)
                    if not isinstance(x, (int, float)) or not isinstance(y, (int, float)) or not x or not y:
                        continue
                    r = x / y if fig in HIGHER_IS_BETTER else y / x
                    ratios.setdefault(name, {}).setdefault(f"{est} vs {peer}", {})[fig] = round(r, 2)
                    flag = "" if r >= 1 else "   <-- Estuary slower/heavier"
                    print(f"  {name:<20} {fig:<20} {est:>16} vs {peer:<16} {r:8.2f}x{flag}")
    detail["ratios"] = ratios
    (args.out / "latest-detail.json").write_text(json.dumps(detail, indent=2) + "\n")

    chart(detail, args.out / "latency.png", meta)


def chart(detail, path, meta):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib not installed: no chart)")
        return
    panels = [("matrix_messaging", "Matrix messaging at saturation: send to /sync arrival"),
              ("matrix_paced", "Matrix messaging paced: due time to /sync arrival"),
              ("xmpp_messaging", "XMPP messaging: send to arrival")]
    fig, axes = plt.subplots(1, len(panels), figsize=(19, 5))
    for ax, (name, title) in zip(axes, panels):
        drawn = False
        for server, det in detail.get(name, {}).items():
            q = det.get("latency_quantiles_ms")
            if not q or any(v is None for v in q):
                continue
            pct = [100.0 * i / (len(q) - 1) for i in range(len(q))]
            ax.plot(q, pct, label=server, color=COLOURS.get(server))
            drawn = True
        ax.set_title(title)
        ax.set_xlabel("latency (ms, log scale)")
        ax.set_ylabel("percentile")
        ax.grid(True, which="both", alpha=0.3)
        if drawn:
            ax.set_xscale("log")
            ax.legend()
        else:
            ax.text(0.5, 0.5, "no latency measured", ha="center", transform=ax.transAxes)
    fig.suptitle(f"Estuary benchmark ({meta['mode']} run, {meta['date_utc']}): "
                 "delivery latency distributions")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f"chart: {path}")


if __name__ == "__main__":
    main()
