"""The figures against their goals, and latest.json / latest.md / latest.png."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

DASH = "\u2013"  # en dash: an empty cell
TIMES = "\u00d7"  # multiplication sign


def _med(meas: dict[str, Any], key: str, what: str) -> float | None:
    m = meas.get(key)
    if not m:
        return None
    value = m["median"].get(what)
    return float(value) if value else None


def _valid(meas: dict[str, Any], *keys: str) -> bool:
    return all(meas.get(k, {}).get("valid", True) for k in keys if k != "argon2_ref")


def _failed(meas: dict[str, Any], *keys: str) -> list[str]:
    return [why for k in keys for why in meas.get(k, {}).get("failed_checks", [])]


def _value_text(meas: dict[str, Any], key: str, what: str, value: float) -> str:
    if what == "ok_rps":
        return _rps_text(meas, key)
    if what == "server_cpu_ms_per_request":
        return f"{value:.2f} ms CPU/request ({_rps_text(meas, key)})"
    return f"p50 {value:.2f} ms"


def _rps_text(meas: dict[str, Any], key: str) -> str:
    m = meas.get(key)
    if not m:
        return "not measured"
    med = m["median"]
    if "p50_ms" not in med:
        return f"{med['ok_rps']:,.1f}/s"
    return f"{med['ok_rps']:,.0f}/s (p50 {med['p50_ms']:.1f} ms, p99 {med['p99_ms']:.1f} ms)"


def figures(meas: dict[str, Any]) -> list[dict[str, Any]]:
    """Each figure of issue 8 with its value, its reference, the ratio and whether the goal is met."""
    out: list[dict[str, Any]] = []

    def ratio_row(
        fig: str,
        name: str,
        key: str,
        ref_key: str,
        goal: float | None,
        *,
        at_least: bool = True,
        what: str = "ok_rps",
        style: str | None = None,
    ) -> None:
        value, ref = _med(meas, key, what), _med(meas, ref_key, what)
        goal_text = DASH if goal is None else _goal_text(goal, at_least, fig, style)
        if value is None or ref is None:
            out.append(
                {
                    "figure": fig,
                    "name": name,
                    "value": "not measured",
                    "reference": "",
                    "ratio": None,
                    "goal": goal_text,
                    "met": None,
                    "valid": False,
                }
            )
            return
        ratio = value / ref
        met = None if goal is None else (ratio >= goal if at_least else ratio <= goal)
        valid = _valid(meas, key, ref_key)
        row: dict[str, Any] = {
            "figure": fig,
            "name": name,
            "value": _value_text(meas, key, what, value),
            "reference": _value_text(meas, ref_key, what, ref),
            "value_number": value,
            "reference_number": ref,
            "ratio": round(ratio, 3),
            "goal": goal_text,
            "met": None if met is None else bool(met and valid),
            "valid": valid,
        }
        if style:
            row["ratio_style"] = style
        failed = _failed(meas, key, ref_key)
        if failed:
            row["failed_checks"] = failed
        out.append(row)

    ratio_row(
        "P1", "TOTP sign-in step (SQLite, 1 worker) vs bare Starlette app", "p1_sqlite_1w", "ref_1w", 0.25
    )
    ratio_row(
        "P2",
        "password step (1 worker) vs argon2-cffi verify, same cores",
        "p2_password_sqlite_1w",
        "argon2_ref",
        0.90,
    )
    ratio_row(
        "P3", "passkey sign-in step vs P1 (SQLite, 1 worker)", "p3_passkey_sqlite_1w", "p1_sqlite_1w", 0.50
    )
    ratio_row(
        "P4",
        "P1 p50 latency, 1,000,000 vs 1,000 accounts (PostgreSQL)",
        "p4_pg_1m",
        "p4_pg_1k",
        1.2,
        at_least=False,
        what="p50_ms",
    )
    ratio_row("P5", "P1 with 2 workers vs 1 (SQLite)", "p5_sqlite_2w", "p1_sqlite_1w", 1.7)
    rss = [
        meas[k]["rss_max_mib"]
        for k in meas
        if k.startswith(("p1_", "p5_", "p4_")) and "rss_max_mib" in meas[k]
    ]
    if rss:
        peak = max(rss)
        out.append(
            {
                "figure": "P6",
                "name": "resident memory of a worker under the P1 load (max, every P1 run)",
                "value": f"{peak:.1f} MiB",
                "reference": "",
                "value_number": peak,
                "ratio": None,
                "goal": "≤ 120 MB",
                "met": peak * 1.048576 <= 120,
                "valid": True,
            }
        )
    else:
        out.append(
            {
                "figure": "P6",
                "name": "resident memory of a worker under the P1 load",
                "value": "not measured",
                "reference": "",
                "ratio": None,
                "goal": "≤ 120 MB",
                "met": None,
                "valid": False,
            }
        )
    # OpenID Connect (issue 14), after the P figures.
    ratio_row(
        "O1",
        "token endpoint, code to tokens vs P1 (SQLite, 1 worker)",
        "o1_token_sqlite_1w",
        "p1_sqlite_1w",
        0.50,
    )
    ratio_row(
        "O2", "userinfo endpoint vs P1 (SQLite, 1 worker)", "o2_userinfo_sqlite_1w", "p1_sqlite_1w", 1.00
    )
    # Context, no goal of their own.
    if "p1_pg_1w" in meas:
        ratio_row(
            "P1·pg",
            "TOTP sign-in step (PostgreSQL, 1 worker) vs bare Starlette app",
            "p1_pg_1w",
            "ref_1w",
            0.25,
        )
        ratio_row("P5·pg", "P1 with 2 workers vs 1 (PostgreSQL)", "p5_pg_2w", "p1_pg_1w", 1.7)
        # Issue 16: against P1 (SQLite), from one address and from 100 behind a trusted proxy.
        ratio_row(
            "P1·pg÷P1",
            "TOTP sign-in step (PostgreSQL, 1 worker) vs P1 (SQLite)",
            "p1_pg_1w",
            "p1_sqlite_1w",
            0.60,
            style="pct",
        )
        ratio_row(
            "P1·pg·100",
            "TOTP sign-in step (PostgreSQL, 1 worker, 100 addresses) vs P1 (SQLite)",
            "p1_pg_1w_100",
            "p1_sqlite_1w",
            0.60,
            style="pct",
        )
        ratio_row(
            "P5·pg·100",
            "P1·pg·100 with 2 workers vs 1 (PostgreSQL, 100 addresses)",
            "p5_pg_2w_100",
            "p1_pg_1w_100",
            1.6,
        )
    ratio_row(
        "P1·2w",
        "TOTP sign-in step (SQLite, 2 workers) vs bare app, 2 workers",
        "p5_sqlite_2w",
        "ref_2w",
        0.25,
    )
    floor_figures(meas, ratio_row)
    return out


def floor_figures(meas: dict[str, Any], ratio_row: Any) -> None:
    """Issue 16: P1 against the floor (bench/floor_app.py), the same statements with the least machinery."""
    if "floor_sqlite_loop" not in meas:
        return
    cpu = "server_cpu_ms_per_request"
    ratio_row(
        "FL1",
        "P1 vs the floor, transaction in the event loop (SQLite, 1 worker): requests/s",
        "p1_sqlite_1w",
        "floor_sqlite_loop",
        0.70,
        style="pct",
    )
    ratio_row(
        "FL2",
        "P1 vs the floor, transaction in the event loop: server CPU per request",
        "p1_sqlite_1w",
        "floor_sqlite_loop",
        1.4,
        at_least=False,
        what=cpu,
        style="times",
    )
    ratio_row(
        "FL·thread",
        "P1 vs the floor, transaction in the thread pool: requests/s",
        "p1_sqlite_1w",
        "floor_sqlite_thread",
        None,
        style="pct",
    )
    ratio_row(
        "FL·hop",
        "the floor: thread pool vs event loop (SQLite), requests/s",
        "floor_sqlite_thread",
        "floor_sqlite_loop",
        None,
        style="pct",
    )
    if "floor_pg_async" in meas:
        ratio_row(
            "FL1·pg",
            "P1·pg vs the floor, psycopg async in the event loop (PostgreSQL, 1 worker): requests/s",
            "p1_pg_1w",
            "floor_pg_async",
            None,
            style="pct",
        )
        ratio_row(
            "FL2·pg",
            "P1·pg vs the floor, psycopg async: server CPU per request",
            "p1_pg_1w",
            "floor_pg_async",
            None,
            at_least=False,
            what=cpu,
            style="times",
        )
        ratio_row(
            "FL·hop·pg",
            "the floor: psycopg sync in the thread pool vs async in the event loop, requests/s",
            "floor_pg_thread",
            "floor_pg_async",
            None,
            style="pct",
        )
    if "floor_pg_async_2w" in meas:
        # What a second worker adds on this machine to the same statements with nothing around them: the
        # reference for P5·pg where the cores, shared with PostgreSQL's backends, are the bound.
        ratio_row(
            "FL·2w·pg",
            "the floor, psycopg async: 2 workers vs 1 (PostgreSQL), requests/s",
            "floor_pg_async_2w",
            "floor_pg_async",
            None,
            style="times",
        )


def _cores(value: float | None) -> str:
    """Cores busy, or a dash for a run recorded before the figure existed."""
    return DASH if value is None else f"{value:.2f}"


def _goal_text(goal: float, at_least: bool, fig: str, style: str | None = None) -> str:
    sign = "≥" if at_least else "≤"
    if style == "times" or fig.startswith("P5"):
        return f"{sign} {goal:g}{TIMES}"
    if fig.startswith("P4"):
        return f"≤ {goal:g}"
    return f"{sign} {goal:.0%}"


def _ratio_text(row: dict[str, Any]) -> str:
    r = row.get("ratio")
    if r is None:
        return DASH
    style = row.get("ratio_style")
    if style == "times" or (style is None and row["figure"].startswith(("P4", "P5"))):
        return f"{r:.2f}{TIMES}"
    return f"{r:.1%}"


def _met_text(row: dict[str, Any]) -> str:
    failed = row.get("failed_checks")
    if failed:
        return f"no (invalid: {failed[0][:160]})"
    if row["met"] is None:
        return DASH
    if not row.get("valid", True):
        return "no (invalid run)"
    return "**yes**" if row["met"] else "not met"


def markdown(data: dict[str, Any]) -> str:
    mach = data["machine"]
    cfg = data["config"]
    lines = [
        f"# twostep benchmark — {data['started_at']}",
        "",
        f"Machine: {mach['cpu_model']}, {mach['cores_usable']} cores, {mach['memory_mib']:,} MiB; "
        f"Linux {mach['kernel']}; Python {mach['python']}; PostgreSQL {mach['postgresql']}; "
        f"SQLite {mach['sqlite']}; {mach['wrk']}. Load average (1/5/15 min) at start "
        f"{'/'.join(str(x) for x in mach['load_average_at_start'])}, at end "
        f"{'/'.join(str(x) for x in mach.get('load_average_at_end', []))}.",
        f"Load: wrk, {cfg['connections']} connections ({cfg['p2_connections']} for P2), "
        f"{cfg['wrk_threads']} thread, "
        f"on loopback, on the same machine; {cfg['rounds']} round(s) of {cfg['duration_s']:g} s per load, "
        f"medians shown{' (quick run)' if cfg['quick'] else ''}. Whole run: {data['elapsed_s']:.0f} s.",
        "",
        "| # | figure | value | reference | ratio | goal | met? |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in data["figures"]:
        lines.append(
            f"| {row['figure']} | {row['name']} | {row['value']} | {row['reference'] or DASH} | "
            f"{_ratio_text(row)} | {row['goal']} | {_met_text(row)} |"
        )
    lines += [
        "",
        "Rows marked · are context for the figures above (no goal of their own).",
        "",
        "| load | workers | req/s (median) | p50 ms | p99 ms | server CPU ms/req | server cores busy "
        "| wrk cores busy | machine cores busy | ok share (min) | requests | worker RSS max MiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, m in data["measurements"].items():
        med = m["median"]
        if key == "argon2_ref":
            r0: dict[str, Any] = m["rounds"][0] if m["rounds"] else {"processes": "?", "parameters": {}}
            p = r0.get("parameters", {})
            lines.append(
                f"| argon2_ref: {m['title']} (t={p.get('time_cost')}, m={p.get('memory_cost')} KiB, "
                f"p={p.get('parallelism')}) | {r0['processes']} proc | {med['ok_rps']:.2f} |"
                + f" {DASH} |"
                * 9
            )
            continue
        lines.append(
            f"| {key}: {m['title']} | {m['server_workers']} | {med['ok_rps']:,.1f} | {med['p50_ms']:.2f} | "
            f"{med['p99_ms']:.2f} | {med['server_cpu_ms_per_request']:.2f} | "
            f"{med['server_cores_busy']:.2f} | "
            f"{med['wrk_cores_busy']:.2f} | {_cores(med.get('machine_cores_busy'))} | "
            f"{m['ok_share_min']:.2%} | {m['requests']:,} | "
            f"{m.get('rss_max_mib', DASH)} |"
        )
    lines += floor_markdown(data)
    if data.get("forward_auth"):
        from bench.forward_auth import markdown as f1_markdown

        first = data["forward_auth"][0]
        lines += ["", f1_markdown(data["forward_auth"], first["rounds"], first["duration_s"]).rstrip()]
    if data.get("notes"):
        lines += ["", *[f"Note: {n}" for n in data["notes"]]]
    return "\n".join(lines) + "\n"


_FLOOR_ROWS = [
    ("p1_sqlite_1w", "twostep serve, 1 worker (P1)"),
    ("floor_sqlite_loop", "floor, transaction in the event loop"),
    ("floor_sqlite_thread", "floor, transaction in the thread pool"),
    ("p1_pg_1w", "twostep serve, 1 worker (P1·pg)"),
    ("floor_pg_async", "floor, psycopg async in the event loop"),
    ("floor_pg_thread", "floor, psycopg sync in the thread pool"),
    ("floor_pg_async_2w", "floor, psycopg async in the event loop, 2 workers"),
]


def statement_summary(sql: str) -> str:
    """A statement in a few words: its verb and table (``UPSERT`` for INSERT ... ON CONFLICT)."""
    words = sql.split()
    verb = words[0].upper() if words else "?"
    if verb in ("BEGIN", "COMMIT", "ROLLBACK"):
        return " ".join(words)
    table = ""
    for i, w in enumerate(words[:-1]):
        if w.upper() in ("INTO", "FROM", "UPDATE") and (verb != "SELECT" or w.upper() == "FROM"):
            table = words[i + 1].strip('("')
            break
    if verb == "UPDATE" and len(words) > 1:
        table = words[1]
    if verb == "INSERT" and "ON CONFLICT" in sql.upper():
        verb = "UPSERT"
    if "RETURNING" in sql.upper():
        table += " … RETURNING"
    return f"{verb} {table}".strip()


def floor_markdown(data: dict[str, Any]) -> list[str]:
    """Issue 16: twostep's TOTP step beside the floor, and what was checked."""
    meas = data["measurements"]
    if "floor_sqlite_loop" not in meas:
        return []
    lines = [
        "",
        "The floor (issue 16, bench/floor_app.py): the same statements as twostep's TOTP step with the least "
        "machinery, on a copy of the same database, loaded with requests built the same way in the same "
        "round.",
        "",
        "| server | req/s (median) | p50 / p99 ms | server CPU ms/request | statements per request "
        "| ok answers = sessions = signed_in events |",
        "|---|---|---|---|---|---|",
    ]
    floor = data.get("floor", {})
    for key, label in _FLOOR_ROWS:
        m = meas.get(key)
        if not m:
            continue
        med = m["median"]
        if "statements" in m:
            st = m["statements"]
            stmts = f"{st['message']} ({st['traced_requests']:,} requests traced)"
        else:
            dialect = "postgresql" if "_pg_" in key else "sqlite"
            n = len(floor.get(dialect, {}).get("twostep", {}).get("statements", []))
            stmts = f"{n} (SQLAlchemy events, in process)" if n else DASH
        made = m.get("real_signins")
        if made:
            if made["ok_answers"] == made["sessions"] == made["events"]:
                real = f"{made['ok_answers']:,}"
            else:
                real = f"{made['ok_answers']:,} / {made['sessions']:,} / {made['events']:,}"
                if made.get("unanswered"):
                    real += f" ({made['unanswered']} unanswered at wrk's deadline)"
            if m.get("failed_checks"):
                real = f"**no**: {real}"
        else:
            real = DASH
        lines.append(
            f"| {label} | {med['ok_rps']:,.0f} | {med['p50_ms']:.1f} / {med['p99_ms']:.1f} | "
            f"{med['server_cpu_ms_per_request']:.2f} | {stmts} | {real} |"
        )
    for dialect in ("sqlite", "postgresql"):
        info = floor.get(dialect)
        if not info:
            continue
        tw = info["twostep"]
        summary = " · ".join(statement_summary(x) for x in tw["statements"])
        lines += ["", f"twostep's statements per TOTP step ({dialect}): {summary}."]
        if "in_process" in info:
            ok = "passed" if info["in_process"]["ok"] else "FAILED"
            lines.append(f"In-process check {ok}: {info['in_process']['message']}.")
    return lines


def plot(data: dict[str, Any], path: Path) -> bool:
    """Requests/s and p50/p99 bars; False when matplotlib is not installed (the `bench` extra)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    meas = data["measurements"]
    keys = list(meas)
    rps = [meas[k]["median"]["ok_rps"] for k in keys]
    lat_keys = [k for k in keys if "p50_ms" in meas[k]["median"]]
    p50 = [meas[k]["median"]["p50_ms"] for k in lat_keys]
    p99 = [meas[k]["median"]["p99_ms"] for k in lat_keys]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(15, 6))
    colors = ["#888888" if k.startswith(("ref", "argon2")) else "#2b6cb0" for k in keys]
    ax1.bar(range(len(keys)), rps, color=colors)
    ax1.set_yscale("log")
    ax1.set_xticks(range(len(keys)), keys, rotation=45, ha="right", fontsize=8)
    ax1.set_ylabel("requests/s (median of rounds; log scale)")
    ax1.set_title("Throughput (grey: references)")
    for i, v in enumerate(rps):
        ax1.text(i, v, f"{v:,.0f}" if v >= 10 else f"{v:.1f}", ha="center", va="bottom", fontsize=7)
    x = range(len(lat_keys))
    ax2.bar([i - 0.2 for i in x], p50, width=0.4, label="p50")
    ax2.bar([i + 0.2 for i in x], p99, width=0.4, label="p99")
    ax2.set_yscale("log")
    ax2.set_xticks(list(x), lat_keys, rotation=45, ha="right", fontsize=8)
    ax2.set_ylabel("latency, ms (median of rounds; log scale)")
    ax2.set_title("Latency under load")
    ax2.legend()
    mach = data["machine"]
    fig.suptitle(
        f"twostep bench {data['started_at']} — {mach['cpu_model']}, {mach['cores_usable']} cores, "
        f"Python {mach['python']}, PostgreSQL {mach['postgresql']}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write(data: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    out_dir.mkdir(parents=True, exist_ok=True)
    md_text = markdown(data)
    png = out_dir / "latest.png"
    data["plot"] = (
        png.name if plot(data, png) else "not drawn: matplotlib missing (pip install -e '.[bench]')"
    )
    js = out_dir / "latest.json"
    js.write_text(json.dumps(data, indent=2) + "\n")
    md = out_dir / "latest.md"
    md.write_text(md_text)
    return {"json": js, "md": md, "png": png, "md_text": md_text}
