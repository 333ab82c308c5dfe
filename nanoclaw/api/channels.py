"""/channels: status, sending, chats and messages, and each platform's connect,
disconnect and validate (plus the WhatsApp webhook)."""
from __future__ import annotations

from typing import Literal, get_args

from pydantic import BaseModel, Field, ValidationError
from quart import Blueprint, Response, request
from quart_schema import (RequestSchemaValidationError, document_request, security_scheme, validate_querystring,
                          validate_request, validate_response)

from nanoclaw.api._common import Answer, ApiModel, clamp, services
from nanoclaw.channels import CHANNEL_NAMES, Discord, PlatformError, Slack, Telegram, WhatsApp
from nanoclaw.channels.whatsapp import SIGNATURE_HEADER, BadSignature, NoAppSecret
from nanoclaw.errors import Forbidden, Invalid, Unauthorized

bp = Blueprint("channels", __name__)

ChannelName = Literal["telegram", "slack", "discord", "whatsapp"]
assert set(get_args(ChannelName)) == set(CHANNEL_NAMES)


class ChannelSummary(Answer):
    name: str
    connected: bool
    statusMessage: str = Field(description='e.g. "Not configured", "Connected as @mybot", "Reconnecting: 401 Unauthorized"')


class ChannelList(Answer):
    channels: list[ChannelSummary]


class ChannelDetails(ChannelSummary):
    configured: bool
    jidPrefix: str | None = Field(description="Chat JIDs of this channel start with '<jidPrefix>:'")
    accountName: str | None
    connectedAt: str | None
    lastEventAt: str | None = Field(description="When the last inbound message arrived")
    lastError: str | None
    messagesIn: int = Field(description="Inbound messages stored since the server started")
    messagesOut: int = Field(description="Messages sent since the server started")
    credentials: dict[str, str] | None = Field(description="Masked; secrets never leave the server")


class SendRequest(ApiModel):
    chatJid: str = Field(min_length=3, max_length=200, description="e.g. tg:123456789 or wa:15551234567")
    content: str = Field(min_length=1, max_length=100_000)


class Attachment(Answer):
    kind: str = Field(description="image, document, audio, voice or video")
    name: str
    mimeType: str | None
    size: int = Field(description="Bytes")
    path: str = Field(description="Where the agent's container sees it, e.g. /workspace/media/2026-12-03/a.jpg (read-only there)")


class Message(Answer):
    id: int
    chatJid: str
    sender: str
    senderName: str
    content: str
    timestamp: str
    isFromBot: bool
    attachments: list[Attachment] = Field(default_factory=list, description="Files that came with the message")


class MessageList(Answer):
    messages: list[Message]


class ChatsQuery(BaseModel):
    channel: ChannelName | None = None
    limit: int | None = Field(default=None, description="default 100, at most 1000")


class Chat(Answer):
    jid: str
    channel: str
    name: str | None
    isGroup: bool
    lastMessageAt: str
    namespace: str | None = Field(description="The namespace the chat is routed to, if any")


class ChatList(Answer):
    chats: list[Chat]


class MessagesQuery(BaseModel):
    limit: int | None = Field(default=None, description="default 100, at most 1000")
    before: float | None = Field(default=None, description="Unix time: only messages sent before it")


class Validation(Answer):
    valid: bool
    accountName: str | None
    message: str


class WebhookAnswer(Answer):
    received: int


# Static paths first, so that they are never taken for a channel name.

@bp.get("/channels")
@validate_response(ChannelList)
async def list_channels():
    """Every channel this API knows, connected or not."""
    channels = services().channels
    return ChannelList(channels=[channels.summary(name) for name in CHANNEL_NAMES])


@bp.post("/channels/messages")
@validate_request(SendRequest)
@validate_response(Message, 201)
async def send_message(data: SendRequest):
    """Send through the channel owning the JID prefix; stored as a bot message (never triggers an agent)."""
    sent = await services().outbox.send(data.chatJid, data.content)
    if sent is None:
        raise Invalid("Nothing is left to send once <internal> notes are removed")
    return sent, 201


@bp.get("/channels/chats")
@validate_querystring(ChatsQuery)
@validate_response(ChatList)
async def list_chats(query_args: ChatsQuery):
    """Chats seen or written to, most recently active first."""
    limit = clamp(query_args.limit, default=100, maximum=1000)
    return ChatList.model_validate({"chats": await services().channels.store.chats(channel=query_args.channel,
                                                                                  limit=limit)})


@bp.get("/channels/chats/<jid>/messages")
@validate_querystring(MessagesQuery)
@validate_response(MessageList)
async def chat_messages(jid: str, query_args: MessagesQuery):
    """A chat's messages, newest first."""
    limit = clamp(query_args.limit, default=100, maximum=1000)
    rows = await services().channels.store.messages(jid, limit=limit, before=query_args.before)
    return MessageList.model_validate({"messages": rows})


@bp.get("/channels/whatsapp/webhook")
@security_scheme([])
async def whatsapp_subscribe():
    """Meta's subscription check: answers hub.challenge when hub.verify_token matches."""
    credentials = services().channels.credentials("whatsapp")
    args = request.args
    answer = None
    if credentials is not None:
        answer = WhatsApp.challenge(credentials, args.get("hub.mode"), args.get("hub.verify_token"),
                                    args.get("hub.challenge"))
    if answer is None:
        raise Forbidden("The verify token does not match (or WhatsApp is not connected)")
    return Response(answer, content_type="text/plain; charset=utf-8")


@bp.post("/channels/whatsapp/webhook")
@security_scheme([])
@validate_response(WebhookAnswer)
async def whatsapp_deliver():
    """Deliveries from Meta, verified by X-Hub-Signature-256 before anything reads them."""
    channels = services().channels
    raw = await request.get_data()
    credentials = channels.credentials("whatsapp")
    if credentials is None:
        raise Forbidden("WhatsApp is not connected")
    adapter: WhatsApp = channels.adapter("whatsapp")
    try:
        adapter.verify(credentials, raw, request.headers.get(SIGNATURE_HEADER))
    except NoAppSecret as exc:
        await services().audit.record("warning", "channel", f"whatsapp webhook refused: {exc}",
                                      details={"remoteAddr": request.remote_addr})
        raise Forbidden(str(exc), code="APP_SECRET_MISSING") from None
    except BadSignature as exc:
        await services().audit.record("violation", "channel", f"whatsapp webhook refused: {exc}",
                                      details={"remoteAddr": request.remote_addr})
        raise Unauthorized(str(exc), code="BAD_SIGNATURE") from None
    try:
        messages = adapter.parse(credentials, raw)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise Invalid(f"Not a WhatsApp delivery: {exc}") from None
    await channels.receive("whatsapp", credentials, messages)
    return WebhookAnswer(received=len(messages))


def _platform_routes(name: str, model: type[BaseModel]) -> None:
    """connect, disconnect and validate for one platform; the body is its credentials model."""

    @validate_request(model)
    @validate_response(ChannelDetails)
    async def connect(data):
        return await services().channels.connect(name, data.model_dump(exclude_none=True))

    @validate_response(ChannelDetails)
    async def disconnect():
        return await services().channels.disconnect(name)

    @document_request(model)
    @validate_response(Validation)
    async def validate():
        channels = services().channels
        try:
            if await request.get_data():
                data = await request.get_json()
                try:
                    credentials = model.model_validate(data).model_dump(exclude_none=True)
                except ValidationError as exc:
                    raise RequestSchemaValidationError(exc) from None
                account = await channels.validate(name, credentials)
            else:  # no body: check what is stored
                account = await channels.validate_stored(name)
        except PlatformError as exc:
            return Validation(valid=False, accountName=None, message=exc.reason)
        return Validation(valid=True, accountName=account, message=f"Valid: {account}")

    connect.__doc__ = f"Check the credentials with {name}, store them encrypted and start the channel."
    disconnect.__doc__ = f"Stop the {name} channel and forget its credentials."
    validate.__doc__ = (f"Check credentials with {name} without storing them (no body: the stored ones); "
                        "the message says why they fail.")
    bp.add_url_rule(f"/channels/{name}/connect", f"{name}_connect", connect, methods=["POST"])
    bp.add_url_rule(f"/channels/{name}/disconnect", f"{name}_disconnect", disconnect, methods=["POST"])
    bp.add_url_rule(f"/channels/{name}/validate", f"{name}_validate", validate, methods=["POST"])


_platform_routes("telegram", Telegram.credentials_model)
_platform_routes("slack", Slack.credentials_model)
_platform_routes("discord", Discord.credentials_model)
_platform_routes("whatsapp", WhatsApp.credentials_model)


@bp.get("/channels/<name>")
@validate_response(ChannelDetails)
async def channel_details(name: str):
    """Status with details: account, connectedAt, lastEventAt, lastError, messages in and out."""
    return services().channels.details(name)
