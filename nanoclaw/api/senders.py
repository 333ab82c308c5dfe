"""/channels/sender-allowlist."""
from quart import Blueprint
from quart_schema import validate_request, validate_response

from nanoclaw.api._common import services
from nanoclaw.security.senders import SenderAllowlistModel

bp = Blueprint("senders", __name__)


@bp.get("/channels/sender-allowlist")
@validate_response(SenderAllowlistModel)
async def get_sender_allowlist():
    """When enabled, only listed senders (or chats) reach the agents."""
    return await services().senders.get()


@bp.put("/channels/sender-allowlist")
@validate_request(SenderAllowlistModel)
@validate_response(SenderAllowlistModel)
async def put_sender_allowlist(data: SenderAllowlistModel):
    """Replace the sender allowlist; it applies to the next message."""
    return await services().senders.set(data)
