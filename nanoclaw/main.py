"""The process: one root nursery supervising every service and the HTTP server."""
from __future__ import annotations

import logging
import signal
import sys
from functools import partial

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve

from nanoclaw import __version__, logs
from nanoclaw.app import create_app
from nanoclaw.config import Settings
from nanoclaw.errors import innermost
from nanoclaw.net import host_port
from nanoclaw.runtime import running_as_root
from nanoclaw.services import Services, build

log = logging.getLogger("nanoclaw")
EXIT_INSECURE = 2


class InsecureBind(Exception):
    pass


def setup_logging(services: Services) -> None:
    """NANOCLAW_LOG_LEVEL and NANOCLAW_LOG_FORMAT (text | json); secrets redacted either way."""
    logs.setup(services.secrets, services.settings.log_level, services.settings.log_format)


def hypercorn_config(settings: Settings) -> HypercornConfig:
    config = HypercornConfig()
    config.bind = [host_port(settings.host, settings.port)]
    config.graceful_timeout = settings.graceful_timeout
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    return config


async def _watch_signals(shutdown: trio.Event, root: trio.Nursery) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            if not shutdown.is_set():
                log.info("%s received: stopping (again to stop at once)", signal.Signals(signum).name)
                shutdown.set()
            else:
                root.cancel_scope.cancel()


async def serve(settings: Settings, services: Services | None = None, *, out=sys.stdout,
                task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED) -> None:
    """Run the whole server until SIGINT/SIGTERM. Supports nursery.start (gives the bound URLs)."""
    services = services or build(settings)
    app = create_app(services)
    shutdown = trio.Event()
    async with trio.open_nursery() as root:
        root.start_soon(_watch_signals, shutdown, root)

        async def refuse_insecure_bind():
            # Runs once the store is open, before anything else starts (channels, proxy, containers).
            if not settings.open_without_keys and not await services.api_keys.enabled():
                raise InsecureBind(
                    f"refusing to serve on {settings.host} with no API key: anyone who can reach it "
                    "could run agents. Create a key (nanoclaw api-key create --name NAME), bind "
                    "127.0.0.1, or pass --allow-insecure."
                )

        await root.start(partial(services.serve, check=refuse_insecure_bind))
        auth = await services.api_keys.enabled()

        async def _http(task_status: trio.TaskStatus[list[str]]) -> None:
            await hypercorn_serve(app, hypercorn_config(settings), shutdown_trigger=shutdown.wait,
                                  task_status=task_status)
            # HTTP has drained (within graceful_timeout): now stop the services.
            root.cancel_scope.cancel()

        binds = await root.start(_http)
        url = binds[0] if binds else f"http://{settings.host}:{settings.port}"
        print(f"NanoClaw {__version__} serving on {url}", file=out)
        print(f"API docs: {url}/docs", file=out)
        print(f"Dashboard: {url}/dashboard/", file=out)
        print(f"Auth: {'on (X-API-Key required)' if auth else 'off (no API key created)'}", file=out)
        print(f"Data: {settings.data_dir}", file=out, flush=True)
        if running_as_root():
            warning = ("running as root: not needed and not advised; agent containers still run as uid 1000 "
                       "without capabilities, and the server hands them their folders")
            log.warning(warning)
            print(f"Warning: {warning}", file=out, flush=True)
        task_status.started(binds)


def run(settings: Settings) -> int:
    services = build(settings)
    setup_logging(services)
    code = 0
    try:
        trio.run(partial(serve, settings, services))
    except* InsecureBind as group:
        print(f"error: {innermost(group)}", file=sys.stderr)
        code = EXIT_INSECURE
    except* OSError as group:
        error = innermost(group)
        print(f"error: {getattr(error, 'strerror', None) or error} ({settings.host}:{settings.port})",
              file=sys.stderr)
        code = 1
    return code
