"""Command line: `nanoclaw serve`, `nanoclaw api-key create|list|revoke`, `nanoclaw image build`."""
from __future__ import annotations

import argparse
import sys

from nanoclaw import __version__, cli_image
from nanoclaw.apikeys import create_key, list_keys, revoke_key
from nanoclaw.audit import insert_entry
from nanoclaw.clock import iso
from nanoclaw.config import ConfigError, load_settings
from nanoclaw.store import sync_connection


def _common(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("server options (also NANOCLAW_* variables)")
    group.add_argument("--host", help="address to bind (NANOCLAW_HOST, default 127.0.0.1)")
    group.add_argument("--port", type=int, help="port to bind (NANOCLAW_PORT, default 55765)")
    group.add_argument("--data-dir", help="state: database, group folders (NANOCLAW_DATA_DIR, default ./data)")
    group.add_argument("--config-dir",
                       help="secrets key, mount allowlist (NANOCLAW_CONFIG_DIR, default ~/.config/nanoclaw)")
    group.add_argument("--allow-insecure", action="store_true", default=None,
                       help="serve a non-loopback address even with no API key (NANOCLAW_ALLOW_INSECURE)")


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="nanoclaw", description="NanoClaw server: chat apps to containerised AI agents.")
    top.add_argument("--version", action="version", version=f"nanoclaw {__version__}")
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the server", description="Run the server until Ctrl-C.")
    _common(serve)

    keys = commands.add_parser("api-key", help="manage API keys", description="Manage API keys.")
    key_commands = keys.add_subparsers(dest="key_command", required=True, metavar="ACTION")
    create = key_commands.add_parser("create", help="create a key and print it once",
                                     description="Create an API key; it is printed once and stored only hashed.")
    create.add_argument("--name", required=True, help="what the key is for")
    _common(create)
    listing = key_commands.add_parser("list", help="list keys (never their values)", description="List API keys.")
    _common(listing)
    revoke = key_commands.add_parser("revoke", help="revoke a key by id", description="Revoke an API key.")
    revoke.add_argument("id", help="the key id shown by `api-key list`")
    _common(revoke)
    cli_image.add_parser(commands)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "image":
        return cli_image.build(args)
    try:
        settings = load_settings(
            host=args.host, port=args.port, data_dir=args.data_dir, config_dir=args.config_dir,
            allow_insecure=args.allow_insecure,
        )
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.command == "serve":
        from nanoclaw.main import run

        return run(settings)

    import time

    with sync_connection(settings.database_path) as conn:
        if args.key_command == "create":
            conn.execute("BEGIN IMMEDIATE")
            key_id, raw = create_key(conn, args.name, time.time())
            insert_entry(conn, time.time(), "info", "auth", f"API key {key_id} ({args.name}) created")
            conn.execute("COMMIT")
            print(f"Created API key {key_id} ({args.name}). It is shown only this once:")
            print(raw)
            return 0
        if args.key_command == "list":
            rows = list_keys(conn)
            if not rows:
                print("No API keys: auth is off (loopback only).")
            for row in rows:
                state = f"revoked {iso(row['revoked_at'])}" if row["revoked_at"] else "active"
                print(f"{row['id']}  {row['prefix']}...  {row['name']}  created {iso(row['created_at'])}  {state}")
            return 0
        if args.key_command == "revoke":
            conn.execute("BEGIN IMMEDIATE")
            done = revoke_key(conn, args.id, time.time())
            if done:
                insert_entry(conn, time.time(), "info", "auth", f"API key {args.id} revoked")
            conn.execute("COMMIT")
            if not done:
                print(f"error: no active key with id {args.id}", file=sys.stderr)
                return 1
            print(f"Revoked API key {args.id}.")
            return 0
    return 2
