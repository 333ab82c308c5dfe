"""The one loader for JSON from containers: size and nesting caps, checked without recursion."""
from __future__ import annotations

import json

import pytest

from nanoclaw.safejson import BadJson, loads, too_deep


@pytest.mark.parametrize("raw", [
    b"[" * 32 + b"]" * 32,
    json.dumps({"a": [1, {"b": "[[[[[[[[" * 100}]}).encode(),  # brackets inside strings do not count
    json.dumps({"q": '\\"[' * 50}).encode(),  # nor after escaped quotes
    b'{"text": "caf\\u00e9", "n": 1.5e3, "ok": true, "none": null}',
])
def test_valid_json_within_the_caps_parses(raw):
    assert loads(raw, max_bytes=1 << 20) == json.loads(raw)


@pytest.mark.parametrize("raw, reason", [
    (b"[" * 33 + b"]" * 33, "nested deeper than 32"),
    (b"[" * 1000, "nested deeper than 32"),
    (b"[" * 1000 + b"]" * 1000, "nested deeper than 32"),
    (b'{"a":' * 100 + b"1" + b"}" * 100, "nested deeper than 32"),
    (b"[" * 20 + b"[" * 20 + b"]" * 20, "nested deeper than 32"),  # unbalanced: judged by its openers
    (b'"' + b"[" * 5000, "not JSON"),  # an unterminated string: the parser never recurses into it
    (b'"\\\\"' + b"[" * 40, "nested deeper than 32"),  # an escaped backslash ends the string
    (b'"\\""' + b"[" * 40, "nested deeper than 32"),  # an escaped quote does not
    (b"x" * 11, "larger than 10 bytes"),
    (b"{not json", "not JSON"),
    (b"\xff\xfe", "not JSON"),
])
def test_bad_input_is_a_value_error_never_a_recursion_error(raw, reason):
    with pytest.raises(BadJson, match=reason) as caught:
        loads(raw, max_bytes=10 if reason.startswith("larger") else 1 << 20)
    assert isinstance(caught.value, ValueError)


def test_a_custom_depth():
    assert not too_deep(b"[[[]]]", 3) and too_deep(b"[[[[]]]]", 3)
