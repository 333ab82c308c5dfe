"""The proxy's ASGI app: check the run token, swap in the real credential, stream both ways."""
from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import unquote

import httpx
import trio

from nanoclaw.audit import Audit
from nanoclaw.errors import Forbidden, Invalid, NanoclawError, NotFound, UpstreamError
from nanoclaw.lifespan import answer_lifespan
from nanoclaw.proxy._mappings import PLACEHOLDER, RUN_TOKEN_HEADER, Mapping
from nanoclaw.proxy._meter import MAX_REQUEST, Meter, UsageParser, with_include_usage
from nanoclaw.proxy._redact import Redactor, redact, secret_forms

log = logging.getLogger("nanoclaw.proxy")

CATEGORY = "credential-proxy"
HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"te", b"trailer",
    b"trailers", b"transfer-encoding", b"upgrade",
})
# Never forwarded: whatever auth the client sent, Host (the upstream's own is set
# from its URL) and Expect (the proxy answers for itself).
DROPPED_REQUEST_HEADERS = HOP_BY_HOP | {
    b"host", b"authorization", b"x-api-key", RUN_TOKEN_HEADER.encode(), b"expect",
    # Bodies come back uncompressed, so the credential can be found in them (see _redact).
    b"accept-encoding",
}
_TOKEN_PREFIX = PLACEHOLDER + "."


class _ClientGone(Exception):
    """The container hung up while its request body was still arriving."""


def _without(headers: list[tuple[bytes, bytes]], dropped: frozenset[bytes] | set[bytes]):
    """Headers minus `dropped`, minus hop-by-hop ones named in Connection."""
    named = {
        token.strip().lower()
        for name, value in headers if name.lower() == b"connection"
        for token in value.split(b",")
    }
    return [(name.lower(), value) for name, value in headers
            if name.lower() not in dropped and name.lower() not in named]


def _ascii(raw: bytes) -> str:
    """Raw URL bytes as text, every byte outside printable ASCII percent-encoded as it is."""
    return "".join(chr(b) if 0x21 <= b <= 0x7e else f"%{b:02X}" for b in raw)


async def _answer_error(send, error: NanoclawError) -> int:
    body = json.dumps({"error": {"code": error.code, "message": error.message}}).encode()
    await send({
        "type": "http.response.start",
        "status": error.status,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
    })
    await send({"type": "http.response.body", "body": body})
    return error.status


async def _asking_usage(content, headers: list[tuple[bytes, bytes]]):
    """A chat-completions body (read, up to MAX_REQUEST) with stream_options.include_usage on a streamed
    request, so the upstream reports usage; the headers with the length to match."""
    body = bytearray()
    async for chunk in content:
        body += chunk
        if len(body) > MAX_REQUEST:
            async def rest(head=bytes(body)):
                yield head
                async for more in content:
                    yield more
            return rest(), headers
    changed = with_include_usage(bytes(body))
    if changed is None:
        return bytes(body), headers
    return changed, [(n, v) for n, v in headers if n not in (b"content-length", b"transfer-encoding")] + [
        (b"content-length", str(len(changed)).encode())]


class Forwarder:
    """ASGI app. `routes` (name -> Mapping) and `runs` (run token -> group) are
    owned by the CredentialProxy and read live, so a change applies to the next request."""

    def __init__(self, routes: dict[str, Mapping], runs: dict[str, str], audit: Audit,
                 client: httpx.AsyncClient, meter: Meter) -> None:
        self.routes = routes
        self.runs = runs
        self.audit = audit
        self.meter = meter
        self.client = client
        # Requests being handled, their audit entry included.
        self.in_flight = 0
        self._idle = trio.Event()
        self._idle.set()

    async def wait_idle(self) -> None:
        """Until no request is in flight: every exchange so far is complete and audited."""
        while self.in_flight:
            await self._idle.wait()

    async def __call__(self, scope: dict[str, Any], receive, send) -> None:
        if scope["type"] == "lifespan":
            await answer_lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        if not self.in_flight:
            self._idle = trio.Event()
        self.in_flight += 1
        try:
            await self._handle(scope, receive, send)
        finally:
            self.in_flight -= 1
            if not self.in_flight:
                self._idle.set()

    async def _handle(self, scope: dict[str, Any], receive, send) -> None:
        started = trio.current_time()
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        segment, slash, rest = raw_path[1:].partition(b"/")
        name = unquote(segment.decode("ascii", "replace"))
        path = "/" + rest.decode("ascii", "replace")
        method = scope["method"]
        mapping = self.routes.get(name)

        token, group = self._run_group(scope["headers"], mapping)
        if group is None:
            client = scope.get("client") or ("?",)
            await self.audit.record(
                "violation", CATEGORY, f"refused {method} /{name[:64]}{path[:200]}: no live run token",
                details={"method": method, "mapping": name[:64], "path": path[:200], "client": client[0]},
            )
            await _answer_error(send, Forbidden(
                "The credential proxy serves only live NanoClaw container runs: "
                "the run token is missing, unknown or its run has finished"))
            return

        stats = {"requestBytes": 0, "responseBytes": 0}
        outcome = None
        if mapping is None:
            status = await _answer_error(send, NotFound(
                f"No credential mapping named {name[:64]!r}; "
                "GET /api/v1/container/credential-proxy/mappings lists them"))
        elif {".", ".."} & set(unquote(path).split("/")):
            # The upstream URL's own path is a boundary: no climbing out of it.
            status = await _answer_error(send, Invalid("The path may not contain '.' or '..' segments"))
        elif not mapping.allows_group(group) or not mapping.allows_path(path):
            refused = "group" if not mapping.allows_group(group) else "path"
            await self.audit.record(
                "violation", CATEGORY, f"refused {method} /{name[:64]}{path[:200]}: the mapping does not serve "
                f"this {refused}", group=group,
                details={"method": method, "mapping": name[:64], "path": path[:200], "status": 403})
            await _answer_error(send, Forbidden(f"Credential mapping {name[:64]!r} does not serve this {refused}"))
            return
        elif (spent := await self.meter.spent(token, group)) is not None:
            status = await self._refuse_spent(send, group, method, name, path, spent)
        else:
            status, outcome = await self._forward(scope, receive, send, mapping, rest if slash else None, stats,
                                                  token, group)
        details = {"method": method, "mapping": name[:64], "path": path[:200], "status": status, **stats,
                   "durationMs": round((trio.current_time() - started) * 1000, 2)}
        if outcome is not None:
            details["outcome"] = outcome
        await self.audit.record("info" if outcome is None else "warning", CATEGORY,
                                f"{method} /{name[:64]}{path[:200]} -> {status}", group=group, details=details)

    async def _refuse_spent(self, send, group: str, method: str, name: str, path: str,
                            spent: tuple[int, int, str]) -> int:
        """Refused before the upstream is called: the group's month is spent (429, Anthropic-shaped body)."""
        used, budget, following = spent
        message = (f"This group has used {used:,} metered tokens this month, its monthly token budget is "
                   f"{budget:,}: no model calls until {following} (UTC) unless the budget "
                   "(containerConfig.agent.monthlyTokenBudget) is raised.")
        await self.audit.record("warning", CATEGORY, f"refused {method} /{name[:64]}{path[:200]}: monthly token "
                                "budget spent", group=group,
                                details={"mapping": name[:64], "used": used, "budget": budget, "status": 429})
        body = json.dumps({"type": "error", "error": {"type": "rate_limit_error", "code": "budget_exceeded",
                                                      "message": message}}).encode()
        await send({"type": "http.response.start", "status": 429, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
        return 429

    def _run_group(self, headers: list[tuple[bytes, bytes]], mapping: Mapping | None) -> tuple[str, str | None]:
        """The token and group of the live run the request's token belongs to, if any."""
        custom = mapping.auth_header[0] if mapping and mapping.credential_type.startswith("header:") else None
        for name, value in headers:
            if name == b"authorization":
                scheme, _, value = value.partition(b" ")
                if scheme.lower() != b"bearer":
                    continue
            elif name not in (b"x-api-key", RUN_TOKEN_HEADER.encode(), custom):
                continue
            token = value.strip().decode("latin-1").removeprefix(_TOKEN_PREFIX)
            group = self.runs.get(token)
            if group is not None:
                return token, group
        return "", None

    async def _forward(self, scope, receive, send, mapping: Mapping, rest: bytes | None,
                       stats: dict[str, int], token: str, group: str) -> tuple[int, str | None]:
        """Returns (status, outcome); outcome says why the exchange did not complete, if it did not."""
        url = mapping.upstream_url
        if rest is not None:
            url += "/" + _ascii(rest)
        if scope.get("query_string"):
            url += "?" + _ascii(scope["query_string"])
        auth_name, auth_value = mapping.auth_header
        headers = _without(scope["headers"], DROPPED_REQUEST_HEADERS | {auth_name})
        if mapping.credential:  # an empty one: a local server that needs no key
            headers.append((auth_name, auth_value))
        headers.append((b"accept-encoding", b"identity"))
        has_body = any(
            (name == b"content-length" and value.strip() != b"0") or name == b"transfer-encoding"
            for name, value in scope["headers"]
        )
        body_done = trio.Event()

        async def request_body():
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise _ClientGone
                chunk = message.get("body", b"")
                if chunk:
                    stats["requestBytes"] += len(chunk)
                    yield chunk
                if not message.get("more_body", False):
                    body_done.set()
                    return

        if not has_body:
            body_done.set()
        try:
            content = request_body() if has_body else None
            if content is not None and scope["method"] == "POST" and url.split("?")[0].endswith("/chat/completions"):
                content, headers = await _asking_usage(content, headers)
            request = httpx.Request(scope["method"], url, headers=headers, content=content)
            response = await self.client.send(request, stream=True)
        except _ClientGone:
            return 499, "client disconnected"
        except httpx.TransportError as exc:
            # The exception text may carry the URL; the class name is enough.
            log.warning("upstream of mapping %r unreachable: %s", mapping.name, type(exc).__name__)
            status = await _answer_error(send, UpstreamError(
                f"The upstream of credential mapping {mapping.name!r} could not be reached "
                f"({type(exc).__name__})"))
            return status, "upstream unreachable"
        except Exception as exc:  # e.g. a URL httpx refuses (a mapping stored before strict checks)
            log.warning("request for mapping %r could not be forwarded: %s", mapping.name, type(exc).__name__)
            status = await _answer_error(send, UpstreamError(
                f"The request for credential mapping {mapping.name!r} could not be forwarded "
                f"({type(exc).__name__}); check its upstreamUrl"))
            return status, "not forwarded"

        outcome = None
        # The credential never flows back: masked in headers and (streamed) bodies, same length.
        forms = secret_forms(mapping.credential)
        redactor = Redactor(forms)
        usage = UsageParser(response.headers.get("content-type", ""))
        # An upstream that compresses anyway: decode, so the scrubbing sees the plain bytes.
        encoded = response.headers.get("content-encoding", "identity").strip().lower() not in ("", "identity")
        dropped = HOP_BY_HOP | {b"content-encoding", b"content-length"} if encoded else HOP_BY_HOP
        try:
            await send({
                "type": "http.response.start",
                "status": response.status_code,
                "headers": [(name, redact(value, forms)) for name, value in _without(response.headers.raw, dropped)],
            })
            completed = False
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._cancel_on_disconnect, receive, body_done, nursery.cancel_scope)
                async for chunk in (response.aiter_bytes() if encoded else response.aiter_raw()):
                    stats["responseBytes"] += len(chunk)
                    usage.feed(chunk)
                    chunk = redactor.feed(chunk)
                    if chunk:
                        await send({"type": "http.response.body", "body": chunk, "more_body": True})
                # Finishing the response makes the server report a disconnect: do not let
                # the watcher cancel the send that caused it.
                with trio.CancelScope(shield=True):
                    await send({"type": "http.response.body", "body": redactor.flush(), "more_body": False})
                completed = True
                nursery.cancel_scope.cancel()
            if not completed:
                outcome = "client disconnected"
        except httpx.TransportError as exc:
            # Headers are out: all we can do is cut the connection so the client sees it.
            log.warning("upstream of mapping %r failed mid-response: %s", mapping.name, type(exc).__name__)
            outcome = "upstream failed mid-response"
        finally:
            with trio.CancelScope(shield=True):
                await response.aclose()
                await self.meter.record(token, group, mapping.name, usage.finish())
        return response.status_code, outcome

    @staticmethod
    async def _cancel_on_disconnect(receive, body_done: trio.Event, scope: trio.CancelScope) -> None:
        # Only once the body is read: until then request_body() owns receive().
        await body_done.wait()
        while (await receive())["type"] != "http.disconnect":
            pass
        scope.cancel()
