"""Serving the doors: ``veilpix proxy`` builds a :class:`Gateway` from ``veilpix.toml`` and
runs it on uvicorn (the 'proxy' extra), with the intercept proxy beside it when asked
(:func:`start_intercept`), in one process or in ``--workers N``.

Loopback only unless told otherwise: a non-loopback host needs ``allow_remote``, and
``allow_remote`` needs a token, which clients send in ``X-Veilpix-Token``. The token and the
vendors' credentials are never printed or logged; uvicorn's access log is off because request
lines can carry credentials (Gemini's ``?key=``).
"""

from __future__ import annotations

import multiprocessing  # noqa: TID253 - serving starts the worker processes
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing import shared_memory  # noqa: TID253 - the workers share metrics
from multiprocessing.connection import wait  # noqa: TID253 - and are watched from here
from pathlib import Path
from typing import Any, TextIO

from veilpix import adapters
from veilpix._ca import Authority
from veilpix._config import Config
from veilpix._errors import DOCS, CAError, ConfigError, VeilpixError
from veilpix._install import install_command
from veilpix._net import is_loopback
from veilpix.audit._log import AuditLog
from veilpix.guard import Guard
from veilpix.proxy._gateway import Gateway
from veilpix.proxy._http import http_protocol
from veilpix.proxy._intercept import InterceptProxy
from veilpix.proxy._limits import ConnectionLimits
from veilpix.proxy._metrics import Metrics
from veilpix.proxy._upstream import UpstreamPool

__all__ = [
    "build_gateway",
    "env_lines",
    "intercept_upstream",
    "load_authority",
    "run_intercept",
    "serve",
    "start_intercept",
]

# Environment variables that take a host or an endpoint of another shape, not the base URL the
# gateway stands in for; the startup line does not suggest them.
_NOT_A_BASE_URL = frozenset({"FAL_RUN_HOST", "AZURE_OPENAI_ENDPOINT"})


def build_gateway(
    config: Config,
    *,
    log_path: str | Path | None = None,
    token: str | None = None,
    log: AuditLog | None = None,
    upstream: UpstreamPool | None = None,
    metrics: Metrics | None = None,
) -> Gateway:
    """A Gateway for ``config``: one Guard per ``[apps.<name>]`` plus the default, all writing
    one AuditLog (``log``, else the one ``log_path`` / ``$VEILPIX_LOG`` / ``[log] path``
    names). The caller closes ``gateway.guards[""].log`` when done."""
    policies = {"": config.policy(), **{app: config.policy(app) for app in config.apps}}
    if log is None:
        log = AuditLog.from_config(config, path=log_path)
    guards = {
        app: Guard(policy, log, vendor_policies=config.vendor_policies(app or None))
        for app, policy in policies.items()
    }
    return Gateway(
        guards,
        base_urls=config.base_urls,
        token=token,
        max_body=config.proxy.max_body,
        upstream=upstream,
        metrics=metrics,
        idle_timeout=config.proxy.idle_timeout,
        min_body_rate=config.proxy.min_body_rate,
        max_image_memory=config.proxy.max_image_memory,
        records={app: config.record_settings(app or None) for app in policies},
    )


def routable_vendors(config: Config) -> list[str]:
    """Vendors the gateway can reach (a base URL is known) and the default policy allows."""
    allowed = config.policy().allowed_vendors
    return [
        v.name
        for v in adapters.vendors()
        if ("{" not in v.base_url or v.name in config.base_urls)
        and (allowed is None or v.name in allowed)
    ]


def env_lines(config: Config, url: str) -> list[str]:
    """``OPENAI_BASE_URL=<url>/openai`` etc. for vendors whose SDKs take a base URL from the
    environment."""
    out = []
    for name in routable_vendors(config):
        env = adapters.get(name).env_base_url
        if env and env not in _NOT_A_BASE_URL:
            out.append(f"{env}={url}/{name}")
    return out


def _startup_text(
    config: Config, url: str, log_path: Path | str, token: bool, intercept_url: str | None = None
) -> str:
    lines = [f"veilpix proxy listening on {url}"]
    if intercept_url is not None:
        lines.append(f"  intercept (HTTPS_PROXY) on {intercept_url}")
    lines.append(f"  vendors: {', '.join(routable_vendors(config)) or 'none'}")
    if config.apps:
        lines.append(f"  apps (X-Veilpix-App): {', '.join(sorted(config.apps))}")
    lines.append(f"  log: {log_path}")
    if token:
        lines.append(f"  clients must send X-Veilpix-Token (from ${config.proxy.token_env})")
    lines.append("  point your apps here, e.g.:")
    lines += [f"    export {line}" for line in env_lines(config, url)]
    if intercept_url is not None:
        lines.append("  or route a shell's apps through the intercept proxy:")
        lines.append(f'    eval "$(veilpix env --proxy {intercept_url})"')
    return "\n".join(lines)


def check_bind(host: str, *, allow_remote: bool, token: str | None, token_env: str) -> None:
    """Refuse a non-loopback host without ``allow_remote``, and ``allow_remote`` without a
    token."""
    # Where to listen: only "localhost" is trusted by name ("localhost.localdomain" and the
    # like resolve as /etc/hosts says).
    if not is_loopback(host, names=("localhost",)) and not allow_remote:
        raise ConfigError(
            f"refusing to listen on {host!r}: it is not a loopback address",
            hint="the proxy binds 127.0.0.1 by default; to serve other machines pass "
            f"--allow-remote with a token (--token or ${token_env})",
        )
    if allow_remote and not token:
        raise ConfigError(
            "--allow-remote needs a token that clients send in X-Veilpix-Token",
            hint=f"set ${token_env} (or pass --token) to a long random value",
        )


# -- the intercept proxy ------------------------------------------------------------------------


def intercept_upstream(config: Config) -> UpstreamPool:
    """The pool to the vendors with ``[intercept] upstream_hosts`` (dial another address,
    keep the name for SNI and certificate checks) and ``upstream_ca`` (trusted besides the
    system roots). Give it to the gateway (``build_gateway(config, upstream=...)``): both
    doors then share it."""
    settings = config.intercept
    return UpstreamPool(
        resolve=dict(settings.upstream_hosts),
        extra_ca=str(settings.upstream_ca) if settings.upstream_ca is not None else None,
    )


def load_authority(config: Config, ca_dir: str | Path | None = None) -> Authority:
    """The CA from ``ca_dir`` / ``$VEILPIX_CA_DIR`` / ``[intercept] ca_dir`` / the default,
    with a hint to create it when there is none."""
    directory = config.ca_dir(ca_dir)
    try:
        return Authority.load(directory)
    except CAError as exc:
        if not (directory / "ca-key.pem").exists():
            raise CAError(
                exc.message, hint=f"create it with `veilpix ca init` (see {DOCS}intercept.md)"
            ) from exc
        raise


async def start_intercept(
    config: Config,
    gateway: Gateway,
    host: str | None = None,
    port: int | None = None,
    *,
    authority: Authority | None = None,
    only_vendors: bool | None = None,
    token: str | None = None,
    allow_remote: bool | None = None,
    ca_dir: str | Path | None = None,
    sock: socket.socket | None = None,
) -> InterceptProxy:
    """An :class:`~veilpix.proxy._intercept.InterceptProxy` for ``config``, listening when
    this returns (call its ``aclose()`` at shutdown). ``None`` arguments come from the
    config: host from ``[proxy]``, port and ``only_vendors`` from ``[intercept]``, token from
    the gateway. A non-loopback host needs ``allow_remote`` and a token, as for the gateway.
    ``sock``: listen on this bound socket instead (``host`` is still checked)."""
    host = host or config.proxy.host
    port = config.intercept.port if port is None else port
    token = token if token is not None else gateway.token
    allow_remote = config.proxy.allow_remote if allow_remote is None else allow_remote
    check_bind(host, allow_remote=allow_remote, token=token, token_env=config.proxy.token_env)
    proxy = InterceptProxy(
        gateway,
        authority if authority is not None else load_authority(config, ca_dir),
        only_vendors=config.intercept.only_vendors if only_vendors is None else only_vendors,
        token=token,
        max_connections=config.proxy.max_connections,
        max_connections_per_client=config.proxy.max_connections_per_client,
        handshake_timeout=config.proxy.header_timeout,
        header_timeout=config.proxy.header_timeout,
        idle_timeout=config.proxy.idle_timeout,
    )
    try:
        await proxy.start(host, port, sock=sock)
    except OSError as exc:
        raise ConfigError(
            f"the intercept proxy could not listen on {host}:{port}: {exc.strerror or exc}",
            hint="is the port already in use? choose another one ([intercept] port)",
        ) from exc
    return proxy


async def run_intercept(
    config: Config,
    gateway: Gateway,
    host: str | None = None,
    port: int | None = None,
    **options: Any,
) -> None:
    """:func:`start_intercept`, then serve until cancelled; open connections are closed on
    the way out (the gateway is not: its owner closes it)."""
    proxy = await start_intercept(config, gateway, host, port, **options)
    try:
        await proxy.serve_forever()
    finally:
        await proxy.aclose()


# -- running ------------------------------------------------------------------------------------


class _Stopped(Exception):
    """SIGTERM arrived after uvicorn finished its graceful shutdown."""


def serve(
    config: Config,
    host: str | None = None,
    port: int | None = None,
    *,
    log_path: str | Path | None = None,
    token: str | None = None,
    allow_remote: bool | None = None,
    out: TextIO | None = None,
    workers: int | None = None,
    intercept: bool = False,
    intercept_port: int | None = None,
    only_vendors: bool | None = None,
) -> None:
    """Run the gateway on uvicorn until SIGINT/SIGTERM; the log is checkpointed and closed on
    the way out. ``None`` arguments come from ``[proxy]`` (and the token from its
    ``token_env``). ``intercept=True`` also runs the HTTPS_PROXY intercept proxy in the same
    process(es), on ``intercept_port`` (else ``[intercept] port``), sharing the gateway's
    guards, log, limits and metrics; see docs/intercept.md."""
    try:
        import uvicorn  # noqa: F401 - checked here, used by _server
    except ImportError as exc:
        raise ConfigError("the proxy needs uvicorn", hint=install_command("proxy")) from exc

    settings = config.proxy
    # --host/--port, else $VEILPIX_PROXY_HOST/$VEILPIX_PROXY_PORT, else [proxy], else defaults
    host = host or os.environ.get("VEILPIX_PROXY_HOST") or settings.host
    if port is None and os.environ.get("VEILPIX_PROXY_PORT"):
        try:
            port = int(os.environ["VEILPIX_PROXY_PORT"])
        except ValueError as exc:
            raise ConfigError(
                f"VEILPIX_PROXY_PORT must be a port number, not {os.environ['VEILPIX_PROXY_PORT']!r}"
            ) from exc
    port = settings.port if port is None else port
    allow_remote = settings.allow_remote if allow_remote is None else allow_remote
    token = token or settings.token
    check_bind(host, allow_remote=allow_remote, token=token, token_env=settings.token_env)
    # Without allow_remote the proxy is loopback-only and a token is optional (used when set).
    count = workers if workers is not None else settings.workers
    count = count or (os.cpu_count() or 1)
    stream = out or sys.stdout
    spec = None
    if intercept:
        load_authority(config)  # no CA yet: a clear error ("veilpix ca init") before binding
        spec = _InterceptSpec(
            config.intercept.port if intercept_port is None else intercept_port,
            config.intercept.only_vendors if only_vendors is None else only_vendors,
            allow_remote,
        )
    if count > 1:
        supervisor = _Supervisor(
            config, host, port, count, log_path=log_path, token=token, intercept=spec
        )
        supervisor.run(stream)
        return
    upstream = _intercept_upstream(config, spec)
    gateway = build_gateway(config, log_path=log_path, token=token, upstream=upstream)
    log = gateway.guards[""].log

    def started(url: str, intercept_url: str | None) -> None:
        text = _startup_text(config, url, log.location, token is not None, intercept_url)
        print(text, file=stream)
        stream.flush()

    server = _server(gateway, config, host, port, started, intercept=spec)
    previous: Any = None
    if _main_thread():
        previous = signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGTERM, _stopped)
    try:
        server.run()
    except (_Stopped, KeyboardInterrupt):  # a graceful stop by SIGTERM or Ctrl-C
        pass
    except SystemExit as exc:  # uvicorn exits when it cannot bind or start
        raise ConfigError(
            f"the proxy could not start on {host}:{port}",
            hint="see the error above (is the port already in use?)",
        ) from exc
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        log.close()
    if server.failed is not None:  # the intercept proxy could not start: nothing was served
        raise server.failed
    print("veilpix proxy stopped; the log is closed", file=stream)
    stream.flush()


@dataclass(frozen=True)
class _InterceptSpec:
    """``--intercept``: where and how the intercept proxy runs beside the gateway."""

    port: int
    only_vendors: bool
    allow_remote: bool


def _intercept_upstream(config: Config, spec: _InterceptSpec | None) -> UpstreamPool | None:
    """With the intercept proxy, the gateway's pool also honours ``[intercept]
    upstream_hosts`` and ``upstream_ca`` (the two doors share one pool)."""
    if spec is None:
        return None
    return intercept_upstream(config)


def _server(
    gateway: Gateway,
    config: Config,
    host: str,
    port: int,
    started: Callable[[str, str | None], None] | None = None,
    *,
    intercept: _InterceptSpec | None = None,
    intercept_sock: socket.socket | None = None,
) -> Any:
    """A uvicorn server for ``gateway`` that closes (checkpoints) its log on shutdown, starts
    the intercept proxy beside it when asked, and calls ``started(url, intercept_url)`` once
    it listens. ``failed`` holds the error when the intercept proxy could not start."""
    import uvicorn

    log = gateway.guards[""].log

    class _Server(uvicorn.Server):
        failed: VeilpixError | None = None
        intercept_proxy: Any = None

        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets=sockets)
            if not self.started:
                return
            intercept_url = None
            if intercept is not None:
                try:
                    self.intercept_proxy = await start_intercept(
                        config,
                        gateway,
                        host,
                        intercept.port,
                        only_vendors=intercept.only_vendors,
                        allow_remote=intercept.allow_remote,
                        sock=intercept_sock,
                    )
                except VeilpixError as exc:
                    self.failed = exc
                    self.should_exit = True
                    return
                intercept_url = self.intercept_proxy.url
            if started is not None:
                bound = self.servers[0].sockets[0].getsockname()
                shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
                started(f"http://{shown}:{bound[1]}", intercept_url)

        async def shutdown(self, sockets: Any = None) -> None:
            try:
                if self.intercept_proxy is not None:  # before the lifespan closes the pool
                    await self.intercept_proxy.aclose()
                await super().shutdown(sockets=sockets)
            finally:
                log.close()  # checkpoint before uvicorn re-raises the signal that stopped it

    return _Server(
        uvicorn.Config(
            gateway,
            host=host,
            port=port,
            lifespan="on",
            # max_connections, the per-client cap and the timeouts are the protocol's
            # (uvicorn's own limit would refuse the health check too, without Retry-After)
            limit_concurrency=None,
            access_log=False,
            log_level="warning",
            server_header=False,
            # The client address in the log is the connection's own: a local app must not be
            # able to name another one with X-Forwarded-For (uvicorn trusts it from 127.0.0.1).
            proxy_headers=False,
            http=http_protocol(ConnectionLimits.from_config(config.proxy)),
        )
    )


@dataclass(frozen=True)
class _WorkerSpec:
    config: Config
    host: str
    port: int
    log_path: str
    token: str | None
    shm_name: str
    slots: int
    intercept: _InterceptSpec | None = None


class _Supervisor:
    """``--workers N``: N processes accept on one socket bound here, each with its own event
    loop, guard and connection pool, all appending to the one transfer log (SQLite's write
    lock keeps one chain) and counting into one shared-memory metrics table (one row each).
    A worker that dies is started again in its slot; SIGTERM or Ctrl-C stops them all
    gracefully (in-flight requests finish, each worker checkpoints the log)."""

    def __init__(
        self,
        config: Config,
        host: str,
        port: int,
        count: int,
        *,
        log_path: str | Path | None,
        token: str | None,
        intercept: _InterceptSpec | None = None,
    ) -> None:
        self.config, self.host, self.port, self.count = config, host, port, count
        self.log_path, self.token, self.intercept = log_path, token, intercept

    def run(self, stream: TextIO) -> None:
        socks = _bind_all(self.host, self.port, self.count)
        isocks: list[socket.socket | None] = [None] * self.count
        if self.intercept is not None:
            try:
                isocks = list(_bind_all(self.host, self.intercept.port, self.count))
            except ConfigError:
                for sock in socks:
                    sock.close()
                raise
        # Open the log once here, so that creating it (and its key) happens before any worker
        # and a broken log stops the start with a clear error.
        log = AuditLog.from_config(self.config, path=self.log_path)
        shown = log.location  # (a fleet's URL without its password)
        log_path = log.address  # what the workers open
        log.close()
        shm = shared_memory.SharedMemory(create=True, size=Metrics.size(self.count))
        ctx = multiprocessing.get_context("spawn")
        spec = _WorkerSpec(
            self.config,
            self.host,
            self.port,
            log_path,
            self.token,
            shm.name,
            self.count,
            self.intercept,
        )
        procs: dict[int, Any] = {}
        stopping = False

        started_at: dict[int, float] = {}
        quick_exits = 0

        def start(slot: int) -> None:
            proc = ctx.Process(
                target=_worker,
                args=(spec, slot, socks[slot], isocks[slot]),
                daemon=False,
                name=f"veilpix-proxy-{slot}",
            )
            proc.start()
            procs[slot], started_at[slot] = proc, time.monotonic()

        def force(signum: int, frame: object) -> None:
            # A second SIGTERM or Ctrl-C while the workers shut down: stop waiting for them.
            for proc in procs.values():
                if proc.is_alive():
                    proc.kill()

        previous: dict[int, Any] = {}
        if _main_thread():
            previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
            signal.signal(signal.SIGTERM, _stopped)
        try:
            for slot in range(self.count):
                start(slot)
            intercept_url = _url(isocks[0]) if isocks[0] is not None else None
            text = _startup_text(
                self.config, _url(socks[0]), shown, self.token is not None, intercept_url
            )
            print(text.replace("\n", f"\n  workers: {self.count}\n", 1), file=stream)
            stream.flush()

            while True:
                wait([p.sentinel for p in procs.values()])
                for slot, proc in list(procs.items()):
                    if proc.exitcode is None:
                        continue
                    quick = time.monotonic() - started_at[slot] < 5
                    quick_exits = quick_exits + 1 if quick else 0
                    if quick_exits > 3 * self.count:
                        raise ConfigError(
                            f"the proxy's workers keep exiting (worker {slot}: exit code "
                            f"{proc.exitcode})",
                            hint="see the errors above",
                        )
                    print(
                        f"veilpix proxy: worker {slot} exited ({proc.exitcode}); starting it again",
                        file=sys.stderr,
                    )
                    start(slot)
        except (_Stopped, KeyboardInterrupt):
            stopping = True
        finally:
            if previous:
                signal.signal(signal.SIGTERM, force)
                signal.signal(signal.SIGINT, force)
            try:
                for proc in procs.values():
                    if proc.is_alive():
                        proc.terminate()  # SIGTERM: uvicorn's graceful shutdown in each worker
                for proc in procs.values():
                    proc.join(60)
                    if proc.is_alive():
                        proc.kill()
                        proc.join()
            finally:
                for each in {*socks, *isocks}:
                    if each is not None:
                        each.close()
                shm.close()
                shm.unlink()
                for sig, handler in previous.items():
                    signal.signal(sig, handler)
        if stopping:
            print("veilpix proxy stopped; the log is closed", file=stream)
            stream.flush()


def _bind_all(host: str, port: int, count: int) -> list[socket.socket]:
    """One listening socket per worker. On Linux they share the port with SO_REUSEPORT and
    the kernel spreads new connections evenly over them; with one shared socket the worker
    that happens to wait in accept() first takes most kept-alive connections and the others
    idle. Elsewhere every worker gets the same socket."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    spread = sys.platform == "linux" and hasattr(socket, "SO_REUSEPORT")
    socks: list[socket.socket] = []
    try:
        if spread:
            # SO_REUSEPORT would let these join the sockets of another running proxy of the
            # same user on that port (the kernel then splits the connections between the
            # two). A plain bind first proves the port free, or picks one for port 0.
            with socket.socket(family, socket.SOCK_STREAM) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind((host.strip("[]"), port))
                port = probe.getsockname()[1]
        for _ in range(count if spread else 1):
            sock = socket.socket(family, socket.SOCK_STREAM)
            socks.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if spread:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host.strip("[]"), port))
            port = sock.getsockname()[1]  # port 0: the others join the one the first got
            sock.listen(2048)
            sock.set_inheritable(True)
    except OSError as exc:
        for sock in socks:
            sock.close()
        raise ConfigError(
            f"the proxy could not start on {host}:{port}: {exc.strerror}",
            hint="is the port already in use?",
        ) from exc
    return socks if spread else socks * count


def _url(sock: socket.socket) -> str:
    bound = sock.getsockname()
    shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
    return f"http://{shown}:{bound[1]}"


def _worker(
    spec: _WorkerSpec, slot: int, sock: socket.socket, isock: socket.socket | None = None
) -> None:
    """One worker process (spawned): serve ``sock`` until SIGTERM/SIGINT."""
    if sys.version_info >= (3, 13):
        shm = shared_memory.SharedMemory(spec.shm_name, track=False)
    else:  # the spawning parent's resource tracker owns it; attaching adds nothing to undo
        shm = shared_memory.SharedMemory(spec.shm_name)
    metrics = Metrics(slots=spec.slots, slot=slot, buffer=shm.buf)
    gateway = build_gateway(
        spec.config,
        log_path=spec.log_path,
        token=spec.token,
        metrics=metrics,
        upstream=_intercept_upstream(spec.config, spec.intercept),
    )
    server = _server(
        gateway,
        spec.config,
        spec.host,
        spec.port,
        intercept=spec.intercept,
        intercept_sock=isock,
    )
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    finally:
        gateway.guards[""].log.close()
        del metrics  # the array views the buffer: release it before closing the mapping
        shm.close()


def _stopped(signum: int, frame: object) -> None:
    raise _Stopped


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()
