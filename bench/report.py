#!/usr/bin/env python3
"""Turns bench/run.sh's raw measurements into a Markdown report and its JSON twin.

Standard library only. Inputs, in --raw DIR:
  KEY.RUN.wrk / KEY.RUN.wrk-close   the output of `wrk --latency` for one measured run
  KEY.RUN.h2load (+ .log)           h2load's output and its per-request log (--log-file)
  KEY.RUN.cpu                       the servers' CPU time during that run, in clock ticks
  login.RUN.{quiet,storm,loaded}    wrk outputs of the login-storm rounds, login.meta
  sessions.meta, sessions.cache.wrk the cached-sessions memory row
  tenants.meta                      the 10,000-tenant policy load row
and --contenders FILE, one "KEY<TAB>LABEL<TAB>SECTION<TAB>BASELINE<TAB>DIRECT<TAB>TOOL"
line per contender, in table order; contenders of one SECTION form one table.

For each contender a table shows the median over its runs of req/s, p50, p99 and CPU
microseconds per request (each median taken on its own); the latency added over the
direct upstream (row minus direct, within each round, median over rounds); and req/s as
a ratio to the section's baseline (nginx on the same protocol): the ratio within each
round of interleaved runs, median over rounds. Runs with non-2xx answers or socket errors
are flagged: their numbers do not measure proxying. Then the load and memory figures and
the issue's pass/fail checks.
"""
import argparse
import datetime
import json
import os
import re
import statistics
import sys

UNIT_MS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60000.0}

# The limits.
INLINE_OVER_FORWARD_AUTH = 2.0   # inline Portcullis serves >= 2x a proxy asking it
STORM_P99_FACTOR = 2.0           # proxy p99 during a login storm <= 2x its idle p99
BYTES_PER_SESSION = 1024         # RSS per cached session
TENANTS_LOAD_S = 2.0             # 10,000 tenants loaded within 2 s


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
        # which kind, so a load-generator artefact (connect errors from exhausted ports in
        # the Connection: close rows) can be told from a server that drops connections
        "socket_error_kinds": dict(zip(("connect", "read", "write", "timeout"), map(int, sock.groups()))) if sock else {},
    }


def percentile(sorted_values, pct):
    if not sorted_values:
        return None
    k = min(len(sorted_values) - 1, max(0, int(round(pct / 100.0 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[k]


def parse_h2load(text, log_text):
    """Parses one h2load output; percentiles come from its per-request log
    (start time, status, duration in microseconds), as h2load prints none."""
    fin = re.search(r"^finished in ([\d.]+)(us|ms|s|m), ([\d.]+) req/s", text, re.M)
    req = re.search(r"^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                    r"(\d+) errored, (\d+) timeout", text, re.M)
    codes = re.search(r"^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text, re.M)
    if not fin or not req or not codes:
        raise ValueError("not an h2load output")
    durations = []
    for line in log_text.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[2].isdigit():
            durations.append(int(parts[2]) / 1000.0)
    durations.sort()
    done, succeeded = int(req.group(3)), int(req.group(4))
    return {
        "rps": float(fin.group(3)),
        "requests": done,
        "seconds": float(fin.group(1)) * UNIT_MS[fin.group(2)] / 1000.0,
        "p50_ms": percentile(durations, 50),
        "p90_ms": percentile(durations, 90),
        "p99_ms": percentile(durations, 99),
        "non_2xx": int(codes.group(2)) + int(codes.group(3)) + int(codes.group(4)),
        "socket_errors": done - succeeded + int(req.group(6)) + int(req.group(7)),
    }


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def read(path):
    with open(path) as f:
        return f.read()


def parse(path, tool):
    if tool == "h2load":
        return parse_h2load(read(path), read(path + ".log") if os.path.exists(path + ".log") else "")
    return parse_wrk(read(path))


def c1(run, field):
    return run["c1"][field] if run.get("c1") else None


def load_runs(raw, key, tool, clk_tck):
    runs = []
    suffix = "." + tool
    for name in os.listdir(raw):
        if not (name.startswith(key + ".") and name.endswith(suffix)):
            continue
        number = name[len(key) + 1 : -len(suffix)]
        if not number.isdigit():
            continue
        path = os.path.join(raw, name)
        r = parse(path, tool)
        # The one-connection run that follows it (the added latency).
        r["c1"] = parse(path + ".c1", tool) if os.path.exists(path + ".c1") else None
        ticks = int(read(os.path.join(raw, "%s.%s.cpu" % (key, number))).strip())
        r["run"] = int(number)
        r["cpu_ticks"] = ticks
        r["cpu_us_per_req"] = ticks * 1e6 / clk_tck / r["requests"] if r["requests"] else None
        runs.append(r)
    runs.sort(key=lambda r: r["run"])
    return runs


def per_round(row, ref, f):
    """Median over rounds of f(run, ref_run), for rounds both were measured in."""
    if ref is None:
        return None
    by_run = {x["run"]: x for x in ref["runs"]}
    return median(f(x, by_run[x["run"]]) for x in row["runs"] if x["run"] in by_run)


def diff(a, b):
    return None if a is None or b is None else a - b


def fmt(value, pattern, missing="–"):
    return missing if value is None else pattern.format(value)


def meta(raw, name):
    path = os.path.join(raw, name)
    if not os.path.exists(path):
        return None
    return dict(line.split("=", 1) for line in read(path).split() if "=" in line)


def verdict(ok):
    return "**pass**" if ok else "**FAIL**"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--raw", required=True)
    ap.add_argument("--contenders", required=True)
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
            key, label, section, baseline, direct, tool = line.rstrip("\n").split("\t")
            runs = load_runs(a.raw, key, tool, a.clk_tck)
            if not runs:
                sys.exit("report.py: no runs for contender %r in %s" % (key, a.raw))
            rows.append({
                "key": key, "contender": label or key, "section": section, "baseline": baseline,
                "direct": direct, "tool": tool, "runs": runs,
                "rps": median(r["rps"] for r in runs),
                "p50_ms": median(r["p50_ms"] for r in runs),
                "p99_ms": median(r["p99_ms"] for r in runs),
                "cpu_us_per_req": median(r["cpu_us_per_req"] for r in runs),
                "c1_p50_ms": median(c1(r, "p50_ms") for r in runs),
                "c1_p99_ms": median(c1(r, "p99_ms") for r in runs),
                "errors": sum(r["non_2xx"] + r["socket_errors"] + (c1(r, "non_2xx") or 0) + (c1(r, "socket_errors") or 0)
                              for r in runs),
            })
    by_key = {r["key"]: r for r in rows}

    # Ratio to the baseline: per round (runs with the same number were measured back to
    # back, so they share the machine's mood), then the median over rounds; the ratio of
    # the medians is kept in the JSON too. Added latency likewise, over the direct upstream.
    for r in rows:
        base, direct = by_key.get(r["baseline"]), by_key.get(r["direct"])
        r["ratio_to_baseline"] = per_round(r, base, lambda x, b: x["rps"] / b["rps"] if b["rps"] else None)
        r["ratio_of_medians"] = r["rps"] / base["rps"] if base and base["rps"] else None
        # Added latency from the one-connection runs (an idle server per request).
        r["added_p50_ms"] = None if r["key"] == r["direct"] else per_round(r, direct, lambda x, d: diff(c1(x, "p50_ms"), c1(d, "p50_ms")))
        r["added_p99_ms"] = None if r["key"] == r["direct"] else per_round(r, direct, lambda x, d: diff(c1(x, "p99_ms"), c1(d, "p99_ms")))

    now = datetime.datetime.now(datetime.timezone.utc)
    when = now.strftime("%Y-%m-%d %H:%M UTC")
    lines = ["**Portcullis benchmark** — %s · %s · %s CPUs (%s)" % (when, a.machine, a.nproc, a.cpu_model), ""]
    if a.setup:
        lines += ["Setup: %s." % a.setup, ""]

    sections = []
    for r in rows:
        if r["section"] not in sections:
            sections.append(r["section"])
    for section in sections:
        members = [r for r in rows if r["section"] == section]
        base = by_key.get(members[0]["baseline"])
        base_name = base["key"] if base else members[0]["baseline"]
        lines += [
            "_%s_" % section,
            "",
            "| contender | req/s | p50 | p99 | CPU µs/req | ratio to %s | 1 conn: p50 / p99 | added p50 / p99 |" % base_name,
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for r in members:
            lines.append("| %s | %s | %s | %s | %s | %s | %s | %s |" % (
                r["contender"] + (" ⚠" if r["errors"] else ""),
                fmt(r["rps"], "{:,.0f}"),
                fmt(r["p50_ms"], "{:.2f} ms"),
                fmt(r["p99_ms"], "{:.2f} ms"),
                fmt(r["cpu_us_per_req"], "{:.1f}"),
                fmt(r["ratio_to_baseline"], "{:.2f}"),
                "%s / %s ms" % (fmt(r["c1_p50_ms"], "{:.3f}"), fmt(r["c1_p99_ms"], "{:.3f}")),
                "–" if r["added_p50_ms"] is None and r["added_p99_ms"] is None else
                "%s / %s ms" % (fmt(r["added_p50_ms"], "{:+.3f}"), fmt(r["added_p99_ms"], "{:+.3f}")),
            ))
        lines.append("")

    checks = []
    # Inline Portcullis against a proxy asking Portcullis about every request.
    inline = by_key.get("gateway-auth")
    for fwd_key in ("nginx-fwd", "caddy-fwd"):
        fwd = by_key.get(fwd_key)
        if inline and fwd:
            ratio = per_round(inline, fwd, lambda x, f: x["rps"] / f["rps"] if f["rps"] else None)
            checks.append({
                "check": "inline portcullis (authenticated) ≥ %.0f× %s" % (INLINE_OVER_FORWARD_AUTH, fwd["contender"]),
                "value": "%.2f×" % ratio if ratio is not None else "–",
                "ratio": ratio,
                "pass": ratio is not None and ratio >= INLINE_OVER_FORWARD_AUTH and not inline["errors"] and not fwd["errors"],
            })

    load_rows = []
    login = meta(a.raw, "login.meta")
    login_doc = None
    if login:
        rounds = []
        n = 1
        while os.path.exists(os.path.join(a.raw, "login.%d.storm" % n)):
            storm = parse_wrk(read(os.path.join(a.raw, "login.%d.storm" % n)))
            quiet = parse_wrk(read(os.path.join(a.raw, "login.%d.quiet" % n)))
            loaded = parse_wrk(read(os.path.join(a.raw, "login.%d.loaded" % n)))
            ok_logins = storm["requests"] - storm["non_2xx"] - storm["socket_errors"]
            rounds.append({
                "run": n, "storm": storm, "quiet": quiet, "loaded": loaded,
                "logins_per_s": ok_logins / storm["seconds"] if storm["seconds"] else None,
                "p99_factor": loaded["p99_ms"] / quiet["p99_ms"] if quiet["p99_ms"] else None,
            })
            n += 1
        login_doc = {"meta": login, "rounds": rounds,
                     "logins_per_s": median(r["logins_per_s"] for r in rounds),
                     "refused": sum(r["storm"]["non_2xx"] + r["storm"]["socket_errors"] for r in rounds),
                     "attempts": sum(r["storm"]["requests"] for r in rounds),
                     "quiet_p99_ms": median(r["quiet"]["p99_ms"] for r in rounds),
                     "storm_p99_ms": median(r["loaded"]["p99_ms"] for r in rounds),
                     "quiet_rps": median(r["quiet"]["rps"] for r in rounds),
                     "storm_rps": median(r["loaded"]["rps"] for r in rounds),
                     "p99_factor": median(r["p99_factor"] for r in rounds),
                     "proxy_errors": sum(r["quiet"]["non_2xx"] + r["loaded"]["non_2xx"] + r["quiet"]["socket_errors"]
                                         + r["loaded"]["socket_errors"] for r in rounds)}
        L = login_doc
        load_rows += [
            ("password logins per second (argon2id, %s connections, %s accounts)" % (login["connections"], login["users"]),
             fmt(L["logins_per_s"], "{:.1f}")),
            ("login attempts refused (non-2xx or errors)", "%d of %d" % (L["refused"], L["attempts"])),
            ("authenticated route req/s: idle → during the storm", "%s → %s" % (fmt(L["quiet_rps"], "{:,.0f}"), fmt(L["storm_rps"], "{:,.0f}"))),
            ("authenticated route p99: idle → during the storm", "%s → %s" % (fmt(L["quiet_p99_ms"], "{:.2f} ms"), fmt(L["storm_p99_ms"], "{:.2f} ms"))),
        ]
        checks.append({
            "check": "proxy p99 during a login storm ≤ %.0f× idle p99 (median of per-round factors)" % STORM_P99_FACTOR,
            "value": fmt(L["p99_factor"], "{:.2f}×"),
            "pass": L["p99_factor"] is not None and L["p99_factor"] <= STORM_P99_FACTOR and not L["proxy_errors"],
        })

    sess = meta(a.raw, "sessions.meta")
    sess_doc = None
    if sess:
        count, rss0, rss1 = int(sess["count"]), int(sess["rss0_kb"]), int(sess["rss1_kb"])
        warm = parse_wrk(read(os.path.join(a.raw, "sessions.cache.wrk")))
        per = (rss1 - rss0) * 1024.0 / count if count else None
        sess_doc = {"count": count, "rss0_kb": rss0, "rss1_kb": rss1, "bytes_per_session": per,
                    "caching_pass": warm}
        load_rows += [
            ("RSS, 0 cached sessions", "%.1f MiB" % (rss0 / 1024.0)),
            ("RSS, %s cached sessions (each requested once)" % "{:,}".format(count), "%.1f MiB" % (rss1 / 1024.0)),
        ]
        checks.append({
            "check": "RSS per cached session ≤ %d bytes" % BYTES_PER_SESSION,
            "value": fmt(per, "{:,.0f} bytes"),
            "pass": per is not None and per <= BYTES_PER_SESSION and not warm["non_2xx"] and not warm["socket_errors"],
        })

    ten = meta(a.raw, "tenants.meta")
    ten_doc = None
    if ten:
        ten_doc = {k: (float(v) if k != "count" else int(v)) for k, v in ten.items()}
        count = int(ten["count"])
        load_rows += [
            ("`portcullis check` on %s tenants" % "{:,}".format(count), "%.2f s" % float(ten["check_s"])),
            ("`portcullis run` until the last of %s tenants answers (1 tenant: %.2f s)"
             % ("{:,}".format(count), float(ten["one_ready_s"])), "%.2f s" % float(ten["ready_s"])),
            ("RSS with %s tenants (1 tenant: %.1f MiB)" % ("{:,}".format(count), float(ten["one_rss_kb"]) / 1024.0),
             "%.1f MiB" % (float(ten["rss_kb"]) / 1024.0)),
        ]
        checks.append({
            "check": "%s tenants loaded (run until ready) within %.0f s" % ("{:,}".format(count), TENANTS_LOAD_S),
            "value": "%.2f s" % float(ten["ready_s"]),
            "pass": float(ten["ready_s"]) <= TENANTS_LOAD_S,
        })

    if load_rows:
        lines += ["_Load and memory_", "", "| measure | value |", "| --- | ---: |"]
        lines += ["| %s | %s |" % row for row in load_rows]
        lines.append("")
    if checks:
        lines += ["_Checks (issue 13)_", "", "| check | measured | result |", "| --- | ---: | --- |"]
        lines += ["| %s | %s | %s |" % (c["check"], c["value"], verdict(c["pass"])) for c in checks]
        lines.append("")

    if rows:
        lines.append(
        "Medians per contender; req/s of each run: "
        + "; ".join("%s %s" % (r["key"], "/".join("%.0f" % x["rps"] for x in r["runs"])) for r in rows)
        + ". req/s, p50, p99 and CPU are at full load (64 requests in flight). \"1 conn\" is a "
        "second run with one connection, where each request meets an idle server; \"added\" is its "
        "p50 / p99 minus the direct upstream's (on the same protocol; the TLS rows over the plaintext "
        "upstream; wrk's latency excludes connect and handshake time). Ratios and added latency are the median over rounds of the figure within each round "
        "(runs measured back to back). CPU µs/req is the servers' utime+stime during the run over "
        "requests served (a proxy's figure excludes the upstream; a proxy asking Portcullis is charged "
        "for both). h2load percentiles come from its per-request log. Only ratios within one run are "
        "meaningful here.")
    if login_doc or sess_doc or ten_doc:
        lines += ["", "Load and memory: login storm and proxy p99 are medians over %d round(s) of "
                  "(route alone, route during the storm); RSS is VmRSS of a fresh gateway after a warm-up "
                  "and after each session was requested once (the session cache keeps an entry at most 1 s, "
                  "the assertion cache 30 s; RSS is read right after the last request); tenants: time from "
                  "start until the last tenant's host answers." % (len(login_doc["rounds"]) if login_doc else 0)]
    bad = [r["contender"] for r in rows if r["errors"]]
    if bad:
        lines += ["", "**⚠ Non-2xx answers or socket errors for: %s** — those rows do not measure "
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
        "rows": rows,
        "login": login_doc,
        "sessions": sess_doc,
        "tenants": ten_doc,
        "checks": checks,
    }
    with open(a.json, "w") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main()
