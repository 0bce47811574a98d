#!/usr/bin/env python3
"""Turns bench/run.sh's raw measurements into a Markdown table and its JSON twin.

Standard library only. Inputs, in --raw DIR:
  KEY.RUN.wrk  the output of `wrk --latency` for one measured run of contender KEY
  KEY.RUN.cpu  the server's CPU time during that run, in clock ticks (utime + stime)
and --contenders FILE, one "KEY<TAB>LABEL" line per contender, in table order.

For each contender the table shows the median over its runs of req/s, p50, p99 and CPU
microseconds per request (each median taken on its own), and req/s as a ratio to the
baseline contender (nginx): the ratio within each round of interleaved runs, median over
rounds. Runs with non-2xx answers or socket errors are
flagged: their numbers do not measure proxying.
"""
import argparse
import datetime
import json
import os
import re
import statistics
import sys

UNIT_MS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60000.0}
COUNT_SUFFIX = {"": 1, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9}


def parse_wrk(text):
    """Parses one `wrk --latency` output."""
    m = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.M)
    n = re.search(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m)", text, re.M)
    if not m or not n:
        raise ValueError("not a wrk output (no Requests/sec or request count)")
    latency = {}
    for pct, value, unit in re.findall(r"^\s+(50|75|90|99)(?:\.\d+)?%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.M):
        latency[pct] = float(value) * UNIT_MS[unit]
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    return {
        "rps": float(m.group(1)),
        "requests": int(n.group(1)),
        "seconds": float(n.group(2)) * UNIT_MS[n.group(3)] / 1000.0,
        "p50_ms": latency.get("50"),
        "p90_ms": latency.get("90"),
        "p99_ms": latency.get("99"),
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": sum(int(x) for x in sock.groups()) if sock else 0,
    }


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def run_number(name, key):
    rest = name[len(key) + 1 : -len(".wrk")]
    return int(rest) if rest.isdigit() else None


def load(raw, key, clk_tck):
    runs = []
    for name in os.listdir(raw):
        if not (name.startswith(key + ".") and name.endswith(".wrk")):
            continue
        number = run_number(name, key)
        if number is None:
            continue
        with open(os.path.join(raw, name)) as f:
            r = parse_wrk(f.read())
        with open(os.path.join(raw, "%s.%d.cpu" % (key, number))) as f:
            ticks = int(f.read().strip())
        r["run"] = number
        r["cpu_ticks"] = ticks
        r["cpu_us_per_req"] = ticks * 1e6 / clk_tck / r["requests"] if r["requests"] else None
        runs.append(r)
    runs.sort(key=lambda r: r["run"])
    return runs


def fmt(value, pattern, missing="–"):
    return missing if value is None else pattern.format(value)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--raw", required=True)
    ap.add_argument("--contenders", required=True)
    ap.add_argument("--baseline", default="nginx")
    ap.add_argument("--clk-tck", type=int, default=os.sysconf("SC_CLK_TCK"))
    ap.add_argument("--machine", default=os.uname().machine)
    ap.add_argument("--nproc", default=str(os.cpu_count()))
    ap.add_argument("--cpu-model", default="unknown")
    ap.add_argument("--setup", default="")
    ap.add_argument("--md", required=True)
    ap.add_argument("--json", required=True)
    a = ap.parse_args()

    rows = []
    with open(a.contenders) as f:
        for line in f:
            if not line.strip():
                continue
            key, _, label = line.rstrip("\n").partition("\t")
            runs = load(a.raw, key, a.clk_tck)
            if not runs:
                sys.exit("report.py: no runs for contender %r in %s" % (key, a.raw))
            rows.append({
                "key": key,
                "contender": label or key,
                "runs": runs,
                "rps": median(r["rps"] for r in runs),
                "p50_ms": median(r["p50_ms"] for r in runs),
                "p99_ms": median(r["p99_ms"] for r in runs),
                "cpu_us_per_req": median(r["cpu_us_per_req"] for r in runs),
                "errors": sum(r["non_2xx"] + r["socket_errors"] for r in runs),
            })

    # Ratio to the baseline: per round (runs with the same number were measured back to
    # back, so they share the machine's mood), then the median over rounds. The ratio of
    # the medians is kept in the JSON too.
    base = next((r for r in rows if r["key"] == a.baseline), None)
    for r in rows:
        r["ratio_to_nginx"] = r["ratio_of_medians"] = None
        if base is None or not base["rps"]:
            continue
        base_rps = {x["run"]: x["rps"] for x in base["runs"]}
        per_round = [x["rps"] / base_rps[x["run"]] for x in r["runs"] if base_rps.get(x["run"])]
        for x in r["runs"]:
            x["ratio_to_nginx"] = x["rps"] / base_rps[x["run"]] if base_rps.get(x["run"]) else None
        r["ratio_to_nginx"] = median(per_round)
        r["ratio_of_medians"] = r["rps"] / base["rps"]

    now = datetime.datetime.now(datetime.timezone.utc)
    when = now.strftime("%Y-%m-%d %H:%M UTC")
    header = "%s · %s · %s CPUs (%s)" % (when, a.machine, a.nproc, a.cpu_model)
    lines = [
        "**Portcullis benchmark** — %s" % header,
        "",
    ]
    if a.setup:
        lines += ["Setup: %s." % a.setup, ""]
    lines += [
        "| contender | req/s | p50 | p99 | CPU µs/req | ratio to nginx |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append("| %s | %s | %s | %s | %s | %s |" % (
            r["contender"],
            fmt(r["rps"], "{:,.0f}"),
            fmt(r["p50_ms"], "{:.2f} ms"),
            fmt(r["p99_ms"], "{:.2f} ms"),
            fmt(r["cpu_us_per_req"], "{:.1f}"),
            fmt(r["ratio_to_nginx"], "{:.2f}"),
        ))
    lines += [
        "",
        "Medians per contender; req/s of each run: "
        + "; ".join("%s %s" % (r["key"], "/".join("%.0f" % x["rps"] for x in r["runs"])) for r in rows)
        + ". Ratio to nginx: median over rounds of the ratio within each round (runs measured back to back)."
        + " CPU µs/req is the server process's utime+stime during the run over requests served "
        "(a proxy's figure excludes the upstream). Only ratios within one run are meaningful here.",
    ]
    bad = [r["contender"] for r in rows if r["errors"]]
    if bad:
        lines += ["", "**Warning: non-2xx answers or socket errors for: %s** — those rows do not measure "
                  "successful proxying." % ", ".join(bad)]
    text = "\n".join(lines) + "\n"
    with open(a.md, "w") as f:
        f.write(text)
    doc = {
        "generated": now.isoformat(timespec="seconds"),
        "machine": a.machine,
        "nproc": int(a.nproc) if str(a.nproc).isdigit() else a.nproc,
        "cpu_model": a.cpu_model,
        "setup": a.setup,
        "baseline": a.baseline,
        "rows": rows,
    }
    with open(a.json, "w") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main()
