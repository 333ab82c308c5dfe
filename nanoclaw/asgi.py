"""ASGI entry point: `hypercorn --worker-class trio nanoclaw.asgi:app`.

Settings come from NANOCLAW_* variables; the services start in the ASGI lifespan.
"""
from nanoclaw.app import create_app
from nanoclaw.config import load_settings
from nanoclaw.services import build

services = build(load_settings())
app = create_app(services, manage_services=True)
