"""The reaper: the only code in pid1 that waits for children.

PID 1 inherits every orphan on the machine (containerd shims are orphans by
design), so one owner of waitpid(-1) is the only correct design. The signals
PID 1 handles are blocked before any thread exists and read from a signalfd
on the event loop; on SIGCHLD the reaper loops waitpid(-1, WNOHANG) until
nothing is left.

Children are started with os.posix_spawn, never with asyncio/uvloop
subprocess APIs or subprocess.Popen: those install their own child watchers,
which would race this reaper for exit statuses (and lose them to it).
posix_spawn (vfork/clone in glibc) is also safe while worker threads exist,
where a bare fork could deadlock on a lock another thread held.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from pid1.linux import syscalls

# Every signal PID 1 reads from the signalfd. SIGCHLD drives reaping; the rest
# are the orderly-stop requests (supervisor.STOP_SIGNALS) and SIGHUP (log a
# state dump).
HANDLED_SIGNALS: frozenset[int] = frozenset(
    {
        signal.SIGCHLD,
        signal.SIGTERM,
        signal.SIGINT,
        signal.SIGPWR,
        signal.SIGHUP,
        signal.SIGUSR1,
        signal.SIGUSR2,
    }
)


def block_handled_signals() -> None:
    """Block HANDLED_SIGNALS in this thread; call before any thread starts so all inherit it."""
    signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED_SIGNALS)


@dataclass
class Child:
    """A process pid1 started; `await child.wait()` gives its exit status."""

    pid: int
    argv: Sequence[str]
    exit_future: asyncio.Future[int]

    async def wait(self) -> int:
        """The wait status decoded as a shell does: the exit code, or -signal."""
        return await asyncio.shield(self.exit_future)

    @property
    def returncode(self) -> int | None:
        return self.exit_future.result() if self.exit_future.done() else None

    def signal(self, signo: int) -> None:
        if not self.exit_future.done():
            try:
                os.kill(self.pid, signo)
            except ProcessLookupError:
                pass


@dataclass
class Reaper:
    """Owns the signalfd, waitpid(-1) and every child pid1 spawns."""

    on_signal: Callable[[int], None] = lambda signo: None
    # Called after a batch of reaps (with how many); the init throttles it into the state.
    on_reaped: Callable[[int], None] = lambda count: None
    children: dict[int, Child] = field(default_factory=dict)
    orphans_reaped: int = 0
    children_reaped: int = 0
    enabled: bool = True
    _fd: int = -1
    _loop: asyncio.AbstractEventLoop | None = None

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start reading HANDLED_SIGNALS on `loop` (they must already be blocked)."""
        self._loop = loop
        self._fd = syscalls.signalfd(set(HANDLED_SIGNALS))
        loop.add_reader(self._fd, self._on_readable)
        # Children may have exited before the signalfd existed.
        self.reap()

    def close(self) -> None:
        if self._loop is not None and self._fd >= 0:
            self._loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = -1

    def _on_readable(self) -> None:
        for signo, _sender in syscalls.read_signalfd(self._fd):
            if signo == signal.SIGCHLD:
                continue  # one reap() below covers any number of SIGCHLDs
            try:
                self.on_signal(signo)
            except Exception as exc:  # a handler bug must not stop reaping
                os.write(2, f"pid1: signal handler for {signo} failed: {exc!r}\n".encode())
        self.reap()

    def reap(self) -> int:
        """Collect every exited child; returns how many were reaped."""
        if not self.enabled:
            return 0
        count = 0
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            count += 1
            child = self.children.pop(pid, None)
            if child is None:
                self.orphans_reaped += 1
                continue
            self.children_reaped += 1
            if not child.exit_future.done():
                child.exit_future.set_result(os.waitstatus_to_exitcode(status))
        if count:
            self.on_reaped(count)
        return count

    def spawn(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        stdin: int | str | None = None,
        stdout: int | str | None = None,
        stderr: int | str | None = None,
        tty: str | None = None,
        cwd: str | None = None,
        nice: int = 0,
    ) -> Child:
        """Start argv in a clean state: default signal mask and dispositions, its
        own session, only fds 0-2 inherited. Each of stdin/stdout/stderr is an
        fd to dup, a path to open, or None for /dev/null. `tty` (a path) makes
        that terminal the child's controlling tty and its stdin/out/err.
        `nice` lowers its CPU priority (set just after the spawn: the first
        instants run at pid1's). Must be called on the loop thread (the pid is registered before the
        loop can reap it)."""
        assert self._loop is not None, "Reaper.install() first"
        actions: list[syscalls.FileAction] = []
        if tty is not None:
            # Opened after setsid() in the child, without O_NOCTTY: it becomes
            # the controlling terminal of the new session.
            actions.append(syscalls.FileAction(0, tty, os.O_RDWR))
            actions += [syscalls.FileAction(1, source=0), syscalls.FileAction(2, source=0)]
        else:
            for target, spec, flags in ((0, stdin, os.O_RDONLY), (1, stdout, os.O_WRONLY), (2, stderr, os.O_WRONLY)):
                if isinstance(spec, int):
                    actions.append(syscalls.FileAction(target, source=spec))
                else:
                    path = spec if spec is not None else os.devnull
                    extra = os.O_CREAT | os.O_APPEND if target and spec is not None else 0
                    actions.append(syscalls.FileAction(target, path, flags | extra | os.O_NOCTTY, 0o644))
        argv = list(argv)
        if cwd is not None:
            # glibc 2.36 has posix_spawn_file_actions_addchdir_np, but a shell
            # hop keeps the syscall surface small and cwd is rare.
            argv = ["/bin/sh", "-c", 'cd "$1" && shift && exec "$@"', "sh", cwd, *argv]
        pid = syscalls.spawn(argv[0], argv, dict(os.environ if env is None else env), actions)
        if nice:
            with contextlib.suppress(OSError):  # it may have exited already
                os.setpriority(os.PRIO_PROCESS, pid, nice)
        child = Child(pid=pid, argv=list(argv), exit_future=self._loop.create_future())
        self.children[pid] = child
        return child
