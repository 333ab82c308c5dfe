"""The channel layer: platform adapters, the Channels service and inbound routing."""
from nanoclaw.channels._base import CHANNEL_NAMES, Adapter, Inbound, Link, PlatformError
from nanoclaw.channels._media import read_group_file
from nanoclaw.channels._router import Router
from nanoclaw.channels._service import Channels
from nanoclaw.channels._store import ChatStore
from nanoclaw.channels.discord import Discord
from nanoclaw.channels.slack import Slack
from nanoclaw.channels.telegram import Telegram
from nanoclaw.channels.whatsapp import WhatsApp

__all__ = ["CHANNEL_NAMES", "Adapter", "Channels", "ChatStore", "Discord", "Inbound", "Link", "PlatformError",
           "Router", "Slack", "Telegram", "WhatsApp", "build_channels", "read_group_file"]


def build_channels(settings, db, clock, secrets, audit, namespaces, senders, offload=None, *, notify=None,
                   new_session=None) -> Channels:
    """The Channels service with every adapter this server has; notify and new_session go to
    the router (the supervisor's notify_messages and new_session)."""
    store = ChatStore(db, clock)
    router = Router(store, namespaces, senders, audit, notify=notify, new_session=new_session)
    adapters = [Telegram(settings.telegram_api_base), Slack(settings.slack_api_base),
                Discord(settings.discord_api_base), WhatsApp(settings.whatsapp_api_base)]
    return Channels(store, router, secrets, audit, clock, adapters, groups_dir=settings.groups_dir, offload=offload)
