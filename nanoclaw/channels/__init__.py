"""The channel layer: platform adapters, outgoing messages (Outbox), chat batches as the
supervisor's work (ChatFeed), the Channels service and inbound routing (Router)."""
from nanoclaw.channels._base import CHANNEL_NAMES, Adapter, Inbound, Link, PlatformError
from nanoclaw.channels._feed import ChatFeed
from nanoclaw.channels._outbox import Outbox
from nanoclaw.channels._router import Router
from nanoclaw.channels._service import Channels
from nanoclaw.channels._store import ChatStore
from nanoclaw.channels.discord import Discord
from nanoclaw.channels.slack import Slack
from nanoclaw.channels.telegram import Telegram
from nanoclaw.channels.whatsapp import WhatsApp

__all__ = ["CHANNEL_NAMES", "Adapter", "Channels", "ChatFeed", "ChatStore", "Discord", "Inbound", "Link", "Outbox",
           "PlatformError", "Router", "Slack", "Telegram", "WhatsApp", "platform_adapters"]


def platform_adapters(settings) -> list[Adapter]:
    """An adapter of every platform this server has, at the API bases the settings name."""
    return [Telegram(settings.telegram_api_base), Slack(settings.slack_api_base),
            Discord(settings.discord_api_base), WhatsApp(settings.whatsapp_api_base)]
