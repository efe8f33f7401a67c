"""The supervisor view: the state (as the JSON dict of state.json) rendered
as lines of text for a terminal of a given size.

A pure function of (state, rows, cols, now), so VT2, `/run/pid1/status` and
`python -m pid1 status` show the same thing and the tests need no terminal.
It accepts any dict: a section that is missing or of the wrong shape is shown
as "—", never an exception, because the file may come from a different
version of pid1 or be hand-edited. No line is wider than `cols` terminal
cells (wide characters count twice; control characters are replaced, so a
log message cannot move the cursor or change colours).

Layout, top to bottom: a header (uptime and mode, storage, network,
the clock, dockerd), the phase table, the container table, then the log tail filling
what is left, newest last. When rows are short, finished phases collapse
into a summary so the log keeps a few lines.
"""

from __future__ import annotations

import time
import unicodedata
from collections.abc import Iterable
from typing import Any

MISSING = "—"
ELLIPSIS = "…"
SEP = " · "
# What the Linux VT's built-in font can show instead of the few non-ASCII
# glyphs the view itself uses (user text is left alone).
ASCII_GLYPHS = str.maketrans({"—": "-", "…": "~", "·": "|"})
MIN_LOG_LINES = 3
# Below U+0300 (combining marks start there) every printable character is one cell.
NARROW_BELOW = "\u0300"
LEVEL_MARK = {"error": "E", "warning": "W", "notice": "N", "info": "I", "debug": "D"}


# --- text that fits ------------------------------------------------------------------
def cell_width(ch: str) -> int:
    if unicodedata.combining(ch):
        return 0
    return 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1


def clean(text: Any) -> str:
    """One line of printable text: control characters (escape sequences,
    tabs, newlines) become spaces."""
    text = str(text)
    if text.isprintable():  # the common case, checked in C
        return text
    return "".join(ch if ch.isprintable() else " " for ch in text)


def clip(text: str, cols: int) -> str:
    """`text` cut to at most `cols` cells, ending in an ellipsis when cut."""
    if cols <= 0:
        return ""
    narrow = not text or max(text) < NARROW_BELOW
    if narrow:
        return text if len(text) <= cols else text[: cols - 1] + ELLIPSIS
    widths = [cell_width(ch) for ch in text]
    if sum(widths) <= cols:
        return text
    out, used = [], 0
    for ch, width in zip(text, widths, strict=True):
        if used + width > cols - 1:
            break
        out.append(ch)
        used += width
    return "".join(out) + ELLIPSIS


def text_width(text: str) -> int:
    if not text or max(text) < NARROW_BELOW:
        return len(text)
    return sum(cell_width(ch) for ch in text)


def pad(text: str, width: int) -> str:
    """`text` clipped and padded to exactly `width` cells."""
    text = clip(text, width)
    return text + " " * (width - text_width(text))


# --- values -------------------------------------------------------------------------
def number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def duration(seconds: Any) -> str:
    """12ms, 3.4s, 12m05s, 3h02m, 2d04h."""
    s = number(seconds)
    if s is None:
        return MISSING
    if s < 0:
        s = 0.0
    if s < 1:
        return f"{s * 1000:.0f}ms"
    if s < 60:
        return f"{s:.1f}s"
    if s < 3600:
        return f"{int(s // 60)}m{int(s % 60):02d}s"
    if s < 86400:
        return f"{int(s // 3600)}h{int(s % 3600 // 60):02d}m"
    return f"{int(s // 86400)}d{int(s % 86400 // 3600):02d}h"


def at(value: Any) -> str:
    """An uptime stamp: 12.34."""
    t = number(value)
    return MISSING if t is None else f"{t:.2f}"


def section(state: dict[str, Any], key: str) -> dict[str, Any]:
    value = state.get(key)
    return value if isinstance(value, dict) else {}


def first(d: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        if d.get(key) not in (None, "", []):
            return d[key]
    return None


def records(value: Any) -> list[dict[str, Any]]:
    """The dict-shaped entries of a {name: {...}} table (others are skipped)."""
    if not isinstance(value, dict):
        return []
    out = []
    for name, entry in value.items():
        if isinstance(entry, dict):
            out.append({"name": name, **entry} if "name" not in entry else entry)
    return out


# --- header -------------------------------------------------------------------------
def header_lines(state: dict[str, Any], now: float, wall: float | None = None) -> list[str]:
    mode = clean(state.get("mode") or MISSING)
    first_line = f"only-docker pid1{SEP}up {duration(now)}{SEP}{mode}"
    pid = state.get("pid")
    if pid not in (None, 1):
        first_line += f" (pid {clean(pid)})"
    if state.get("emergency_reason"):
        first_line += f": {clean(state['emergency_reason'])}"
    elif state.get("stop_reason") and mode in ("stopping", "stopped"):
        first_line += f": {clean(state['stop_reason'])}"
    wall = time.time() if wall is None else wall
    lines = [first_line, storage_line(state), network_line(state, now, wall), dockerd_line(state, now)]
    clock = clock_line(state)
    if clock:
        lines.insert(3, clock)
    config = config_line(state)
    lines = [*lines[:2], config, *lines[2:]] if config else lines
    ssh = ssh_line(state)
    return [*lines, ssh] if ssh else lines


def ssh_line(state: dict[str, Any]) -> str | None:
    """dom0's SSH server: where it listens and the host key, or why there is none."""
    ssh = section(state, "ssh")
    status = ssh.get("status")
    if not status:
        return None
    if status != "running":
        return f"ssh:     {clean(ssh.get('reason') or status)}"
    keys = ssh.get("host_keys") or []
    key = clean(keys[0]) if keys else "host key unknown"
    origin = "new this boot" if ssh.get("host_key_origin") == "new" else "kept"
    count = number(ssh.get("keys")) or 0
    return (f"ssh:     port {clean(ssh.get('listen') or '?')}{SEP}{count:.0f} key{'s' if count != 1 else ''}"
            f"{SEP}{key} ({origin})")  # fmt: skip


def seconds_text(value: Any) -> str:
    s = number(value)
    return MISSING if s is None else f"{s:+.3f}s"


def clock_line(state: dict[str, Any]) -> str | None:
    """The clock (the ntp container's last round); None without an ntp phase."""
    clock = section(state, "clock")
    status = str(clock.get("status") or "")
    if not status:
        return None
    query = clock.get("mode") == "query"
    if status == "synced":
        server = clean(clock.get("server") or "?")
        if clock.get("address") and clock.get("address") != clock.get("server"):
            server += f" ({clean(clock['address'])})"
        # query mode first: the part that must not be cut at 80 columns
        text = f"query only, not set{SEP}{server}" if query else f"synced to {server}"
        text += f"{SEP}offset {seconds_text(clock.get('offset'))}"
        if number(clock.get("stratum")) is not None:
            text += f", stratum {int(clock['stratum'])}"
        if not query and number(clock.get("last_step")) is not None:
            text += f"{SEP}stepped {seconds_text(clock['last_step'])}"
    elif status == "unsynced":
        text = "not synced" + (f": {clean(clock['error'])}" if clock.get("error") else "")
    elif status == "starting":
        servers = clock.get("servers")
        shown = ",".join(clean(s) for s in servers) if isinstance(servers, list) else MISSING
        text = f"asking {shown}" + (f" ({clean(clock['source'])})" if clock.get("source") else "")
    else:
        text = clean(status)
    return f"clock:   {text}"


def config_line(state: dict[str, Any]) -> str | None:
    """Where the user-data came from and how it went; None without one."""
    ud = section(state, "userdata")
    if not ud.get("source") and not ud.get("errors"):
        return None
    text = f"user-data from {clean(ud.get('source') or '?')}"
    if ud.get("errors"):  # what needs the person's eye first, while the line has room
        return f"config:  {text}{SEP}error: {clean(ud['errors'][-1])}"
    if ud.get("instance_id"):
        text += f"{SEP}instance {clean(ud['instance_id'])}"
    applied, warnings = len(ud.get("applied") or ()), len(ud.get("warnings") or ())
    text += f"{SEP}{applied} applied"
    if warnings:
        text += f", {warnings} warning{'s' if warnings > 1 else ''}"
    return f"config:  {text}"


def storage_line(state: dict[str, Any]) -> str:
    st = section(state, "storage")
    mode = str(st.get("mode") or "").lower()
    if mode == "ram":
        text = "running from RAM (tmpfs, lost at power-off)"
        detail = str(section(section(state, "phases"), "storage").get("detail") or "")
        why = detail.removeprefix("running from RAM").strip()
        if why.startswith("(") and why.endswith(")"):
            why = why[1:-1]
        if why and not st.get("error"):
            text += f"{SEP}{clean(why)}"
    elif mode == "disk":
        text = f"disk {clean(st.get('device') or '?')}"
        extras = [clean(v) for v in (st.get("fstype"), st.get("label")) if v]
        if extras:
            text += f" ({', '.join(extras)})"
        if st.get("preexisting"):
            text += ", mounted before pid1"
    elif mode:
        text = clean(mode)
    else:
        text = MISSING
    if st.get("error"):
        text += f"{SEP}error: {clean(st['error'])}"
    return f"boot:    {text}"


EPOCH_AFTER = 1e8  # a time above this is wall-clock (seconds since 1970), not uptime


def lease_left(net: dict[str, Any], lease: float, now: float, wall: float) -> float | None:
    """Seconds of lease left. The DHCP client stamps its lease with the wall
    clock (`date +%s`); an uptime stamp is accepted too."""
    expires = number(net.get("lease_expires"))
    obtained = number(first(net, "lease_obtained", "obtained", "lease_start"))
    if expires is None and obtained is not None:
        expires = obtained + lease
    if expires is None:
        return None
    return expires - (wall if expires > EPOCH_AFTER else now)


def network_line(state: dict[str, Any], now: float, wall: float) -> str:
    net = section(state, "network")
    if not net.get("mode") and not net.get("status"):
        return f"net:     {MISSING}"
    parts = []
    mode = first(net, "mode")
    if mode:
        parts.append(clean(mode))
    link = first(net, "link", "interface", "iface")
    if link:
        parts.append(clean(link))
    address = first(net, "address", "ip")
    if address:
        prefix = net.get("prefixlen")
        parts.append(clean(address) + (f"/{clean(prefix)}" if prefix is not None and "/" not in str(address) else ""))
    status = str(net.get("status") or "")
    if status and status != "up":
        parts.append(clean(status) + (f": {clean(net['offline_reason'])}" if net.get("offline_reason") else ""))
    elif not address:
        parts.append("no address")
    gateway = first(net, "gateway", "router")
    if gateway:
        parts.append(f"gw {clean(gateway)}")
    text = " ".join(parts)
    lease = number(first(net, "lease_seconds", "lease", "lease_time"))
    if lease is not None:
        left = lease_left(net, lease, now, wall)
        if left is not None and left < 0:
            text += f"{SEP}lease of {duration(lease)} expired {duration(-left)} ago"
        elif left is not None:
            text += f"{SEP}lease {duration(left)} left of {duration(lease)}"
        else:
            text += f"{SEP}lease {duration(lease)}"
    if net.get("error"):
        text += f"{SEP}error: {clean(net['error'])}"
    dns = first(net, "dns", "nameservers")
    if dns:  # last: the least needed at a glance, the first to be cut
        text += f"{SEP}dns " + (",".join(clean(d) for d in dns) if isinstance(dns, list) else clean(dns))
    return f"net:     {text}"


def daemon_text(d: dict[str, Any], now: float) -> str:
    """pid, up since or what it is doing, restarts, error: one daemon."""
    parts = []
    if d.get("pid"):
        parts.append(f"pid {clean(d['pid'])}")
    status = str(d.get("status") or "")
    since = number(d.get("up_since"))
    if since is not None and status in ("", "running"):
        parts.append(f"up {duration(now - since)} (since {since:.2f})")
    elif status == "starting" or (not status and d.get("pid")):
        parts.append("starting, not answering yet")
    elif status:
        parts.append(
            clean(status) + (f" (last exit {clean(d['last_exit'])})" if d.get("last_exit") is not None else "")
        )
    else:
        parts.append("not running")
    restarts = number(d.get("restarts"))
    if restarts is not None:
        parts.append(f"{int(restarts)} restart{'' if restarts == 1 else 's'}")
    text = ", ".join(parts)
    if d.get("error"):
        text += f"{SEP}error: {clean(d['error'])}"
    return text


def dockerd_line(state: dict[str, Any], now: float) -> str:
    """dockerd's line; state.dockerd is either one daemon's fields or one
    entry per daemon ({"dockerd": {...}, "containerd": {...}})."""
    d = section(state, "dockerd")
    if not d:
        return f"dockerd: {MISSING}"
    daemons = {name: entry for name, entry in d.items() if isinstance(entry, dict)}
    if not daemons:
        return f"dockerd: {daemon_text(d, now)}"
    text = daemon_text(daemons["dockerd"], now) if "dockerd" in daemons else MISSING
    for name, entry in daemons.items():
        if name != "dockerd":
            status = clean(entry.get("status") or "?")
            restarts = number(entry.get("restarts"))
            text += f"{SEP}{clean(name)} {status}" + (f", {int(restarts)} restarts" if restarts else "")
    return f"dockerd: {text}"


# --- phases ----------------------------------------------------------------------------
PHASE_NAME_MIN, PHASE_NAME_MAX, PHASE_STATE_W, PHASE_NUM_W = 11, 16, 9, 7


def sorted_phases(state: dict[str, Any]) -> list[dict[str, Any]]:
    def key(p: dict[str, Any]) -> tuple[bool, float]:
        started = number(p.get("started"))
        return (started is None, started or 0.0)

    return sorted(records(state.get("phases")), key=key)


def name_width(phases: list[dict[str, Any]]) -> int:
    longest = max((len(clean(p.get("name", "?"))) for p in phases), default=0)
    return min(max(longest, PHASE_NAME_MIN), PHASE_NAME_MAX)


def phase_row(p: dict[str, Any], now: float, cols: int, name_w: int) -> str:
    status = clean(p.get("status") or "?")
    attempts = number(p.get("attempts"))
    if attempts and attempts > 1:
        status += f"#{int(attempts)}"
    started = number(p.get("started"))
    took = p.get("duration")
    if took is None and started is not None and p.get("status") in ("running", "retrying"):
        took = now - started  # still going: time so far
    if p.get("error") and p.get("status") != "done":
        detail = "error: " + clean(p["error"])
    else:
        detail = clean(p.get("detail") or "")
    row = (
        pad(clean(p.get("name", "?")), name_w)
        + " "
        + pad(status, PHASE_STATE_W)
        + " "
        + pad(at(started), PHASE_NUM_W)
        + " "
        + pad(duration(took), PHASE_NUM_W)
        + " "
        + detail
    )
    return clip(row.rstrip(), cols)


def phase_lines(state: dict[str, Any], now: float, cols: int, budget: int) -> list[str]:
    phases = sorted_phases(state)
    name_w = name_width(phases)
    title = clip(
        pad("PHASE", name_w)
        + " "
        + pad("STATE", PHASE_STATE_W)
        + " "
        + pad("START", PHASE_NUM_W)
        + " "
        + pad("TIME", PHASE_NUM_W)
        + " DETAIL",
        cols,
    )
    if not phases:
        return [title, MISSING]
    if len(phases) + 1 <= budget:
        return [title] + [phase_row(p, now, cols, name_w) for p in phases]
    # Short screen: finished phases become one wrapped summary; what is still
    # running or has failed keeps its own row (that is what a person looks for).
    done = [p for p in phases if p.get("status") == "done"]
    rest = [p for p in phases if p.get("status") != "done"]
    summary = wrap_words([f"{clean(p.get('name', '?'))} {duration(p.get('duration'))}" for p in done], cols, "done: ")
    lines = [title, *summary, *(phase_row(p, now, cols, name_w) for p in rest)]
    if len(lines) > budget and budget >= 2:
        hidden = len(lines) - budget + 1
        lines = [*lines[: budget - 1], clip(f"{ELLIPSIS} {hidden} more phase lines", cols)]
    return lines


def wrap_words(words: Iterable[str], cols: int, lead: str) -> list[str]:
    lines: list[str] = []
    current = lead
    for word in words:
        candidate = current + (", " if current != lead else "") + word
        if text_width(candidate) > cols and current != lead:
            lines.append(current + ",")
            current = "  " + word
        else:
            current = candidate
    if current != lead:
        lines.append(clip(current, cols))
    return [clip(line, cols) for line in lines]


# --- containers -------------------------------------------------------------------------
CT_ROLE_W, CT_STATE_W, CT_UP_W, CT_RESTARTS_W = 8, 9, 8, 4


def container_row(c: dict[str, Any], now: float, cols: int) -> str:
    status = clean(c.get("status") or "?")
    since = number(c.get("up_since"))
    up = duration(now - since) if since is not None and c.get("status") == "running" else MISSING
    restarts = number(c.get("restarts"))
    notes = []
    image = c.get("image")
    if image:
        reason = c.get("image_reason")
        notes.append(clean(image) + (f" ({clean(reason)})" if reason else ""))
    else:
        notes.append("no image")
    if c.get("fallback_reason"):
        notes.append("fallback: " + clean(c["fallback_reason"]))
    if c.get("name_conflict"):
        notes.append("name: " + clean(c["name_conflict"]))
    retry = number(c.get("next_retry"))
    if retry is not None and c.get("status") in ("backoff", "exited", "starting", "pending"):
        notes.append(f"retry in {duration(retry - now)}")
    if c.get("last_exit") is not None:
        notes.append(f"last exit {clean(c['last_exit'])}")
    if c.get("container_id"):
        notes.append(clean(c["container_id"])[:12])
    row = (
        pad(clean(c.get("role") or c.get("name", "?")), CT_ROLE_W)
        + " "
        + pad(status, CT_STATE_W)
        + " "
        + pad(up, CT_UP_W)
        + " "
        + pad(str(int(restarts)) if restarts is not None else MISSING, CT_RESTARTS_W)
        + " "
        + SEP.join(notes)
    )
    return clip(row.rstrip(), cols)


def container_lines(state: dict[str, Any], now: float, cols: int) -> list[str]:
    title = clip(
        pad("ROLE", CT_ROLE_W)
        + " "
        + pad("STATE", CT_STATE_W)
        + " "
        + pad("UP", CT_UP_W)
        + " "
        + pad("RST", CT_RESTARTS_W)
        + " IMAGE (WHY)",
        cols,
    )
    rows = [container_row(c, now, cols) for c in records(state.get("containers"))]
    return [title, *(rows or [MISSING])]


# --- log ------------------------------------------------------------------------------
def log_entries(state: dict[str, Any]) -> list[dict[str, Any]]:
    value = state.get("log")
    return [e for e in value if isinstance(e, dict)] if isinstance(value, list) else []


def log_line(entry: dict[str, Any], cols: int) -> str:
    t = number(entry.get("time"))
    stamp = f"{t:9.3f}" if t is not None else " " * 9
    mark = LEVEL_MARK.get(str(entry.get("level")), "?")
    return clip(f"[{stamp}] {mark} {clean(entry.get('message', ''))}".rstrip(), cols)


def log_lines(state: dict[str, Any], cols: int, count: int) -> list[str]:
    if count <= 0:
        return []
    entries = log_entries(state)
    title = clip(f"LOG (newest last, {len(entries)} in the ring)", cols)
    if count == 1:
        return [title]
    tail = entries[-(count - 1) :] if entries else []
    return [title, *(log_line(e, cols) for e in tail)] if tail else [title, MISSING]


# --- the whole screen --------------------------------------------------------------------
def render(state: dict[str, Any], rows: int, cols: int, now: float, wall: float | None = None) -> list[str]:
    """The view as at most `rows` lines of at most `cols` cells each. `now`
    is the uptime to show the state at; `wall` the wall clock (default: now),
    for the DHCP lease, which is stamped with it."""
    if rows <= 0 or cols <= 0:
        return []
    if not isinstance(state, dict):
        state = {}
    head = [clip(line, cols) for line in header_lines(state, now, wall)]
    containers = container_lines(state, now, cols)
    log_min = min(MIN_LOG_LINES + 1, max(rows - len(head) - len(containers) - 2, 0))
    phase_budget = max(rows - len(head) - len(containers) - log_min, 2)
    phases = phase_lines(state, now, cols, phase_budget)
    lines = [*head, *phases, *containers]
    lines += log_lines(state, cols, rows - len(lines))
    return lines[:rows]


def render_long(
    state: dict[str, Any], cols: int, now: float, log_count: int = 40, wall: float | None = None
) -> list[str]:
    """Everything (every phase, every container) and the last `log_count`
    log lines: the status file and `status` when not on a terminal."""
    if not isinstance(state, dict):
        state = {}
    head = [clip(line, cols) for line in header_lines(state, now, wall)]
    phases = phase_lines(state, now, cols, budget=10**6)
    containers = container_lines(state, now, cols)
    lines = [*head, *phases, *containers]
    return lines + log_lines(state, cols, log_count + 1)


# --- reading state.json (status and plot) ------------------------------------------------
class StateFileError(Exception):
    """A state file that cannot be shown; the message is one line for the user."""


def load_state(path: str) -> dict[str, Any]:
    """state.json as a dict, or StateFileError saying in one line what is wrong."""
    import json
    import os
    import stat

    try:
        # non-blocking: a FIFO (or a device) at the path must not hang `status`
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise StateFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise StateFileError(f"{path}: not a regular file ({file_kind(mode)}), not a pid1 state")
        with os.fdopen(fd, "rb", closefd=False) as f:
            raw = f.read(64 * 1024 * 1024)
    except OSError as exc:
        raise StateFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if not raw.strip():
        raise StateFileError(f"{path}: empty file (not a pid1 state)")
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise StateFileError(f"{path}: not UTF-8 text (not a pid1 state)") from None
    except ValueError as exc:
        hint = " (truncated?)" if not raw.rstrip().endswith(b"}") else ""
        raise StateFileError(f"{path}: not valid JSON{hint}: {getattr(exc, 'msg', exc)} ({exc_where(exc)})") from None
    if not isinstance(data, dict):
        raise StateFileError(f"{path}: a JSON {type(data).__name__}, not a pid1 state object")
    known = {"phases", "mode", "log", "milestones", "containers"}
    if not known & data.keys():
        raise StateFileError(f"{path}: a JSON object without any pid1 state field ({', '.join(sorted(known))})")
    for key in ("phases", "containers", "milestones", "storage", "network", "dockerd"):
        if key in data and not isinstance(data[key], dict):
            raise StateFileError(f"{path}: field {key!r} is a {type(data[key]).__name__}, expected an object")
    if "log" in data and not isinstance(data["log"], list):
        raise StateFileError(f"{path}: field 'log' is a {type(data['log']).__name__}, expected a list")
    return data


def file_kind(mode: int) -> str:
    import stat

    kinds = {stat.S_ISFIFO: "a FIFO", stat.S_ISDIR: "a directory", stat.S_ISCHR: "a character device"}
    return next((name for test, name in kinds.items() if test(mode)), "a special file")


def exc_where(exc: ValueError) -> str:
    line, col = getattr(exc, "lineno", None), getattr(exc, "colno", None)
    return f"line {line} column {col}" if line is not None else "?"


def status_main(state_path: str, rows: int | None, cols: int | None, long: bool) -> int:
    """`python -m pid1 status`: the view once, on stdout. Exit 2 on a bad file."""
    import os
    import shutil
    import sys

    from pid1.state import uptime

    try:
        data = load_state(state_path)
    except StateFileError as exc:
        print(f"pid1 status: {exc}", file=sys.stderr)
        return 2
    updated = number(data.get("updated"))
    now = uptime()
    if updated is not None and updated > now:
        now = updated  # a file from another boot: show it as of its last write
    on_terminal = sys.stdout.isatty()
    size = shutil.get_terminal_size((80, 25))
    cols = cols or (size.columns if on_terminal else 80)
    try:
        if long or (rows is None and not on_terminal):
            lines = render_long(data, cols, now)
        else:
            lines = render(data, rows or size.lines, cols, now)
    except Exception as exc:  # a shape load_state did not foresee: still one line
        print(f"pid1 status: {state_path}: cannot show this state: {exc!r}", file=sys.stderr)
        return 2
    try:
        sys.stdout.write("\n".join(lines) + "\n")
        sys.stdout.flush()
    except BrokenPipeError:  # `status | head`: not an error; keep exit quiet
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0
