"""ASGI entry point: `hypercorn --worker-class trio nanoclaw.asgi:app`.

Settings come from NANOCLAW_* variables; the services start in the ASGI lifespan.
Hypercorn owns the bind here, so the loopback-only rule for a server without API
keys is the operator's to keep (see docs/operations.md).
"""
from nanoclaw.app import create_app
from nanoclaw.config import load_settings
from nanoclaw.main import setup_logging
from nanoclaw.services import build

services = build(load_settings())
setup_logging(services)
app = create_app(services, manage_services=True)
