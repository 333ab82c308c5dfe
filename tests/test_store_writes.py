"""The store's write path: group commit on a real SQLite file with real worker threads."""
from __future__ import annotations

import sqlite3
import threading
from functools import partial

import pytest
import trio

from nanoclaw.store import Database, StoreError

WRITERS = 20


class CountingOffload:
    """trio.to_thread.run_sync, counted: one call is one thread hop."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, fn, *args):
        self.calls += 1
        return await trio.to_thread.run_sync(fn, *args)


@pytest.fixture
async def store(tmp_path):
    offload = CountingOffload()
    db = Database(tmp_path / "store.db", offload=offload)
    await db.open()
    await db.write(lambda conn: conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT UNIQUE)"))
    offload.calls = 0
    yield db, offload
    await db.close()


def rows(db: Database) -> list[str]:
    with sqlite3.connect(db.path) as conn:
        return [body for (body,) in conn.execute("SELECT body FROM notes ORDER BY id")]


def insert(conn, body):
    return conn.execute("INSERT INTO notes (body) VALUES (?)", (body,)).lastrowid


def insert_then_fail(conn, body):
    conn.execute("INSERT INTO notes (body) VALUES (?)", (body,))
    raise ValueError(f"{body} refused after its insert")


async def test_writes_that_queue_behind_one_go_in_one_hop_and_each_caller_gets_its_own_answer(store):
    db, offload = store
    gate = threading.Event()
    answers: dict[str, object] = {}

    async def write(body, fn=insert, before=None, label=None):
        try:
            answers[label or body] = await db.write(fn, body, before=before)
        except Exception as exc:  # noqa: BLE001 - the answer under test
            answers[label or body] = exc

    def wait_for_gate():
        assert gate.wait(10), "the test never opened the gate"

    async with trio.open_nursery() as nursery:
        nursery.start_soon(write, "first", insert, wait_for_gate)
        await trio.testing.wait_all_tasks_blocked()
        for i in range(WRITERS):
            fn = insert_then_fail if i == 7 else insert
            nursery.start_soon(write, f"queued-{i}", fn)
        nursery.start_soon(partial(write, "first", label="duplicate"))  # its UNIQUE violation is its own
        nursery.start_soon(write, "before-fails", insert, lambda: 1 / 0)
        await trio.testing.wait_all_tasks_blocked()
        gate.set()

    assert offload.calls == 2, "the first write, then one hop for everything that queued behind it"
    kept = [f"queued-{i}" for i in range(WRITERS) if i != 7]
    assert rows(db)[0] == "first" and sorted(rows(db)[1:]) == sorted(kept)
    ids = {body: answers[body] for body in ["first", *kept]}
    assert sorted(ids.values()) == list(range(1, WRITERS + 1)), "each caller got its own row id"
    assert isinstance(answers["queued-7"], ValueError)
    assert isinstance(answers["before-fails"], ZeroDivisionError)
    assert isinstance(answers["duplicate"], sqlite3.IntegrityError)


async def test_a_writer_cancelled_while_it_waits_still_gets_its_write_committed(store):
    db, offload = store
    gate = threading.Event()
    returned: list[str] = []

    async def cancelled_caller():
        with trio.CancelScope() as scope:
            scope.cancel()
            await db.write(insert, "cancelled-caller")
            returned.append("cancelled-caller")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(partial(db.write, insert, "first", before=lambda: gate.wait(10)))
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(cancelled_caller)
        await trio.testing.wait_all_tasks_blocked()
        gate.set()

    assert rows(db) == ["first", "cancelled-caller"]
    assert returned == ["cancelled-caller"], "the write returned its answer before the cancellation took effect"


async def test_a_batch_whose_commit_fails_keeps_none_of_its_writes_and_the_store_goes_on(store):
    db, offload = store
    # A deferred foreign key is checked at COMMIT: an orphan row makes the batch's COMMIT fail.
    await db.write(lambda conn: conn.execute(
        "CREATE TABLE replies (id INTEGER PRIMARY KEY, "
        "note_id INTEGER REFERENCES notes(id) DEFERRABLE INITIALLY DEFERRED)"))
    gate = threading.Event()
    errors: dict[str, BaseException] = {}

    async def write(body, fn=insert, before=None):
        try:
            await db.write(fn, body, before=before)
        except Exception as exc:  # noqa: BLE001 - the answer under test
            errors[body] = exc

    async with trio.open_nursery() as nursery:
        nursery.start_soon(write, "first", insert, lambda: gate.wait(10))
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(write, "a")
        nursery.start_soon(write, "orphan", lambda conn, body: conn.execute("INSERT INTO replies (note_id) VALUES (999)"))
        nursery.start_soon(write, "c")
        await trio.testing.wait_all_tasks_blocked()
        gate.set()

    assert sorted(errors) == ["a", "c", "orphan"]
    assert all(isinstance(e, sqlite3.IntegrityError) for e in errors.values())
    assert rows(db) == ["first"]
    assert await db.write(insert, "after") == 2
    assert rows(db) == ["first", "after"]


async def test_a_write_to_a_closed_store_is_a_store_error(tmp_path):
    db = Database(tmp_path / "store.db")
    with pytest.raises(StoreError, match="not open"):
        await db.write(insert, "x")


async def test_writes_that_replace_the_same_thing_in_one_batch_run_only_the_last_before_and_share_its_outcome(store):
    db, offload = store
    gate = threading.Event()
    ran: list[str] = []
    answers: dict[str, object] = {}

    async def write(body, before, replaces):
        try:
            answers[body] = await db.write(insert, body, before=before, replaces=replaces)
        except Exception as exc:  # noqa: BLE001 - the answer under test
            answers[body] = exc

    def refuse():
        ran.append("refused")
        raise PermissionError("the file is refused")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(write, "first", lambda: gate.wait(10), None)
        await trio.testing.wait_all_tasks_blocked()
        for body in ("a1", "a2", "a3"):  # one after the other: a3 is the last of "a"
            nursery.start_soon(write, body, partial(ran.append, body), "a")
            await trio.testing.wait_all_tasks_blocked()
        for body in ("b1", "b2"):
            nursery.start_soon(write, body, partial(ran.append, body) if body == "b1" else refuse, "b")
            await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(write, "c", partial(ran.append, "c"), None)
        await trio.testing.wait_all_tasks_blocked()
        gate.set()

    assert sorted(ran) == ["a3", "c", "refused"], "of each group of replacing writes only the last ran its before"
    assert all(isinstance(answers[body], int) for body in ("a1", "a2", "a3", "c"))
    assert all(isinstance(answers[body], PermissionError) for body in ("b1", "b2")), "b1 shares b2's refusal"
    assert sorted(rows(db)) == ["a1", "a2", "a3", "c", "first"]


async def test_when_the_hop_itself_fails_every_queued_writer_hears_it_and_nothing_is_kept(tmp_path):
    class FailingSecondHop(CountingOffload):
        async def __call__(self, fn, *args):
            self.calls += 1
            if self.calls == 4:  # open, the table, the first write; then the batch's hop
                raise RuntimeError("no worker thread could be started")
            return await trio.to_thread.run_sync(fn, *args)

    offload = FailingSecondHop()
    db = Database(tmp_path / "store.db", offload=offload)
    await db.open()
    await db.write(lambda conn: conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT UNIQUE)"))
    gate = threading.Event()
    answers: dict[str, object] = {}

    async def write(body, before=None):
        try:
            answers[body] = await db.write(insert, body, before=before)
        except Exception as exc:  # noqa: BLE001 - the answer under test
            answers[body] = exc

    async with trio.open_nursery() as nursery:
        nursery.start_soon(write, "first", lambda: gate.wait(10))
        await trio.testing.wait_all_tasks_blocked()
        for body in ("a", "b", "c"):
            nursery.start_soon(write, body)
        await trio.testing.wait_all_tasks_blocked()
        gate.set()

    assert answers["first"] == 1
    assert all(isinstance(answers[body], Exception) for body in ("a", "b", "c")), answers
    assert rows(db) == ["first"]
    await db.close()
