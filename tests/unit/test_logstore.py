"""LogStore: groups, streams, event order, GetLogEvents tokens, filters, concurrency, persistence."""

from __future__ import annotations

import datetime as dt
import threading
from pathlib import Path

import pytest

from opensage.errors import AlreadyExists
from opensage.logfiles import GroupNotFound, InvalidRequest, StreamNotFound, compile_filter_pattern
from opensage.logstore import LogStore

T0 = 1_700_000_000_000
G = "/aws/sagemaker/TrainingJobs"


class Clock:
    def __init__(self) -> None:
        self.now = dt.datetime.fromtimestamp(T0 / 1000, dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now

    def tick(self, ms: int) -> None:
        self.now += dt.timedelta(milliseconds=ms)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path: Path, clock: Clock) -> LogStore:
    return LogStore(tmp_path / "cw", clock)


def fill(store: LogStore, stream: str, n: int, group: str = G, t0: int = T0, prefix: str = "line") -> None:
    store.put_events(group, stream, [(t0 + i, f"{prefix} {i}") for i in range(n)])


def messages(page: object) -> list[str]:
    return [e.message for e in page.events]  # type: ignore[attr-defined]


# --- groups and streams ----------------------------------------------------------------------


def test_group_lifecycle(store: LogStore) -> None:
    store.create_group("/b")
    store.create_group("/a/x", tags={"k": "v"})
    with pytest.raises(AlreadyExists):
        store.create_group("/b")
    store.create_group("/b", exist_ok=True)
    assert [g.name for g in store.list_groups()] == ["/a/x", "/b"]
    assert [g.name for g in store.list_groups("/a")] == ["/a/x"]
    assert store.list_groups("/a")[0].tags == {"k": "v"}
    store.delete_group("/b")
    with pytest.raises(GroupNotFound):
        store.delete_group("/b")
    assert [g.name for g in store.list_groups()] == ["/a/x"]
    assert not [p for p in store.root.iterdir() if p.name.startswith(".deleted")]


def test_stream_lifecycle(store: LogStore) -> None:
    with pytest.raises(GroupNotFound):
        store.create_stream("/nope", "s")
    store.create_group("/g")
    store.create_stream("/g", "s")
    with pytest.raises(AlreadyExists):
        store.create_stream("/g", "s")
    store.create_stream("/g", "s", exist_ok=True)
    store.create_stream("/auto", "s", exist_ok=True)  # the platform's mode creates the group too
    assert [g.name for g in store.list_groups()] == ["/auto", "/g"]
    with pytest.raises(StreamNotFound):
        store.get_events("/g", "other")
    with pytest.raises(GroupNotFound):
        store.list_streams("/nope")
    store.delete_stream("/g", "s")
    assert store.list_streams("/g") == []


def test_put_events_creates_unless_told_not_to(store: LogStore) -> None:
    with pytest.raises(GroupNotFound):
        store.put_events("/g", "s", [(T0, "x")], create=False)
    store.create_group("/g")
    with pytest.raises(StreamNotFound):
        store.put_events("/g", "s", [(T0, "x")], create=False)
    store.put_events("/g", "s", [(T0, "x")])
    assert messages(store.get_events("/g", "s")) == ["x"]


def test_list_streams_order_and_stats(store: LogStore, clock: Clock) -> None:
    store.create_stream(G, "job/algo-2", exist_ok=True)
    clock.tick(5)
    store.put_events(G, "job/algo-1", [(T0 + 50, "a"), (T0 + 60, "bb")])
    clock.tick(5)
    store.put_events(G, "job/algo-1", [(T0 + 10, "c")])  # out of order: first/last are min/max
    store.put_events(G, "other/algo-1", [(T0 + 99, "z")])
    names = [s.name for s in store.list_streams(G)]
    assert names == ["job/algo-1", "job/algo-2", "other/algo-1"]
    assert [s.name for s in store.list_streams(G, prefix="job/", descending=True)] == ["job/algo-2", "job/algo-1"]
    by_time = [s.name for s in store.list_streams(G, order_by="LastEventTime", descending=True)]
    assert by_time == ["other/algo-1", "job/algo-1", "job/algo-2"]
    s1 = store.list_streams(G, prefix="job/algo-1")[0]
    assert (s1.first_event_timestamp, s1.last_event_timestamp, s1.last_ingestion_time) == (T0 + 10, T0 + 60, T0 + 10)
    assert s1.creation_time == T0 + 5
    assert s1.stored_bytes > 0
    empty = store.list_streams(G, prefix="job/algo-2")[0]
    assert (empty.first_event_timestamp, empty.stored_bytes, empty.creation_time) == (None, 0, T0)


def test_names_are_stored_safely(tmp_path: Path, store: LogStore) -> None:
    names = [".", "..", "a/b/../c", "~x", "%41", "x" * 512, "ünï cödé #1"]
    for name in names:
        store.put_events("/g", name, [(T0, name)])
    assert sorted(p.name for p in (store.root).iterdir()) == ["%2Fg"]
    again = LogStore(store.root)
    assert sorted(s.name for s in again.list_streams("/g")) == sorted(names)
    for name in names:
        assert messages(again.get_events("/g", name)) == [name]


# --- GetLogEvents ------------------------------------------------------------------------------


def test_from_head_pages_forward_and_stops_on_the_same_token(store: LogStore) -> None:
    fill(store, "s", 25)
    seen: list[str] = []
    page = store.get_events(G, "s", start_from_head=True, limit=10)
    while page.events:
        seen += messages(page)
        token = page.next_forward_token
        page = store.get_events(G, "s", start_from_head=True, limit=10, token=token)
    assert seen == [f"line {i}" for i in range(25)]
    assert page.next_forward_token == token  # nothing new: the same token back
    fill(store, "s", 2, t0=T0 + 100, prefix="new")
    page = store.get_events(G, "s", token=token)
    assert messages(page) == ["new 0", "new 1"]
    assert store.get_events(G, "s", token=page.next_forward_token).next_forward_token == page.next_forward_token


def test_without_token_reads_the_tail_and_pages_backward(store: LogStore) -> None:
    fill(store, "s", 25)
    page = store.get_events(G, "s", limit=10)
    assert messages(page) == [f"line {i}" for i in range(15, 25)]
    chunks = [messages(page)]
    while True:
        page = store.get_events(G, "s", limit=10, token=page.next_backward_token)
        if not page.events:
            break
        chunks.append(messages(page))
    assert [m for c in reversed(chunks) for m in c] == [f"line {i}" for i in range(25)]
    assert page.next_backward_token == "b/0"
    # a backward page's forward token reads on from just after it
    page = store.get_events(G, "s", limit=5, start_from_head=True)
    back = store.get_events(G, "s", token=page.next_backward_token)
    assert back.events == []
    tail = store.get_events(G, "s", limit=10)
    before = store.get_events(G, "s", limit=3, token=tail.next_backward_token)
    assert messages(before) == ["line 12", "line 13", "line 14"]
    fwd = store.get_events(G, "s", limit=2, token=before.next_forward_token)
    assert messages(fwd) == ["line 15", "line 16"]


def test_empty_stream_tokens(store: LogStore) -> None:
    store.create_stream(G, "s", exist_ok=True)
    head = store.get_events(G, "s", start_from_head=True)
    assert (head.events, head.next_forward_token, head.next_backward_token) == ([], "f/0", "b/0")
    tail = store.get_events(G, "s")
    assert (tail.events, tail.next_forward_token) == ([], "f/0")
    fill(store, "s", 1)
    assert messages(store.get_events(G, "s", token=tail.next_forward_token)) == ["line 0"]


def test_time_window(store: LogStore) -> None:
    fill(store, "s", 20)
    page = store.get_events(G, "s", start_time=T0 + 5, end_time=T0 + 8, start_from_head=True)
    assert messages(page) == ["line 5", "line 6", "line 7"]
    assert messages(store.get_events(G, "s", start_time=T0 + 18)) == ["line 18", "line 19"]
    assert messages(store.get_events(G, "s", end_time=T0 + 2)) == ["line 0", "line 1"]
    # the SDK passes startTime with its token: the window still applies
    first = store.get_events(G, "s", start_time=T0 + 15, start_from_head=True, limit=2)
    assert messages(first) == ["line 15", "line 16"]
    again = store.get_events(G, "s", start_time=T0 + 15, start_from_head=True, token=first.next_forward_token)
    assert messages(again) == ["line 17", "line 18", "line 19"]
    # a page cut short by endTime has still scanned to the end: its token does not rescan
    assert store.get_events(G, "s", start_from_head=True, token=page.next_forward_token).events == []


def test_index_skips_but_never_loses_events(store: LogStore) -> None:
    """Far more than one index interval, with some events out of order."""
    big = "x" * 300
    rows = [(T0 + i, f"{i} {big}") for i in range(2000)]
    rows[1500] = (T0 + 10, f"late {big}")  # an old timestamp written late
    for i in range(0, 2000, 100):
        store.put_events(G, "s", rows[i : i + 100])
    assert len(store._stream(G, "s").cp_off) > 5
    got = store.get_events(G, "s", start_time=T0 + 1990, start_from_head=True)
    assert [m.split()[0] for m in messages(got)] == [str(i) for i in range(1990, 2000)]
    late = store.get_events(G, "s", start_time=T0 + 10, end_time=T0 + 11, start_from_head=True)
    assert [m.split()[0] for m in messages(late)] == ["10", "late"]


def test_limits_by_count_and_bytes(store: LogStore) -> None:
    big = "y" * 200_000
    store.put_events(G, "s", [(T0 + i, big) for i in range(12)])
    page = store.get_events(G, "s", start_from_head=True)
    assert len(page.events) == 5  # 5 * (200000 + 26) <= 1 MiB < 6 * ...
    assert len(store.get_events(G, "s").events) == 5
    fill(store, "many", 10_050)
    assert len(store.get_events(G, "many", start_from_head=True).events) == 10_000
    assert len(store.get_events(G, "many", start_from_head=True, limit=20_000).events) == 10_000


def test_long_lines_and_odd_messages(store: LogStore) -> None:
    odd = ["a\nb", "tab\tend", "ünïcode ✓", '"quoted" \\ back', "z" * 200_000, "", "\u2028sep"]
    store.put_events(G, "s", [(T0 + i, m) for i, m in enumerate(odd)])
    assert messages(store.get_events(G, "s", start_from_head=True)) == odd
    assert messages(store.get_events(G, "s")) == odd
    back = store.get_events(G, "s", limit=2)
    assert messages(back) == odd[-2:]
    assert messages(store.get_events(G, "s", limit=3, token=back.next_backward_token)) == odd[2:5]


@pytest.mark.parametrize("token", ["x", "f/", "f/-1", "q/0", "f/999999", "f/3", "b/3"])
def test_invalid_tokens(store: LogStore, token: str) -> None:
    fill(store, "s", 3)
    with pytest.raises(InvalidRequest, match="nextToken is invalid"):
        store.get_events(G, "s", token=token)


# --- FilterLogEvents ---------------------------------------------------------------------------


def test_filter_interleaves_streams_by_timestamp(store: LogStore) -> None:
    store.put_events(G, "b", [(T0 + 1, "b1"), (T0 + 3, "b3")])
    store.put_events(G, "a", [(T0 + 2, "a2"), (T0 + 3, "a3"), (T0 + 5, "a5")])
    store.put_events(G, "c", [(T0 + 0, "c0")])
    page = store.filter_events(G)
    assert [e.message for e in page.events] == ["c0", "b1", "a2", "a3", "b3", "a5"]
    assert page.next_token is None
    assert sorted(page.searched) == [("a", True), ("b", True), ("c", True)]
    assert [e.message for e in store.filter_events(G, stream_names=["b", "c", "gone"]).events] == ["c0", "b1", "b3"]
    assert [e.message for e in store.filter_events(G, prefix="a").events] == ["a2", "a3", "a5"]
    window = store.filter_events(G, start_time=T0 + 2, end_time=T0 + 4)
    assert [e.message for e in window.events] == ["a2", "a3", "b3"]
    ids = [e.event_id for e in page.events]
    assert len(set(ids)) == len(ids)
    with pytest.raises(GroupNotFound):
        store.filter_events("/nope")


def test_filter_pages_return_every_match_once(store: LogStore) -> None:
    for s in ("x", "y", "z"):
        store.put_events(G, s, [(T0 + i * 3 + ord(s) % 3, f"{s} {'hit' if i % 2 else 'miss'} {i}") for i in range(40)])
    expected = [e.message for e in store.filter_events(G, pattern="hit").events]
    assert len(expected) == 60
    got: list[str] = []
    token = None
    pages = 0
    while True:
        page = store.filter_events(G, pattern="hit", limit=7, token=token)
        got += [e.message for e in page.events]
        pages += 1
        token = page.next_token
        if token is None:
            break
        assert page.events
    assert got == expected
    assert pages == 9  # 60 / 7 rounded up: no empty last page
    with pytest.raises(InvalidRequest):
        store.filter_events(G, pattern="miss", token=store.filter_events(G, pattern="hit", limit=1).next_token)
    with pytest.raises(InvalidRequest):
        store.filter_events(G, token="not-a-token")


@pytest.mark.parametrize(
    ("pattern", "hits"),
    [
        ("", ["ERROR disk full", "WARN disk slow", "INFO all good", "ERROR: net down"]),
        ("ERROR", ["ERROR disk full", "ERROR: net down"]),
        ("ERROR disk", ["ERROR disk full"]),
        ('"disk full"', ["ERROR disk full"]),
        ("?ERROR ?WARN", ["ERROR disk full", "WARN disk slow", "ERROR: net down"]),
        ("disk -ERROR", ["WARN disk slow"]),
        ("%(full|slow)$%", ["ERROR disk full", "WARN disk slow"]),
        ("error", []),  # case-sensitive, as AWS
    ],
)
def test_filter_patterns(pattern: str, hits: list[str]) -> None:
    lines = ["ERROR disk full", "WARN disk slow", "INFO all good", "ERROR: net down"]
    match = compile_filter_pattern(pattern)
    assert [line for line in lines if match(line)] == hits


@pytest.mark.parametrize("pattern", ['{ $.level = "ERROR" }', "[ip, user, status=404]", '"unclosed', "%(%"])
def test_unsupported_filter_patterns(pattern: str) -> None:
    with pytest.raises(InvalidRequest, match="filter pattern"):
        compile_filter_pattern(pattern)


# --- threads and restarts ----------------------------------------------------------------------


def test_concurrent_append_and_tail(store: LogStore) -> None:
    batches, per = 300, 7
    done = threading.Event()

    def writer(name: str) -> None:
        for b in range(batches):
            store.put_events(G, name, [(T0 + b, f"{name} {b}.{i}") for i in range(per)])

    def tail(name: str, out: list[str]) -> None:
        token = None
        while True:
            finished = done.is_set()
            try:
                page = store.get_events(G, name, start_from_head=True, token=token)
            except StreamNotFound:
                continue
            out += messages(page)
            token = page.next_forward_token
            if finished and not page.events:
                return

    seen: dict[str, list[str]] = {"w1": [], "w2": []}
    threads = [threading.Thread(target=writer, args=(n,)) for n in seen]
    readers = [threading.Thread(target=tail, args=(n, seen[n])) for n in seen]
    for t in threads + readers:
        t.start()
    for t in threads:
        t.join()
    done.set()
    for t in readers:
        t.join(30)
        assert not t.is_alive()
    for name, got in seen.items():
        assert got == [f"{name} {b}.{i}" for b in range(batches) for i in range(per)]
        assert store.list_streams(G, prefix=name)[0].stored_bytes == store._stream(G, name).path.stat().st_size


def test_persistence_across_instances(tmp_path: Path, clock: Clock) -> None:
    first = LogStore(tmp_path / "cw", clock)
    first.create_group("/empty", tags={"a": "b"})
    fill(first, "s", 10)
    page = first.get_events(G, "s", start_from_head=True, limit=4)
    stats = first.list_streams(G)

    second = LogStore(tmp_path / "cw", clock)
    assert [g.name for g in second.list_groups()] == ["/aws/sagemaker/TrainingJobs", "/empty"]
    assert second.list_groups("/empty")[0].tags == {"a": "b"}
    assert second.list_streams(G) == stats
    assert messages(second.get_events(G, "s", token=page.next_forward_token)) == [f"line {i}" for i in range(4, 10)]
    fill(second, "s", 1, t0=T0 + 50, prefix="more")
    assert messages(LogStore(tmp_path / "cw").get_events(G, "s", limit=1)) == ["more 0"]


def test_torn_last_line_is_cut_on_load(tmp_path: Path) -> None:
    store = LogStore(tmp_path / "cw")
    fill(store, "s", 3)
    path = store._stream(G, "s").path
    with open(path, "ab") as f:
        f.write(b'[1700000000009,1700000000009,"half a li')  # a crash mid-write
    again = LogStore(tmp_path / "cw")
    fill(again, "s", 1, t0=T0 + 10, prefix="after")
    assert messages(again.get_events(G, "s", start_from_head=True)) == ["line 0", "line 1", "line 2", "after 0"]


def test_delete_group_while_writing(store: LogStore) -> None:
    fill(store, "s", 2)
    store.delete_group(G)
    fill(store, "s", 1, prefix="again")  # the platform's appends recreate it
    assert messages(store.get_events(G, "s")) == ["again 0"]
