"""Issue 12, items 6-10: bad input gets one JSON envelope (or a documented transport answer)."""
from __future__ import annotations

import pytest

from checks import assert_error
from nanoclaw.jsondepth import MAX_DEPTH, TooDeep, check_depth


# -- item 6: nesting cap --------------------------------------------------------------

def test_check_depth_counts_brackets_outside_strings_only():
    check_depth("[" * MAX_DEPTH + "]" * MAX_DEPTH)
    check_depth('{"a": "' + "[" * 1000 + '"}')
    check_depth(b'["\\"[[[[", {"b": [1]}]', max_depth=3)
    with pytest.raises(TooDeep):
        check_depth("[" * (MAX_DEPTH + 1))
    with pytest.raises(ValueError):  # TooDeep is a ValueError
        check_depth(b'{"a": {"b": [[]]}}', max_depth=3)


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 100_000])
async def test_a_body_nested_deeper_than_the_cap_is_a_400_envelope(client, depth):
    raw = "[" * depth + "]" * depth
    for method, path in [("POST", "/container/namespaces"), ("PUT", "/container/mount/allowlist")]:
        answer = await client.request(method, path, content=raw, headers={"Content-Type": "application/json"})
        error = assert_error(answer, 400, "MALFORMED_JSON")
        assert str(MAX_DEPTH) in error["message"]


async def test_a_body_at_the_cap_reaches_validation(client):
    raw = '{"name": "deep", "containerConfig": ' + "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1) + "}"
    answer = await client.post("/container/namespaces", content=raw, headers={"Content-Type": "application/json"})
    assert_error(answer, 400, "VALIDATION_ERROR")
