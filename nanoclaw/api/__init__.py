"""REST API: one blueprint per endpoint group of the spec."""
from nanoclaw.api import audit, health, mounts, namespaces, senders

BLUEPRINTS = [
    health.bp,
    namespaces.bp,
    mounts.bp,
    senders.bp,
    audit.bp,
]
