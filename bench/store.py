"""Store scaling: list and history endpoints on a large data dir.

    python -m bench.store [--requests 200] [--seconds 12]

Builds a data dir with the real schema (the migrations of nanoclaw/store, applied
as the server applies them) and fills it in bulk with sqlite3: 1,000 namespaces
(one routed chat each), 10,000 schedules (none due during the run), 200,000
schedule log rows, 100,000 runs, 200,000 audit entries, 2,000 chats and
1,000,000 messages. Then `nanoclaw serve` (NANOCLAW_CONTAINER_RUNTIME=none) runs
on it in its own process and each endpoint is called sequentially over one
keep-alive connection (bounded: --requests calls or --seconds, whichever comes
first). Each endpoint's SQL is also timed alone with sqlite3 and its query plan
shown, to tell the store's share from the rest.
The figures replace the "Store scaling" section of docs/benchmarks.md and draw
docs/bench/store.png.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

from bench._plot import draw
from bench._report import load_sentence, percentile, write_section

ROOT = Path(__file__).resolve().parent.parent
TITLE = "Store scaling"
SLOW_P99_MS = 100.0
NAMESPACES, SCHEDULES, MESSAGES = 1_000, 10_000, 1_000_000
CHATS = 2_000
LOGS_PER_SCHEDULE = 20
RUNS = 100_000
AUDIT = 200_000
DAY = 86_400


def fill(data_dir: Path, rng: random.Random) -> dict:
    """Bulk-insert the data set; returns ids the requests pick from."""
    from nanoclaw.models import ContainerConfig
    from nanoclaw.store._db import sync_connection

    now = time.time()
    config = ContainerConfig().model_dump_json()
    names = [f"team-{i:04d}" for i in range(NAMESPACES)]
    ns_ids = [str(uuid.uuid4()) for _ in names]
    jids = [f"tg:-100{i:07d}" for i in range(CHATS)]  # the first NAMESPACES are routed
    schedule_ids = [str(uuid.uuid4()) for _ in range(SCHEDULES)]
    (data_dir / "groups").mkdir(parents=True, exist_ok=True)
    for name in names:
        (data_dir / "groups" / name).mkdir(exist_ok=True)
    with sync_connection(data_dir / "nanoclaw.db") as conn:
        conn.execute("PRAGMA synchronous = OFF")
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO namespaces (id, name, description, trigger, requires_trigger, is_main, container_config, "
            "created_at, updated_at) VALUES (?, ?, ?, '@Andy', 1, 0, ?, ?, ?)",
            [(ns_ids[i], names[i], f"Team {i}", config, now - DAY * 90 + i, now - DAY) for i in range(NAMESPACES)])
        conn.executemany("INSERT INTO namespace_chats (jid, namespace_id, position) VALUES (?, ?, 0)",
                         [(jids[i], ns_ids[i]) for i in range(NAMESPACES)])
        conn.executemany(
            "INSERT INTO chats (jid, channel, name, is_group, last_message_at) VALUES (?, 'telegram', ?, 1, ?)",
            [(jid, f"Chat {i}", now - rng.random() * DAY * 30) for i, jid in enumerate(jids)])
        per_chat = MESSAGES // CHATS
        start = now - DAY * 90

        def messages():
            for c, jid in enumerate(jids):
                for k in range(per_chat):
                    ts = start + (k * DAY * 90 / per_chat) + rng.random()
                    bot = k % 5 == 4
                    yield ("telegram", jid, None if bot else f"{jid[3:]}:{k}", "bot" if bot else f"tg:{k % 7}",
                           "Andy" if bot else f"User {k % 7}", f"message {k} in chat {c}: the quick brown fox", ts,
                           int(bot), int(k % 10 == 0))

        conn.executemany(
            "INSERT INTO messages (channel, chat_jid, external_id, sender_jid, sender_name, content, ts, is_bot, "
            "addressed) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", messages())
        next_base = round((now + DAY) * 1000)
        conn.executemany(
            "INSERT INTO schedules (id, name, group_name, prompt, schedule_type, schedule_value, timezone, chat_jid, "
            "container_config, context_mode, status, next_run_ms, last_run_ms, last_result, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, 'interval', '86400000', 'UTC', NULL, NULL, 'isolated', ?, ?, ?, 'ok', ?, ?)",
            [(sid, f"daily report {i}", names[i % NAMESPACES], "Summarise the day's messages",
              "paused" if i % 10 == 9 else "active", next_base + rng.randrange(DAY * 1000),
              next_base - DAY * 1000, now - DAY * 60 + i, now - DAY) for i, sid in enumerate(schedule_ids)])
        conn.executemany(
            "INSERT INTO schedule_logs (schedule_id, planned_ms, run_at_ms, duration_ms, status, catch_up, result, "
            "error, run_id) VALUES (?, ?, ?, ?, ?, 0, ?, NULL, ?)",
            ((sid, round((now - DAY * (LOGS_PER_SCHEDULE - d)) * 1000), round((now - DAY * (LOGS_PER_SCHEDULE - d)) * 1000) + 3,
              rng.randrange(500, 5000), "success", "Done: 12 messages summarised", str(uuid.uuid4()))
             for d in range(LOGS_PER_SCHEDULE) for sid in schedule_ids))
        conn.executemany(
            "INSERT INTO run_history (id, group_name, kind, status, container_name, session_id, schedule_id, prompt, "
            "started_at, finished_at, duration_ms, exit_code, results, error) "
            "VALUES (?, ?, ?, ?, ?, NULL, ?, 'prompt', ?, ?, ?, 0, ?, NULL)",
            ((str(uuid.uuid4()), names[i % NAMESPACES], "task" if i % 2 else "message",
              "success" if i % 20 else "error", f"nanoclaw-{names[i % NAMESPACES]}-{i}",
              schedule_ids[i % SCHEDULES] if i % 2 else None, now - DAY * 30 + i * 25, now - DAY * 30 + i * 25 + 4,
              4000, json.dumps([f"answer {i}"])) for i in range(RUNS)))
        conn.executemany(
            "INSERT INTO audit_log (ts, severity, category, message, group_name, details) VALUES (?, ?, ?, ?, ?, ?)",
            ((now - DAY * 30 + i * 12, ("info", "info", "info", "warning", "violation")[(i // NAMESPACES) % 5],
              ("config", "run", "auth", "ipc", "mount")[i % 5], f"event {i}", names[i % NAMESPACES],
              json.dumps({"n": i})) for i in range(AUDIT)))
        conn.execute("COMMIT")
        conn.execute("ANALYZE")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return {"names": names, "jids": jids, "schedules": schedule_ids, "before": now - DAY * 45}


def endpoints(ids: dict, rng: random.Random) -> list[tuple[str, callable]]:
    """(label, a function giving the next request path)."""
    return [
        ("GET /container/namespaces", lambda: "/container/namespaces"),
        ("GET /container/schedules", lambda: "/container/schedules"),
        ("GET /container/schedules/{id}/logs", lambda: f"/container/schedules/{rng.choice(ids['schedules'])}/logs"),
        ("GET /channels/chats", lambda: "/channels/chats"),
        ("GET /channels/chats/{jid}/messages", lambda: f"/channels/chats/{rng.choice(ids['jids'])}/messages"),
        ("GET /channels/chats/{jid}/messages?before=", lambda: (
            f"/channels/chats/{rng.choice(ids['jids'])}/messages?before={ids['before']:.0f}")),
        ("GET /container/run-history", lambda: "/container/run-history"),
        ("GET /container/run-history?group=", lambda: f"/container/run-history?group={rng.choice(ids['names'])}"),
        ("GET /container/audit-log", lambda: "/container/audit-log"),
        ("GET /container/audit-log?group=&severity=", lambda: (
            f"/container/audit-log?group={rng.choice(ids['names'])}&severity=warning")),
    ]


def sql_checks(db: Path, ids: dict, rng: random.Random) -> dict[str, dict]:
    """Each endpoint's SQL as the code runs it (nanoclaw/*), timed alone, with its query plan."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row

    def namespaces_list(c):  # as Namespaces.list runs it since 6217a7f (it was 1 + one per namespace)
        c.execute("SELECT namespace_id, jid FROM namespace_chats ORDER BY position").fetchall()
        c.execute("SELECT * FROM namespaces ORDER BY name").fetchall()
        return 2

    def one(sql, params_fn):
        def run(c):
            c.execute(sql, params_fn()).fetchall()
            return 1
        return run, sql, params_fn

    name, jid, sid = (lambda: rng.choice(ids["names"])), (lambda: rng.choice(ids["jids"])), (
        lambda: rng.choice(ids["schedules"]))
    checks = {
        "GET /container/namespaces": (namespaces_list, "SELECT namespace_id, jid FROM namespace_chats "
                                      "ORDER BY position", lambda: ()),
        "GET /container/schedules": one("SELECT * FROM schedules ORDER BY created_at, id LIMIT 500", lambda: ()),
        "GET /container/schedules/{id}/logs": one(
            "SELECT * FROM schedule_logs WHERE schedule_id = ? ORDER BY id DESC LIMIT 20 OFFSET 0", lambda: (sid(),)),
        "GET /channels/chats": one(
            "SELECT c.*, n.name AS namespace FROM chats c LEFT JOIN namespace_chats nc ON nc.jid = c.jid "
            "LEFT JOIN namespaces n ON n.id = nc.namespace_id ORDER BY c.last_message_at DESC, c.jid LIMIT 100",
            lambda: ()),
        "GET /channels/chats/{jid}/messages": one(
            "SELECT * FROM messages WHERE chat_jid = ? ORDER BY ts DESC, id DESC LIMIT 100", lambda: (jid(),)),
        "GET /channels/chats/{jid}/messages?before=": one(
            "SELECT * FROM messages WHERE chat_jid = ? AND ts < ? ORDER BY ts DESC, id DESC LIMIT 100",
            lambda: (jid(), ids["before"])),
        "GET /container/run-history": one(
            "SELECT * FROM run_history ORDER BY started_at DESC, rowid DESC LIMIT 50", lambda: ()),
        "GET /container/run-history?group=": one(
            "SELECT * FROM run_history WHERE group_name = ? ORDER BY started_at DESC, rowid DESC LIMIT 50",
            lambda: (name(),)),
        "GET /container/audit-log": one("SELECT * FROM audit_log ORDER BY id DESC LIMIT 50", lambda: ()),
        "GET /container/audit-log?group=&severity=": one(
            "SELECT * FROM audit_log WHERE group_name = ? AND severity = ? ORDER BY id DESC LIMIT 50",
            lambda: (name(), "warning")),
    }
    found = {}
    for label, (run, sql, params_fn) in checks.items():
        times, queries = [], 0
        for _ in range(15):
            start = time.perf_counter()
            queries = run(conn)
            times.append((time.perf_counter() - start) * 1000)
        plan = "; ".join(r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + sql, params_fn()))
        found[label] = {"p50": percentile(times, 50), "queries": queries, "plan": plan}
    conn.close()
    return found


def breakdown(db: Path) -> dict[str, dict[str, float]]:
    """Where the time of the two whole-table lists goes, step by step, as the server does it (ms, best of 3)."""
    from nanoclaw.api.namespaces import NamespaceList
    from nanoclaw.api.schedules import ScheduleList
    from nanoclaw.namespaces._service import Namespaces
    from nanoclaw.scheduler._service import _load as load_schedule

    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, check_same_thread=False)
    conn.row_factory = sqlite3.Row

    def best(fn):
        times = []
        for _ in range(3):
            start = time.perf_counter()
            value = fn()
            times.append((time.perf_counter() - start) * 1000)
        return min(times), value

    steps: dict[str, dict[str, float]] = {}
    # Namespaces: the N+1 the service ran until 6217a7f against one query for every chat, then the models.
    rows = conn.execute("SELECT * FROM namespaces ORDER BY name").fetchall()
    n_plus_1, _ = best(lambda: [conn.execute("SELECT jid FROM namespace_chats WHERE namespace_id = ? "
                                             "ORDER BY position", (r["id"],)).fetchall() for r in rows])
    single, _ = best(lambda: conn.execute("SELECT namespace_id, jid FROM namespace_chats "
                                          "ORDER BY namespace_id, position").fetchall())
    def load_all():
        jids: dict[str, list[str]] = {}
        for ns_id, jid in conn.execute("SELECT namespace_id, jid FROM namespace_chats ORDER BY position"):
            jids.setdefault(ns_id, []).append(jid)
        return [Namespaces._load(None, conn, r, jids.get(r["id"], [])) for r in rows]

    load_ms, models = best(load_all)
    dump_ms, dumped = best(lambda: NamespaceList(namespaces=models).model_dump())
    json_ms, _ = best(lambda: json.dumps(dumped))
    steps["GET /container/namespaces"] = {
        "chat queries, one per namespace (N+1)": n_plus_1, "the same chats in one query": single,
        "rows -> models as Namespaces.list does now (2 queries, ContainerConfig JSON parsing)": load_ms,
        "model_dump (quart-schema)": dump_ms, "json.dumps": json_ms}
    sql_ms, rows = best(lambda: conn.execute("SELECT * FROM schedules ORDER BY created_at, id").fetchall())
    load_ms, models = best(lambda: [load_schedule(r) for r in rows])
    dump_ms, dumped = best(lambda: ScheduleList(schedules=models, total=len(models)).model_dump())
    json_ms, _ = best(lambda: json.dumps(dumped))
    steps["GET /container/schedules (all 10,000 rows, as before paging)"] = {"SQL (10,000 rows)": sql_ms, "rows -> models": load_ms,
                                         "model_dump (quart-schema)": dump_ms, "json.dumps": json_ms}
    conn.close()
    return steps


def measure(base: str, todo, requests: int, seconds: float) -> dict[str, dict]:
    results = {}
    with httpx.Client(base_url=base + "/api/v1", timeout=60, trust_env=False) as client:
        for label, next_path in todo:
            for _ in range(3):  # warm-up
                client.get(next_path()).raise_for_status()
            times, sizes, counts = [], [], []
            deadline = time.perf_counter() + seconds
            while len(times) < requests and time.perf_counter() < deadline:
                start = time.perf_counter()
                response = client.get(next_path())
                times.append((time.perf_counter() - start) * 1000)
                response.raise_for_status()
                sizes.append(len(response.content))
                body = response.json()
                counts.append(sum(len(v) for v in body.values() if isinstance(v, list)))
            results[label] = {"times": times, "bytes": percentile(sizes, 50), "rows": percentile(counts, 50)}
            print(f"{label:48s} n={len(times):4d} p50 {percentile(times, 50):8.2f} ms "
                  f"p99 {percentile(times, 99):8.2f} ms rows {results[label]['rows']}", flush=True)
    return results


def report(results, checks, steps, setup: dict, load: tuple) -> str:
    rows = ["| endpoint | calls | rows | body | p50 | p99 | max | SQL alone (p50) | query plan |",
            "|---|---|---|---|---|---|---|---|---|"]
    slow = []
    for label, r in results.items():
        t = r["times"]
        p99 = percentile(t, 99)
        check = checks[label]
        queries = f" ({check['queries']:,} queries)" if check["queries"] > 1 else ""
        flag = " ⚠" if p99 >= SLOW_P99_MS else ""
        if flag:
            slow.append((label, p99))
        rows.append(f"| {label} | {len(t)} | {r['rows']:,} | {r['bytes'] / 1024:,.0f} KiB | {percentile(t, 50):.1f} ms "
                    f"| {p99:.1f} ms{flag} | {max(t):.1f} ms | {check['p50']:.2f} ms{queries} "
                    f"| {check['plan'].replace('|', '/')} |")

    def paint(fig):
        ax = fig.add_subplot(1, 1, 1)
        labels = list(results)[::-1]
        ys = range(len(labels))
        ax.barh([y + 0.2 for y in ys], [percentile(results[k]["times"], 99) for k in labels], height=0.4,
                label="p99")
        ax.barh([y - 0.2 for y in ys], [percentile(results[k]["times"], 50) for k in labels], height=0.4,
                label="p50")
        ax.scatter([checks[k]["p50"] for k in labels], list(ys), marker="|", color="black", s=200,
                   label="SQL alone (p50)", zorder=3)
        ax.set_yticks(list(ys), labels, fontsize=8)
        ax.set_xscale("log")
        ax.set_xlabel("latency (ms), sequential calls")
        ax.axvline(SLOW_P99_MS, color="red", linestyle=":", label=f"{SLOW_P99_MS:g} ms")
        ax.grid(alpha=0.3, axis="x")
        ax.legend(fontsize=8)

    figure = draw("store", paint, size=(10, 5.5))
    return "\n".join([
        "`nanoclaw serve` (own process, NANOCLAW_CONTAINER_RUNTIME=none) on a data dir filled in bulk with the",
        f"real schema: {NAMESPACES:,} namespaces (one routed chat each), {SCHEDULES:,} schedules (none due),",
        f"{SCHEDULES * LOGS_PER_SCHEDULE:,} schedule log rows, {RUNS:,} runs, {AUDIT:,} audit entries, {CHATS:,} chats,",
        f"{MESSAGES:,} messages ({MESSAGES // CHATS} per chat); database {setup['db_mb']:.0f} MB, filled in "
        f"{setup['fill_s']:.0f} s; server ready {setup['startup_s']:.1f} s after start.",
        "Each endpoint is called sequentially on one keep-alive connection with the default page size",
        "(random schedule, chat or group per call where the path has one). \"SQL alone\" runs the same",
        "statement(s) with sqlite3 in the bench process; the rest of the latency is the server (threads,",
        f"models, JSON, HTTP). ⚠ marks p99 >= {SLOW_P99_MS:g} ms.",
        "",
        *rows,
        "",
        ("Slow at this scale: " + "; ".join(f"{label} (p99 {p99:.0f} ms)" for label, p99 in slow) + "."
         if slow else f"Every endpoint answers with p99 < {SLOW_P99_MS:g} ms."),
        "",
        "Where the time of the two whole-table lists goes (each step alone in the bench process, best of 3):",
        "",
        *[f"- {label}: " + "; ".join(f"{step} {ms:.1f} ms" for step, ms in parts.items())
          for label, parts in steps.items()],
        "",
        load_sentence(load, "2 cores, shared with other work on the machine", when="at the start of the calls"),
        "",
        figure,
    ])


def main() -> int:
    from bench.api import start_process, stop

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=200, help="calls per endpoint at most")
    parser.add_argument("--seconds", type=float, default=12.0, help="seconds per endpoint at most")
    args = parser.parse_args()
    rng = random.Random(8)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = tmp / "data"
        data.mkdir()
        start = time.perf_counter()
        ids = fill(data, rng)
        setup = {"fill_s": time.perf_counter() - start,
                 "db_mb": (data / "nanoclaw.db").stat().st_size / 2**20}
        print(f"filled in {setup['fill_s']:.1f} s, {setup['db_mb']:.0f} MB", flush=True)
        checks = sql_checks(data / "nanoclaw.db", ids, rng)
        steps = breakdown(data / "nanoclaw.db")
        env = os.environ | {"NANOCLAW_CONTAINER_RUNTIME": "none", "NANOCLAW_PROXY_PORT": "0",
                            "PYTHONUNBUFFERED": "1"}
        start = time.perf_counter()
        server, url = start_process([sys.executable, "-m", "nanoclaw", "serve", "--port", "0", "--data-dir",
                                     str(data), "--config-dir", str(tmp / "config")], env, tmp / "server.log",
                                    timeout=120)
        setup["startup_s"] = time.perf_counter() - start
        try:
            load_before = os.getloadavg()
            results = measure(url, endpoints(ids, rng), args.requests, args.seconds)
            load_after = os.getloadavg()
        except Exception:
            print((tmp / "server.log").read_text()[-3000:], file=sys.stderr)
            raise
        finally:
            stop(server)
    body = report(results, checks, steps, setup, (load_before, load_after))
    write_section(TITLE, body, "python -m bench store")
    print(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
