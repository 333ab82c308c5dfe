"""ASGI entry point:
`.venv/bin/hypercorn --worker-class trio --bind 127.0.0.1:55765 nanoclaw.asgi:app`.

Settings come from NANOCLAW_* variables; the services start in the ASGI lifespan.
Hypercorn owns the bind here (NANOCLAW_HOST/NANOCLAW_PORT do not apply), so with no
API key the app itself refuses requests that arrived on a non-loopback address
(scope["server"]) unless NANOCLAW_ALLOW_INSECURE is set (see docs/operations.md).
"""
from nanoclaw.app import create_app
from nanoclaw.config import load_settings
from nanoclaw.main import setup_logging
from nanoclaw.services import build

services = build(load_settings())
setup_logging(services)
app = create_app(services, manage_services=True)
