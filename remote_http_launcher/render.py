"""Text for people: what the CLI prints for status, list and stop results.

The operations (commands/) return data; this is the only place that turns
it into words, so the API and the CLI agree on every message.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from .commands.entries import ABSENT, FAILED, FAILED_AT_LAUNCH, QUEUED, RUNNING, STALE, STARTING, ServiceEntry
from .commands.status import NOT_ITS_PORT, UNVERIFIED, VERIFIED, StatusResult
from .commands.stop import StoppedProcess, StopResult
from .tunnels.lock import LINK_UP

if TYPE_CHECKING:
    from .broker.control import Connection
    from .commands.check import CheckReport

PORT_LISTENER_NOTES = {
    UNVERIFIED: "unverified: no handshake, and {host} cannot show which process listens there",
    NOT_ITS_PORT: "not the service's: another process listens there",
}


class StopOutcome(StopResult):
    """What the API's `stop` returns: the data, and the message the CLI prints."""

    message: str


def stop_outcome(result: StopResult) -> StopOutcome:
    return {**result, "message": stop_message(result)}


def stop_message(result: StopResult) -> str:
    """One line: what was stopped and how, or that nothing was running (and what was cleaned up)."""
    if result["processes"]:
        how = ", ".join(_stopped(s, result["timeout"]) for s in result["processes"])
        message = f"stopped {result['key']} on {result['host']} ({how})"
    else:
        message = "not running; nothing to stop"
        notes = []
        if result["refused"]:
            notes.append(f"{result['refused']}; left it alone")
        if result["removed"]:
            notes.append("removed stale " + ", ".join(result["removed"]))
        if notes:
            message += " (" + "; ".join(notes) + ")"
    if result["keeper_is_broker"]:
        message += f"; tunnel closed (the connection broker {result['keeper_pid']} stays for other commands)"
    elif result["keeper_pid"] is not None:
        message += f"; tunnel keeper {result['keeper_pid']} stopped"
    return message


def _stopped(process: StoppedProcess, timeout: float) -> str:
    what = f"job {process['job_id']}" if "job_id" in process else f"pid {process['pid']}"
    if process["signal"] == "CANCEL":
        return f"{what}, cancelled while queued"
    return what + (" with SIGTERM" if process["signal"] == "TERM" else
                   f": no exit within {timeout:g} s of SIGTERM, killed with SIGKILL")


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def format_status(entry: StatusResult) -> str:
    status_now = entry["status"]
    head = f"{entry['key']} on {entry['host']}: {status_now}"
    if entry["detail"]:
        head += f" ({entry['detail']})"
    job = entry["job"]
    rows: list[tuple[str, object]] = [] if job is None else [
        ("job", f"{job['id']} ({job['scheduler']}, {job['state'].lower()})"),
        ("node", job["node"]),
        *([("reason", job["reason"]), ("est. start", job["start_estimate"])] if status_now == QUEUED else
          [("time left", job["time_left"])]),
    ]
    rows += [
        ("pid", entry["pid"]),
        ("port", entry["port"] if entry["port_listener"] in (None, VERIFIED) else
         f"{entry['port']} ({PORT_LISTENER_NOTES[entry['port_listener']].format(host=entry['host'])})"),
        ("uptime" if entry["uptime"] is not None else "age",
         format_duration(entry["uptime"] if entry["uptime"] is not None else entry["age"])),
        ("workdir", entry["workdir"]),
        ("log", entry["log"]),
        ("status file", entry["status_file"] if status_now != ABSENT else f"{entry['status_file']} (absent)"),
    ]
    client = entry["client"]
    url = client["url"] or entry["url"]
    if url is not None or entry["url_pattern_matched"] is False:
        rows.append(("url", (url or "-") + ("" if entry["url_pattern_matched"] is not False else
                                            " (url_pattern did not match the log: the plain URL)")))
    if client["present"]:
        where = f"{client['hostname']}:{client['port']}" if client["valid"] else "unreadable"
        rows.append(("client file", f"{client['connection_file']} ({where})"))
    else:
        rows.append(("client file", f"{client['connection_file']} (absent)"))
    if client["keeper_pid"] is not None:
        rows.append(("tunnel keeper", f"pid {client['keeper_pid']} "
                                      f"({'alive' if client['keeper_alive'] else 'not running'})"))
    if client["tunnel_up"] is False:
        rows.append(("tunnel", "down: no tunnel keeper serves it"))
    elif client["link"] not in (None, LINK_UP):
        rows.append(("tunnel", f"{client['link']} (its local ports stay bound)"))
    lines = [head] + [f"  {name:<14}{'-' if value is None else value}" for name, value in rows]
    hint = {
        ABSENT: "start it with 'remote-http-launcher CONFIG'",
        STALE: "clean up with 'remote-http-launcher stop CONFIG', or relaunch with 'remote-http-launcher CONFIG'",
        FAILED: "see why with 'remote-http-launcher logs CONFIG'; relaunch with 'remote-http-launcher CONFIG'",
        STARTING: "wait for it with 'remote-http-launcher CONFIG'",
        QUEUED: "wait for it with 'remote-http-launcher CONFIG'",
    }.get(status_now)
    if status_now == STALE and (entry["detail"] or "").startswith(FAILED_AT_LAUNCH):
        hint = "see why with 'remote-http-launcher logs CONFIG'; relaunch with 'remote-http-launcher CONFIG'"
    if entry["port_listener"] == NOT_ITS_PORT:
        hint = "the service reported a port it does not listen on; stop it ('remote-http-launcher stop CONFIG') " \
               "and see its log"
    if status_now == RUNNING and client["tunnel_up"] is False:
        hint = "restore the tunnel with 'remote-http-launcher CONFIG' (the service itself runs)"
    if hint:
        lines.append(f"  {'next':<14}{hint}")
    return "\n".join(lines)


def format_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in [header, *rows]]


def _list_status(entry: ServiceEntry) -> str:
    """The STATUS cell: stale ones marked, a queued job with why it waits."""
    if entry["status"] == STALE:
        return f"{STALE} !"
    if entry["status"] == QUEUED and entry["detail"]:
        return f"{QUEUED} ({entry['detail']})"
    return entry["status"]


def format_list(host_name: str, entries: list[ServiceEntry]) -> str:
    if not entries:
        return f"no services on {host_name}"
    header: tuple[str, ...] = ("KEY", "STATUS", "PID", "PORT", "AGE")
    rows: list[tuple[str, ...]] = [(e["key"], _list_status(e),
                                    str(e["pid"] or "-"), str(e["port"] or "-"), format_duration(e["age"]))
                                   for e in entries]
    if any(e["job"] for e in entries):  # batch jobs: which job, on which node
        header += ("JOB", "NODE")
        rows = [(*row, *((e["job"]["id"], e["job"]["node"] or "-") if e["job"] else ("-", "-")))
                for row, e in zip(rows, entries, strict=True)]
    lines = format_table(header, rows)
    stale = sum(e["status"] == STALE for e in entries)
    if stale:
        lines.append(f"{stale} stale (!): process gone; 'remote-http-launcher stop CONFIG' removes the state")
    return "\n".join(lines)


def format_connections(entries: list[Connection]) -> str:
    """`connections`: one row per broker; ages as durations ("-" when it did not answer). After an edit of
    ~/.ssh/config a host has two: the one new commands use is "current"."""
    if not entries:
        return "no connection brokers"
    now = time.time()

    def ago(moment: float | None) -> str:
        return format_duration(max(0.0, now - moment)) + " ago" if moment is not None else "-"

    def count(value: object) -> str:
        return "-" if value is None else str(len(value) if isinstance(value, list) else value)

    return "\n".join(format_table(("HOST", "PID", "SINCE", "LAST USE", "IN USE", "TUNNELS", "LINK", "SSH CONFIG"),
                                  [(e["host"] or "?", str(e["pid"]), ago(e["since"]), ago(e["last_use"]),
                                    count(e["sessions"]), count(e["tunnels"]), e["link"] or "-",
                                    "current" if e["current"] else "old (idles out)") for e in entries]))


CHECK_MARKS = {"ok": "✓", "fail": "✗", "info": "·"}
CHECK_WORDS = {"ok": "ok  ", "fail": "FAIL", "info": "    "}  # for a terminal that cannot show the marks


def format_checks(report: CheckReport, *, marks: bool = True) -> str:
    """The checklist: one line per check, and under each failure what to do."""
    symbols = CHECK_MARKS if marks else CHECK_WORDS
    width = max(len(item["name"]) for item in report["checks"])
    lines = []
    for item in report["checks"]:
        lines.append(f"{symbols[item['outcome']]} {item['name']:<{width}}  {item['detail']}")
        if item["advice"]:
            lines.append(f"  {' ' * width}  → {item['advice']}" if marks else f"  {' ' * width}  -> {item['advice']}")
    failed = sum(item["outcome"] == "fail" for item in report["checks"])
    lines.append(f"{failed} check{'s' * (failed != 1)} failed" if failed else "all checks passed")
    return "\n".join(lines)
