"""`nanoclaw image build`: ask the running server to build the agent image and show its output live."""
from __future__ import annotations

import argparse
import json
import os
import sys

import httpx


def add_parser(commands) -> None:
    image = commands.add_parser("image", help="the agent image", description="Manage the agent image.")
    image_commands = image.add_subparsers(dest="image_command", required=True, metavar="ACTION")
    build = image_commands.add_parser(
        "build", help="build the agent image on the running server, showing its output",
        description="Ask the running server to build the agent image; its output is shown as it happens.")
    build.add_argument("--tag", help="image tag (default: the server's agent image)")
    build.add_argument("--base-image", help="base image (present locally; never pulled)")
    build.add_argument("--url", help="server URL (default http://NANOCLAW_HOST:NANOCLAW_PORT)")
    build.add_argument("--api-key", help="API key (default $NANOCLAW_API_KEY)")


def _url(args: argparse.Namespace) -> str:
    if args.url:
        return args.url.rstrip("/")
    host = os.environ.get("NANOCLAW_HOST", "127.0.0.1")
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{os.environ.get('NANOCLAW_PORT', '55765')}"


def build(args: argparse.Namespace, out=sys.stdout, err=sys.stderr) -> int:
    body = {key: value for key, value in (("imageTag", args.tag), ("baseImage", args.base_image)) if value}
    headers = {"Accept": "text/event-stream"}
    key = args.api_key or os.environ.get("NANOCLAW_API_KEY")
    if key:
        headers["X-API-Key"] = key
    url = _url(args) + "/api/v1/container/image/build"
    result = None
    try:
        with httpx.stream("POST", url, json=body, headers=headers, timeout=httpx.Timeout(30, read=None)) as response:
            if response.status_code != 200:
                response.read()
                try:
                    message = response.json()["error"]["message"]
                except (ValueError, KeyError, TypeError):
                    message = response.text[:500]
                print(f"error: {response.status_code}: {message}", file=err)
                return 1
            event = None
            for line in response.iter_lines():
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: "):
                    data = json.loads(line[6:])
                    if event == "output":
                        print(data["line"], file=out, flush=True)
                    elif event == "result":
                        result = data
    except httpx.HTTPError as exc:
        print(f"error: cannot reach the server at {url}: {exc}", file=err)
        return 1
    if result is None:
        print("error: the stream ended without a result", file=err)
        return 1
    print(f"{result['imageTag']}: {result['message']}", file=out if result["success"] else err)
    return 0 if result["success"] else 1
