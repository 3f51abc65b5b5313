"""One suite for the metadata store, run over every backend: SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import threading
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from opensage.errors import AlreadyExists, Conflict, NotFound
from opensage.identity import bootstrap, create_access_key
from opensage.store.entities import Resource
from opensage.store.sql import SqlStore, StoreError, open_store

NOW = dt.datetime(2026, 11, 1, 12, 0, tzinfo=dt.UTC)


def _res(name: str, status: str = "InProgress", minutes: int = 0, kind: str = "training-job") -> Resource:
    when = NOW + dt.timedelta(minutes=minutes)
    return Resource(kind, name, f"arn:aws:sagemaker:us-east-1:1:{kind}/{name}", status, when, when, {"Name": name})


def test_resource_crud(store: SqlStore) -> None:
    store.create_resource(_res("a"))
    with pytest.raises(AlreadyExists):
        store.create_resource(_res("a"))
    got = store.get_resource("training-job", "a")
    assert got is not None and got.data == {"Name": "a"} and got.created_at == NOW
    assert store.get_resource("training-job", "missing") is None
    store.delete_resource("training-job", "a")
    with pytest.raises(NotFound):
        store.delete_resource("training-job", "a")


def test_list_filters_and_sorting(store: SqlStore) -> None:
    for i, (name, status) in enumerate([("alpha", "Completed"), ("beta", "InProgress"), ("gamma_x", "Completed")]):
        store.create_resource(_res(name, status, minutes=i))
    store.create_resource(_res("other", kind="endpoint"))
    assert [r.name for r in store.list_resources("training-job")] == ["gamma_x", "beta", "alpha"]
    assert [r.name for r in store.list_resources("training-job", sort_by="name", descending=False)] == [
        "alpha",
        "beta",
        "gamma_x",
    ]
    assert [r.name for r in store.list_resources("training-job", status="Completed")] == ["gamma_x", "alpha"]
    assert [r.name for r in store.list_resources("training-job", name_contains="_")] == ["gamma_x"]
    after = store.list_resources("training-job", created_after=NOW + dt.timedelta(seconds=30))
    assert [r.name for r in after] == ["gamma_x", "beta"]


def test_compare_and_set_update(store: SqlStore) -> None:
    store.create_resource(_res("job"))
    later = NOW + dt.timedelta(minutes=5)
    updated = store.update_resource(
        "training-job", "job", status="Completed", data={"Name": "job", "x": 1}, expect_status="InProgress", now=later
    )
    assert updated.status == "Completed" and updated.updated_at == later
    with pytest.raises(Conflict):
        store.update_resource("training-job", "job", status="Stopped", expect_status="InProgress", now=later)
    with pytest.raises(NotFound):
        store.update_resource("training-job", "nope", status="Stopped", now=later)


def test_concurrent_transitions_have_one_winner(store: SqlStore) -> None:
    store.create_resource(_res("race"))
    wins: list[str] = []

    def attempt(target: str) -> None:
        try:
            store.update_resource("training-job", "race", status=target, expect_status="InProgress", now=NOW)
            wins.append(target)
        except Conflict:
            pass

    threads = [threading.Thread(target=attempt, args=(t,)) for t in ("Completed", "Stopped", "Failed", "Stopping")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1


def _race_stop_and_save(store: SqlStore, name: str) -> None:
    start = threading.Barrier(2)

    def save_handle() -> None:
        start.wait()
        store.modify_resource("training-job", name, lambda r: ({**r.data, "_Handle": {"pid": 42}}, None), now=NOW)

    def to_stopping(r: Resource) -> tuple[dict, str]:
        if r.status != "InProgress":
            raise Conflict(f"{r.name} is {r.status}")
        return {**r.data, "TrainingJobStatus": "Stopping"}, "Stopping"

    def stop() -> None:
        start.wait()
        store.modify_resource("training-job", name, to_stopping, now=NOW)

    threads = [threading.Thread(target=save_handle), threading.Thread(target=stop)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def test_a_stop_racing_a_save_loses_nothing(store: SqlStore) -> None:
    """The engine saves the process handle while a StopTrainingJob moves the job to Stopping: both stay."""
    for round_ in range(20):
        name = f"stop-vs-save-{round_}"
        store.create_resource(_res(name))
        _race_stop_and_save(store, name)
        row = store.get_resource("training-job", name)
        assert row is not None
        assert row.data["_Handle"] == {"pid": 42}, round_
        assert row.status == "Stopping" and row.data["TrainingJobStatus"] == "Stopping", round_
        assert row.version == 3


def test_a_write_from_a_stale_read_is_refused(store: SqlStore) -> None:
    first = store.create_resource(_res("stale"))
    assert first.version == 1
    store.update_resource("training-job", "stale", data={"Name": "stale", "a": 1}, now=NOW)
    with pytest.raises(Conflict, match="changed meanwhile"):
        store.update_resource(
            "training-job", "stale", data={"Name": "stale", "b": 2}, expect_version=first.version, now=NOW
        )
    unchanged = store.modify_resource("training-job", "stale", lambda r: None, now=NOW)
    assert unchanged.data == {"Name": "stale", "a": 1} and unchanged.version == 2
    with pytest.raises(Conflict):
        store.modify_resource("training-job", "stale", lambda r: (_ for _ in ()).throw(Conflict("no")), now=NOW)
    with pytest.raises(NotFound):
        store.modify_resource("training-job", "missing", lambda r: None, now=NOW)


def test_children_are_listed_by_parent_and_paged_in_sql(store: SqlStore) -> None:
    parent = "arn:aws:sagemaker:us-east-1:000000000000:hyper-parameter-tuning-job/tune"
    for i in range(5):
        created = NOW + dt.timedelta(seconds=i)
        store.create_resource(
            Resource(
                "training-job", f"child-{i}", f"arn:child-{i}", "InProgress", created, created, {}, parent_arn=parent
            )
        )
    store.create_resource(_res("orphan"))
    children = store.list_resources("training-job", parent_arn=parent, descending=False)
    assert [r.name for r in children] == [f"child-{i}" for i in range(5)]
    assert children[0].parent_arn == parent
    page = store.list_resources("training-job", parent_arn=parent, descending=False, offset=1, limit=2)
    assert [r.name for r in page] == ["child-1", "child-2"]


def _walk(store: SqlStore, size: int, sort_by: str, descending: bool, **filters: str) -> list[list[str]]:
    """Every page of ``size`` rows, each taken by key after the last row of the one before."""
    pages: list[list[str]] = []
    after = None
    while True:
        page = store.list_resources(
            "training-job", sort_by=sort_by, descending=descending, after=after, limit=size, **filters
        )
        pages.append([r.name for r in page])
        if len(page) < size:
            return pages
        last = page[-1]
        after = ({"name": last.name, "status": last.status}.get(sort_by, last.created_at), last.name)


@pytest.mark.parametrize("descending", [True, False])
@pytest.mark.parametrize("sort_by", ["created_at", "name", "status"])
def test_pages_by_key_join_into_the_full_order(store: SqlStore, sort_by: str, descending: bool) -> None:
    """Ties on the sort column (4 rows a minute, 3 statuses) are ordered by name, on every database alike."""
    rows = [_res(f"job{i:02d}", ("Completed", "Failed", "InProgress")[i % 3], minutes=i // 4) for i in range(23)]
    for r in rows:
        store.create_resource(r)
    store.create_resource(_res("job99", kind="endpoint"))
    value = {"created_at": lambda r: r.created_at, "name": lambda r: r.name, "status": lambda r: r.status}[sort_by]
    expected = [r.name for r in sorted(sorted(rows, key=lambda r: r.name), key=value, reverse=descending)]
    full = store.list_resources("training-job", sort_by=sort_by, descending=descending)
    assert [r.name for r in full] == expected
    pages = _walk(store, 5, sort_by, descending)
    assert [len(p) for p in pages] == [5, 5, 5, 5, 3]
    assert sum(pages, []) == expected
    filtered = _walk(store, 2, sort_by, descending, name_contains="1", status="Completed")
    assert sum(filtered, []) == [n for n in expected if n in {"job12", "job15", "job18", "job21"}]


def test_rows_added_while_paging_shift_nothing(store: SqlStore) -> None:
    """Newest first, as List* answer by default: rows created after the walk began sort before its
    cursor and are not seen; every row that was there is seen exactly once."""
    for i in range(12):
        store.create_resource(_res(f"old{i:02d}", minutes=i))
    first = store.list_resources("training-job", limit=5)
    for i in range(3):
        store.create_resource(_res(f"new{i}", minutes=100 + i))
    seen = [r.name for r in first]
    after = (first[-1].created_at, first[-1].name)
    while page := store.list_resources("training-job", after=after, limit=5):
        seen += [r.name for r in page]
        after = (page[-1].created_at, page[-1].name)
    assert seen == [f"old{i:02d}" for i in range(11, -1, -1)]


def test_access_keys_are_encrypted_at_rest(store: SqlStore, db_url: str) -> None:
    ident = bootstrap(store)
    key = create_access_key(store, ident.account_id, "t")
    assert store.get_access_key(key.access_key_id) == key
    with store.engine.connect() as conn:
        raw = conn.execute(text("SELECT secret_encrypted FROM access_keys")).scalar_one()
    assert key.secret_access_key.encode() not in bytes(raw)
    store.delete_access_key(key.access_key_id)
    assert store.get_access_key(key.access_key_id) is None


def test_bootstrap_is_idempotent_and_survives_reopen(db_url: str, tmp_path: Path) -> None:
    first = open_store(db_url, tmp_path / "master.key")
    ident = bootstrap(first)
    first.close()
    second = open_store(db_url, tmp_path / "master.key")
    try:
        assert bootstrap(second) == ident
    finally:
        second.close()


def test_wrong_master_key_is_reported(db_url: str, tmp_path: Path) -> None:
    first = open_store(db_url, tmp_path / "master.key")
    create_access_key(first, bootstrap(first).account_id)
    first.close()
    other = open_store(db_url, tmp_path / "other.key")
    try:
        with pytest.raises(StoreError, match="master.key"):
            other.list_access_keys()
    finally:
        other.close()


def test_foreign_database_is_refused(db_url: str, tmp_path: Path) -> None:
    engine = create_engine(db_url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE customers (id INTEGER PRIMARY KEY)"))
    engine.dispose()
    with pytest.raises(StoreError, match="not OpenSage's"):
        open_store(db_url, tmp_path / "master.key")


def test_corrupt_sqlite_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "opensage.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="Cannot open the database"):
        open_store(f"sqlite:///{path}", tmp_path / "master.key")
    assert path.read_bytes() == b"this is not a database" * 100


def test_resources_are_counted_by_status_in_sql(store: SqlStore) -> None:
    parent = "arn:aws:sagemaker:us-east-1:000000000000:labeling-job/j"
    for i, status in enumerate(["pending", "pending", "human", "held"]):
        item = Resource("labeling-item", f"j/{i}", f"arn:item-{i}", status, NOW, NOW, {}, parent_arn=parent)
        store.create_resource(item)
    store.create_resource(Resource("labeling-item", "other/0", "arn:other", "pending", NOW, NOW, {}))
    assert store.count_resources("labeling-item", parent_arn=parent) == {"pending": 2, "human": 1, "held": 1}
    assert store.count_resources("labeling-item") == {"pending": 3, "human": 1, "held": 1}
    assert store.count_resources("training-job") == {}
