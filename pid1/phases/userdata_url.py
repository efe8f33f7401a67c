"""userdata_url: the user-data from `pid1.userdata=URL` (http), fetched once
the network is up, bounded in time and size. Needs network (Wiring.network_up:
when the network phase went on offline, the fetch waits up to NETWORK_WAIT
for a lease that comes later) and userdata (whose volume, when there was
one, wins: the URL is then not fetched).

A URL ending in `/` is a NoCloud seed (`user-data` and `meta-data` under it);
any other URL is the user-data itself. What it gives is kept in the host
state. Engine settings, files and pid1 keys must be in place before dockerd,
which started before the network: they apply from the copy kept for the next
boot (applied before dockerd), and the log says so. runcmd and the script run
now (the runcmd phase waits for this one), and the machine takes the
hostname now (dom0 and the console share the machine's name).
"""

from __future__ import annotations

import asyncio
import socket

from pid1.config import KERNEL
from pid1.phases import Phase, PhaseContext
from pid1.phases.userdata import Applied, is_volume, keep_copy, record_outcome
from pid1.phases.userdata_volume import Found
from pid1.wiring import Wiring

FETCH_TIMEOUT = 30.0
NETWORK_WAIT = 120.0  # a lease that comes after the network phase went on offline


class FetchError(RuntimeError):
    pass


async def fetch(url: str, timeout: float = FETCH_TIMEOUT) -> bytes:
    """GET url: its body (at most MAX_USERDATA_BYTES), or FetchError saying why."""
    import aiohttp  # aiodocker's HTTP client, loaded with it already

    from pid1.userdata import MAX_USERDATA_BYTES

    limit = MAX_USERDATA_BYTES
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session:
            async with session.get(url, allow_redirects=True, max_redirects=3) as response:
                if response.status != 200:
                    raise FetchError(f"{url} answered {response.status} {response.reason or ''}".strip())
                body = await response.content.read(limit + 1)
    except TimeoutError:
        raise FetchError(f"{url} did not answer within {timeout:.0f} s") from None
    except aiohttp.ClientError as exc:
        raise FetchError(f"{url}: {exc}") from None
    except RuntimeError as exc:
        # aiohttp is loaded without TLS (pid1/engine/client.py, import_aiodocker):
        # a redirect to https:// ends here, as an https:// URL given would
        raise FetchError(f"{url}: {exc} (pid1 fetches http:// only, redirects included)") from None
    if len(body) > limit:
        raise FetchError(f"{url} gave more than the {limit // 1024} KiB a user-data may be")
    return body


async def run(ctx: PhaseContext) -> str:
    url = ctx.config.userdata
    applied = ctx.wiring.maybe(Wiring.userdata)
    if not url:
        return "no pid1.userdata URL"
    if not url.startswith("http://"):
        ctx.log.warning(f"userdata: pid1.userdata={url!r} is not an http:// URL: ignored")
        return "not an http URL"
    source = (ctx.state.userdata.source or "") if applied else ""
    if is_volume(source):
        return f"a volume came first ({source}): {url} not fetched"
    up = ctx.wiring.maybe(Wiring.network_up)
    if up is not None and not up.is_set():
        # The network phase went on offline (pid1.net_timeout): a lease can still come.
        ctx.log.info(f"userdata: waiting up to {NETWORK_WAIT:.0f} s for the network before fetching {url}")
        try:
            await asyncio.wait_for(up.wait(), NETWORK_WAIT)
        except TimeoutError:
            ctx.log.warning(f"userdata: the network is not up after {NETWORK_WAIT:.0f} s: {url} is tried anyway")
    try:
        raw = await fetch(url + "user-data" if url.endswith("/") else url)
        meta_raw = (await fetch(url + "meta-data")) if url.endswith("/") else b""
    except FetchError as exc:
        ctx.log.warning(f"userdata: {exc}; the boot goes on without it")
        ctx.state.userdata.warnings.append(str(exc))
        ctx.store.changed()
        return f"not fetched: {exc}"
    from pid1.userdata import MetaData, UserDataError, parse_meta_data, parse_userdata

    try:
        data = parse_userdata(raw)
        meta = parse_meta_data(meta_raw) if meta_raw else MetaData()
    except UserDataError as exc:
        error = f"user-data from {url}: {exc}; none of it applies"
        ctx.log.error(f"userdata: {error}")
        ctx.state.userdata.errors.append(error)
        ctx.store.changed()
        return f"error: {exc}"
    return apply_late(ctx, applied, url, raw, meta_raw, data, meta)


def apply_late(ctx: PhaseContext, applied: Applied | None, url: str, raw: bytes, meta_raw: bytes, data, meta) -> str:
    if applied is None or applied.host_state is None:
        return "no host state to keep it in"
    changed = applied.host_state.read("user-data") != raw
    keep_copy(applied.host_state, Found(f"url {url}", raw, meta_raw))
    applied.take(data, meta, raw)
    done = []
    from pid1.phases import hostname

    from_kernel = ctx.config.origins.get("hostname") == KERNEL
    if data.hostname and not from_kernel and socket.gethostname() != data.hostname:
        # The machine's name now (dom0 and the console share it).
        hostname.rename(ctx, ctx.config.hostname, data.hostname)
        ctx.config.hostname = data.hostname
        done.append(f"hostname {data.hostname}")
    if changed and (data.docker is not None or data.write_files or data.settings):
        ctx.log.notice(f"userdata: engine settings, files and pid1 keys from {url} apply from the next boot "
                       "(they must be in place before dockerd, which starts before the network)")  # fmt: skip
    runcmd = ["runcmd"] if data.runcmd or data.script else []
    record_outcome(ctx, f"url {url}", data, meta, done + runcmd, list(data.warnings))
    ctx.log.notice(f"userdata: from url {url}: {', '.join(done) or 'kept for the next boot'}")
    return f"url {url}: {'changed' if changed else 'as kept'}, {len(data.warnings)} warnings"


PHASE = Phase(name="userdata_url", run=run, needs=("network", "userdata"), required=False,
              uses=(Wiring.userdata, Wiring.network_up))  # fmt: skip
