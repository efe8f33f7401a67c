"""The Docker Engine API as pid1 uses it: the only module of pid1 that
imports aiodocker (and so aiohttp).

Owns `DockerClient` (one per boot, on pid1.docker_socket: the slot
`Wiring.docker`), `Container` (one container by id: what the system
containers start, stop and remove, the console bridge attaches to and
runcmd execs in), the swarm calls (the swarm phase's), `Events` (one subscription to the event stream),
`ListedContainer` (a line of `docker ps -a`) and `EngineError` (dockerd said
no: its HTTP status and its own words). Every aiodocker error leaves this
module as an EngineError, so the callers need not know aiodocker's
exception classes. What of aiodocker's insides pid1 must use stays here:
`_query` (the headers of /_ping, and /images/create, whose query repeats a
key) and the events channel's subscriber queues.

aiodocker is imported only by `DockerClient.open`, in a thread, while
dockerd starts (the import's cost under emulation:
docs/benchmarks.md#start-up-costs-inside-pid1). May use: the standard
library and aiodocker; nothing of pid1.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any
from urllib.parse import urlencode


class EngineError(Exception):
    """dockerd refused a request: its HTTP status and its own words."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    def __str__(self) -> str:
        return f"[{self.status}] {self.message}"


@contextlib.contextmanager
def dockerd_errors() -> Iterator[None]:
    """aiodocker's DockerError (and its kinds) as EngineError."""
    from aiodocker.exceptions import DockerError

    try:
        yield
    except DockerError as exc:
        raise EngineError(exc.status, exc.message) from exc


def import_aiodocker() -> Any:
    """aiodocker, with aiohttp imported as if Python had no ssl module. pid1
    speaks HTTP to dockerd on a unix socket and fetches user-data over
    http:// only, but aiohttp, when it finds ssl, builds two TLS client
    contexts at import, the system's CA bundle parsed into them, and they
    stay resident (docs/benchmarks.md, "pid1's idle RSS"). A None in
    sys.modules makes `import ssl` raise ImportError, which aiohttp takes
    as "no TLS support". ssl itself stays loaded (asyncio and uvloop import
    it) and is put back before aiodocker, which imports it unconditionally."""
    ssl = sys.modules.get("ssl")
    sys.modules["ssl"] = None  # type: ignore[assignment]
    try:
        importlib.import_module("aiohttp")
    finally:
        if ssl is None:
            del sys.modules["ssl"]
        else:
            sys.modules["ssl"] = ssl
    return importlib.import_module("aiodocker")


def progress_messages(body: bytes) -> list[Any]:
    """A progress stream (one JSON document per line) as messages."""
    messages = []
    for line in body.splitlines():
        try:
            messages.append(json.loads(line))
        except ValueError:
            continue
    return messages


def raise_progress_error(messages: Iterable[Any]) -> None:
    """/images/load and /images/create answer 200 and report a failure as an
    `error` message in their progress stream."""
    for message in messages:
        if isinstance(message, dict) and message.get("error"):
            raise RuntimeError(message["error"])


@dataclass(frozen=True)
class ListedContainer:
    """One container as /containers/json lists it."""

    id: str
    names: tuple[str, ...]
    state: str  # "running", "exited", "created"...
    labels: dict[str, str]


class AttachStream:
    """A container's attach stream (the console bridge's), opened by
    `__aenter__`; dockerd refusing it is an EngineError."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    async def __aenter__(self) -> AttachStream:
        with dockerd_errors():
            await self._stream.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def read_out(self) -> Any:
        """The next output message (`.data`: bytes), None at the stream's end."""
        return await self._stream.read_out()

    async def write_in(self, data: bytes) -> None:
        await self._stream.write_in(data)

    async def close(self) -> None:
        await self._stream.close()


class Container:
    """One container, by id (or name)."""

    def __init__(self, handle: Any) -> None:
        self._handle = handle  # aiodocker's DockerContainer

    @property
    def id(self) -> str:
        return self._handle.id

    async def start(self) -> None:
        with dockerd_errors():
            await self._handle.start()

    async def stop(self, timeout: int) -> None:
        """SIGTERM (or the container's stop signal), SIGKILL after `timeout` s."""
        with dockerd_errors():
            await self._handle.stop(t=timeout)

    async def remove(self) -> None:
        """Remove it, killing it first if it runs."""
        with dockerd_errors():
            await self._handle.delete(force=True)

    async def show(self) -> dict[str, Any]:
        with dockerd_errors():
            return await self._handle.show()

    async def wait(self) -> dict[str, Any]:
        """Returns once it is not running (at once when it is not)."""
        with dockerd_errors():
            return await self._handle.wait()

    async def resize(self, *, h: int, w: int) -> None:
        """Its TTY's size, in rows (h) and columns (w)."""
        with dockerd_errors():
            await self._handle.resize(h=h, w=w)

    def attach(self, **options: Any) -> AttachStream:
        """Its attach stream (stdin, stdout, stderr, logs, detach_keys)."""
        return AttachStream(self._handle.attach(**options))

    async def exec(self, argv: list[str], limit: int) -> tuple[int | None, bytes]:
        """Run argv in it (no TTY); its exit code and the first `limit` bytes of its output."""
        with dockerd_errors():
            execution = await self._handle.exec(argv, stdout=True, stderr=True, tty=False)
            output = bytearray()
            async with execution.start(detach=False) as stream:
                while (message := await stream.read_out()) is not None:
                    if len(output) < limit:
                        output += message.data[: limit - len(output)]
            inspected = await execution.inspect()
        return inspected.get("ExitCode"), bytes(output)


class Events:
    """One subscription to dockerd's event stream, as an async context
    manager: `next()` gives each event (a dict), then None when the stream
    ends (dockerd stopped or restarted)."""

    def __init__(self, docker: Any, filters: dict[str, list[str]], since: float) -> None:
        self._events = docker.events
        self._filters = json.dumps(filters)
        self._since = f"{since:.6f}"
        self._queue: Any = None
        self._runner: asyncio.Task | None = None

    async def __aenter__(self) -> Events:
        self._queue = self._events.subscribe(create_task=False)
        self._runner = asyncio.get_running_loop().create_task(
            self._events.run(filters=self._filters, since=self._since)
        )
        return self

    async def next(self) -> dict[str, Any] | None:
        return await self._queue.get()

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._runner
        with contextlib.suppress(ValueError, AttributeError):
            self._events.channel.queues.remove(self._queue.queue)


class DockerClient:
    """pid1's client of dockerd's API on one unix socket."""

    def __init__(self, docker: Any) -> None:
        self._docker = docker  # aiodocker.Docker

    @classmethod
    async def open(cls, socket_path: str) -> DockerClient:
        """A client on `socket_path`. aiodocker (and aiohttp under it) is
        imported here, in a thread, so the loop (the reaper, the console, the
        daemons' output) keeps going meanwhile."""
        aiodocker = await asyncio.to_thread(import_aiodocker)
        return cls(aiodocker.Docker(url=f"unix://{socket_path}"))

    async def ping(self) -> bool:
        """Whether /_ping answers. The answer also pins the client to the
        daemon's API version (its API-Version header): left on "auto",
        aiodocker asks /version on first use, once per request already in
        flight, and each /version makes dockerd exec runc and docker-init."""
        docker = self._docker
        try:
            async with docker._query("_ping", versioned_api=False) as response:
                version = response.headers.get("API-Version")
                if response.status == 200 and version and docker.api_version == "auto":
                    docker.api_version = f"v{version}"
                return response.status == 200
        except Exception:  # not listening yet, or half up: try again
            return False

    # --- images ---------------------------------------------------------------------------
    async def image_id(self, reference: str) -> str | None:
        """The id of the image `reference` names, None when there is none."""
        try:
            with dockerd_errors():
                return (await self._docker.images.inspect(reference))["Id"]
        except EngineError as exc:
            if exc.status == 404:
                return None
            raise

    async def load_image(self, tarball: IO[bytes]) -> None:
        """POST a `docker save` tarball to /images/load, streamed from the file."""
        with dockerd_errors():
            result = await self._docker.images.import_image(data=tarball)
        raise_progress_error(result if isinstance(result, list) else [result])

    async def import_layer(self, layer: IO[bytes], repository: str, tag: str, changes: Iterable[str]) -> None:
        """Stream one layer to /images/create?fromSrc=- as repository:tag,
        with Dockerfile instructions (`changes`) for its config."""
        query = [("fromSrc", "-"), ("repo", repository), ("tag", tag), *(("changes", c) for c in changes)]
        # the query goes in the path: aiodocker's params cannot repeat a key
        with dockerd_errors():
            async with self._docker._query(
                f"images/create?{urlencode(query)}", "POST", data=layer, headers={"Content-Type": "application/x-tar"}
            ) as response:
                body = await response.read()
        raise_progress_error(progress_messages(body))

    async def tag_image(self, source: str, repository: str, tag: str) -> None:
        with dockerd_errors():
            await self._docker.images.tag(source, repository, tag=tag)

    # --- containers -----------------------------------------------------------------------
    async def list_containers(self, label: str) -> list[ListedContainer]:
        """Every container (running or not) with the label `label` (KEY or KEY=VALUE)."""
        with dockerd_errors():
            listed = await self._docker.containers.list(all=True, filters=json.dumps({"label": [label]}))
        return [
            ListedContainer(
                id=c.id,
                names=tuple(c["Names"] if "Names" in c else ()),
                state=c["State"] if "State" in c else "",
                labels=dict((c["Labels"] if "Labels" in c else None) or {}),
            )
            for c in listed
        ]

    async def create_container(self, config: dict[str, Any], name: str) -> Container:
        """Create (never pull, never start) a container; 409: the name is taken."""
        with dockerd_errors():
            return Container(await self._docker.containers.create(config, name=name))

    def container(self, id_or_name: str) -> Container:
        return Container(self._docker.containers.container(id_or_name))

    async def inspect_container(self, id_or_name: str) -> dict[str, Any] | None:
        """What /containers/ID/json says, None when there is no such container."""
        try:
            return await self.container(id_or_name).show()
        except EngineError as exc:
            if exc.status == 404:
                return None
            raise

    # --- swarm ---------------------------------------------------------------------------
    async def info(self) -> dict[str, Any]:
        """/info: the engine's name (its host name) and `Swarm` (LocalNodeState, NodeID...)."""
        with dockerd_errors():
            return dict(await self._docker.system.info())

    async def swarm_init(self, advertise_addr: str | None) -> str:
        """A new swarm with this node its manager; the node's id."""
        with dockerd_errors():
            return await self._docker.swarm.init(advertise_addr=advertise_addr)

    async def swarm_join(
        self, managers: Iterable[str], token: str, advertise_addr: str | None, listen_addr: str
    ) -> None:
        with dockerd_errors():
            await self._docker.swarm.join(
                remote_addrs=managers, join_token=token, advertise_addr=advertise_addr, listen_addr=listen_addr
            )

    async def swarm_leave(self) -> None:
        """Leave (forced: also a manager, also a join still pending)."""
        with dockerd_errors():
            await self._docker.swarm.leave(force=True)

    async def nodes(self) -> list[dict[str, Any]]:
        """Every node of the swarm (a manager only)."""
        with dockerd_errors():
            return list(await self._docker.nodes.list())

    async def node(self, node_id: str) -> dict[str, Any]:
        with dockerd_errors():
            return dict(await self._docker.nodes.inspect(node_id=node_id))

    async def remove_node(self, node_id: str) -> None:
        """Remove a node that is down from the swarm (a manager only)."""
        with dockerd_errors():
            await self._docker.nodes.remove(node_id=node_id)

    async def update_node(self, node_id: str, version: int, spec: dict[str, Any]) -> None:
        """A new spec for a node (a manager only); `version` is the one it was read at."""
        with dockerd_errors():
            await self._docker.nodes.update(node_id=node_id, version=version, spec=spec)

    def events(self, filters: dict[str, list[str]], since: float) -> Events:
        """A subscription to the events that match `filters`, replayed from
        `since` (wall clock, seconds)."""
        return Events(self._docker, filters, since)

    async def close(self) -> None:
        await self._docker.close()
