"""The adapter interface every chat platform implements, and the values it trades in.

An adapter knows one platform's wire protocol and nothing of the store or the
agents: it validates credentials, runs a connection until cancelled (handing
each inbound message to its `Link`), and sends one piece of text. Splitting,
retries, status and routing are the `Channels` service's business.
"""
from __future__ import annotations

import dataclasses
import random
from typing import Any, Callable, ClassVar

import httpx
from pydantic import BaseModel

from nanoclaw.channels._media import Download, MediaRef
from nanoclaw.groupfiles import OutFile

# Platform tokens are printable ASCII without spaces; anything else could not travel in a URL or header.
TOKEN_CHARS = "[!-~]+"

# Every channel the API knows, in the order GET /channels lists them.
CHANNEL_NAMES = ("telegram", "slack", "discord", "whatsapp")


@dataclasses.dataclass
class Inbound:
    """One text message from a platform, already in our terms."""

    channel: str
    chat_jid: str
    sender_jid: str
    sender_name: str
    text: str
    timestamp: float
    # The platform's id of the message; the same delivery twice has the same id.
    external_id: str
    chat_name: str | None = None
    is_group: bool = False
    # A DM or an @mention of the bot: it triggers whatever the namespace's trigger word.
    addressed: bool = False
    # Files attached to the message, fetched by the Channels service before it is stored.
    media: list[MediaRef] = dataclasses.field(default_factory=list)


class PlatformError(Exception):
    """A platform refused or failed a call.

    status: the HTTP (or platform) error code, None for a network failure.
    retry_after: seconds the platform asked us to wait (rate limits).
    The message is what a person reads, e.g. "401 Unauthorized"; never a credential.
    """

    def __init__(self, reason: str, *, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.retry_after = retry_after

    @property
    def transient(self) -> bool:
        return self.status is None or self.status == 429 or self.status >= 500


def scrub(text: str, *secrets: str) -> str:
    """`text` with every (non-empty) secret in it replaced by ****."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "****")
    return text


def network_error(platform: str, exc: httpx.HTTPError, *secrets: str) -> PlatformError:
    text = f"cannot reach {platform}: {type(exc).__name__}"
    if str(exc):
        text += f": {exc}"
    return PlatformError(scrub(text, *secrets))


# How one platform reads an answer: given the response and its decoded JSON body (None when
# the body is not JSON), the PlatformError saying why the call failed, or None when it worked.
Refusal = Callable[[httpx.Response, Any], PlatformError | None]


async def call_json(http: httpx.AsyncClient, method: str, url: str, *, platform: str, refusal: Refusal,
                    secrets: tuple[str, ...] = (), **request: Any) -> Any:
    """One HTTP call to a platform's JSON API: the decoded answer when `refusal` finds no
    error, PlatformError otherwise. `request` goes to httpx as it is (json, data, files,
    headers, timeout). No secret ever reaches the error: a network failure goes through
    `network_error`, and the platform's own reason is scrubbed the same way."""
    try:
        response = await http.request(method, url, **request)
    except httpx.HTTPError as exc:
        raise network_error(platform, exc, *secrets) from None
    try:
        answer = response.json()
    except ValueError:
        answer = None
    refused = refusal(response, answer)
    if refused is None:
        return answer
    raise PlatformError(scrub(refused.reason, *secrets), status=refused.status, retry_after=refused.retry_after)


def with_code(code: object, text: str) -> str:
    """`text` led by the error code, unless the platform already put it there ("401: Unauthorized")."""
    return text if text.startswith(str(code)) else f"{code} {text}"


def number(value: object) -> float | None:
    """A JSON number as seconds (retry_after in a body); None for anything else."""
    return float(value) if isinstance(value, (int, float)) else None


def header_seconds(response: httpx.Response) -> float | None:
    """The Retry-After header in whole seconds; None when it is missing or not digits."""
    value = response.headers.get("Retry-After", "")
    return float(value) if value.isdigit() else None


class Link:
    """What a running adapter reports to; one per channel task (see `Channels`)."""

    async def connected(self, account: str) -> None:
        """The platform accepted us as `account` (e.g. '@mybot')."""
        raise NotImplementedError

    def healthy(self) -> None:
        """The connection did useful work (a poll answered, a socket said hello):
        the next failure starts its backoff from the beginning again."""
        raise NotImplementedError

    async def deliver(self, message: Inbound) -> None:
        """Route an inbound message; returns once it is stored (acknowledge after this)."""
        raise NotImplementedError

    async def move_chat(self, old_jid: str, new_jid: str) -> None:
        """A chat changed its id on the platform (Telegram supergroup migration)."""
        raise NotImplementedError

    async def load(self, key: str) -> str | None:
        """Adapter state kept across restarts (forgotten on connect/disconnect)."""
        raise NotImplementedError

    async def save(self, key: str, value: str) -> None:
        raise NotImplementedError


class Adapter:
    """One chat platform. Subclasses set the class attributes and the four methods."""

    name: ClassVar[str]
    # JIDs of this platform's chats start with '<prefix>:'.
    prefix: ClassVar[str]
    # The longest text one platform message may carry.
    max_length: ClassVar[int]
    # The body of connect/validate; every field not in public_fields is a secret.
    credentials_model: ClassVar[type[BaseModel]]
    public_fields: ClassVar[tuple[str, ...]] = ()

    def __init__(self, api_base: str) -> None:
        # Where the platform's API is (a fake on loopback in tests).
        self.api_base = api_base.rstrip("/")

    async def validate(self, http: httpx.AsyncClient, credentials: dict[str, Any]) -> str:
        """Check the credentials with the platform; return the account name.
        Raises PlatformError saying why they fail."""
        raise NotImplementedError

    async def run(self, http: httpx.AsyncClient, credentials: dict[str, Any], link: Link) -> None:
        """Stay connected and deliver messages until cancelled. Raise on failure: the
        caller reconnects with backoff."""
        raise NotImplementedError

    # Seconds a typing indicator lasts (renewed this often while a turn runs); None: no indicator.
    typing_interval: ClassVar[float | None] = None
    # Whether `edit` works (streamed replies).
    can_edit: ClassVar[bool] = False

    async def send(self, http: httpx.AsyncClient, credentials: dict[str, Any], chat_jid: str, text: str, *,
                   plain: bool = False) -> str | None:
        """Send one piece of Markdown text (at most max_length characters) in the platform's own
        format, or as it is when `plain`. Returns the platform's message id when it gives one.
        Raises PlatformError (status 400 when the platform refuses the formatting)."""
        raise NotImplementedError

    def format_refused(self, exc: PlatformError) -> bool:
        """Whether the platform refused a send because of its formatting (send it plain then)."""
        return False

    async def edit(self, http: httpx.AsyncClient, credentials: dict[str, Any], chat_jid: str, message_id: str,
                   text: str, *, plain: bool = False) -> None:
        raise NotImplementedError

    async def typing(self, http: httpx.AsyncClient, credentials: dict[str, Any], chat_jid: str) -> None:
        raise NotImplementedError

    async def media_source(self, http: httpx.AsyncClient, credentials: dict[str, Any], media: MediaRef) -> Download:
        """Where an inbound file can be downloaded (with which headers). Raises PlatformError."""
        raise NotImplementedError

    async def send_file(self, http: httpx.AsyncClient, credentials: dict[str, Any], chat_jid: str, file: OutFile,
                        caption: str | None) -> None:
        """Send one file (at most MAX_MEDIA bytes) with an optional caption. Raises PlatformError."""
        raise NotImplementedError

    def chat_id(self, chat_jid: str) -> str:
        return chat_jid.partition(":")[2]

    def notice(self, credentials: dict[str, Any]) -> str:
        """Added to "Connected as ..." when these credentials leave something not working."""
        return ""


def backoff(attempt: int, *, base: float = 1.0, cap: float = 60.0) -> float:
    """Capped exponential backoff with jitter: about base * 2**attempt, never over cap."""
    return min(cap, base * 2 ** min(attempt, 30)) * random.uniform(0.5, 1.0)
