"""The model's Markdown in each platform's own format: Telegram HTML (escaped), Slack mrkdwn,
WhatsApp's *bold* _italic_; Discord takes Markdown as it is."""
from __future__ import annotations

import html
import re
from typing import Callable

_CODE = re.compile(r"```(?:[\w+-]*\n)?([\s\S]*?)```|`([^`\n]+)`")
_LINK = re.compile(r"\[([^\]\n]+)\]\((https?://[^)\s]+)\)")
_BOLD = re.compile(r"\*\*(?=\S)(.+?)(?<=\S)\*\*|__(?=\S)(.+?)(?<=\S)__")
_ITALIC = re.compile(r"(?<![\w*])\*(?=\S)([^*\n]+?)(?<=\S)\*(?![\w*])|(?<![\w_])_(?=\S)([^_\n]+?)(?<=\S)_(?![\w_])")
_STRIKE = re.compile(r"~~(?=\S)(.+?)(?<=\S)~~")
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*$", re.MULTILINE)


def _convert(text: str, prose: Callable[[str], str], block: Callable[[str], str], inline: Callable[[str], str]) -> str:
    out, last = [], 0
    for match in _CODE.finditer(text):
        out.append(prose(text[last:match.start()]))
        out.append(block(match.group(1)) if match.group(1) is not None else inline(match.group(2)))
        last = match.end()
    out.append(prose(text[last:]))
    return "".join(out)


def _either(m: re.Match) -> str:
    return m.group(1) if m.group(1) is not None else m.group(2)


def _telegram_prose(text: str) -> str:
    text = html.escape(text, quote=False)
    text = _LINK.sub(lambda m: f'<a href="{m.group(2).replace(chr(34), "&quot;")}">{m.group(1)}</a>', text)
    text = _HEADING.sub(lambda m: f"<b>{m.group(1)}</b>", text)
    text = _BOLD.sub(lambda m: f"<b>{_either(m)}</b>", text)
    text = _ITALIC.sub(lambda m: f"<i>{_either(m)}</i>", text)
    return _STRIKE.sub(lambda m: f"<s>{m.group(1)}</s>", text)


def telegram_html(text: str) -> str:
    """For sendMessage with parse_mode HTML."""
    return _convert(text, _telegram_prose, lambda c: f"<pre>{html.escape(c, quote=False)}</pre>",
                    lambda c: f"<code>{html.escape(c, quote=False)}</code>")


def _slack_escape(text: str) -> str:
    # Slack wants &, < and > escaped; its control sequences are <...>.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# Slack's own sequences (mentions, channels, links) the model may write: kept as they are.
_SLACK_SEQUENCE = re.compile(r"(<(?:[@#!]|https?://)[^<>\s]+>)")


def _single_char_markup(text: str) -> str:
    """Headings and bold as *x*, italics _x_, strike-through ~x~: what Slack and WhatsApp share."""
    text = _HEADING.sub(lambda m: f"\x00{m.group(1)}\x00", text)
    text = _ITALIC.sub(lambda m: f"_{_either(m)}_", text)
    text = _BOLD.sub(lambda m: f"\x00{_either(m)}\x00", text)
    return _STRIKE.sub(lambda m: f"~{m.group(1)}~", text).replace("\x00", "*")


def _slack_prose(text: str) -> str:
    text = "".join(part if i % 2 else _slack_escape(part) for i, part in enumerate(_SLACK_SEQUENCE.split(text)))
    text = _LINK.sub(lambda m: f"<{m.group(2)}|{m.group(1)}>", text)
    return _single_char_markup(text)


def slack_mrkdwn(text: str) -> str:
    return _convert(text, _slack_prose, lambda c: f"```{_slack_escape(c)}```", lambda c: f"`{_slack_escape(c)}`")


def _whatsapp_prose(text: str) -> str:
    text = _LINK.sub(lambda m: f"{m.group(1)} ({m.group(2)})", text)
    return _single_char_markup(text)


def whatsapp_text(text: str) -> str:
    return _convert(text, _whatsapp_prose, lambda c: f"```{c}```", lambda c: f"`{c}`")
