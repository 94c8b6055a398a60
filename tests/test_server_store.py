"""The persistent model registry (``routerl.server.store``) and the proto conversions."""

from __future__ import annotations

import math
import sqlite3

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from routerl.descriptors.model import DescriptorError, Endpoint, ModelDescriptor
from routerl.server.convert import apply_update_mask, descriptor_from_proto, descriptor_to_proto
from routerl.server.proto import router_pb2 as pb
from routerl.server.store import ModelChangedError, ModelExistsError, ModelNotFoundError, ModelStore, StoreError, descriptor_etag


def model(model_id: str, price: float = 1.0, **kw) -> ModelDescriptor:
    return ModelDescriptor(id=model_id, input_price_per_mtok=price, output_price_per_mtok=2 * price, **kw)


CATALOG = [model("a", sample_scores={"math": 0.5}, sample_counts={"math": 10}), model("b", 0.1)]


def test_new_db_is_seeded_once_and_keeps_changes_across_reopen(tmp_path):
    db = tmp_path / "r.db"
    with ModelStore(db, CATALOG) as store:
        assert store.seeded and store.version == 1
        assert [m.id for m in store.list()] == ["a", "b"]
        assert store.add(model("c")) == 2
        assert store.remove("a") == 3
    calls = []
    with ModelStore(db, lambda: calls.append(1) or [model("zzz")]) as store:
        assert not store.seeded and not calls, "an existing registry is never re-seeded"
        assert [m.id for m in store.list()] == ["b", "c"]
        assert store.version == 3
        assert store.get("b") == CATALOG[1]


def test_writes_bump_version_and_errors_change_nothing(tmp_path):
    store = ModelStore(tmp_path / "r.db", CATALOG)
    with pytest.raises(ModelExistsError):
        store.add(model("a", 9.0))
    with pytest.raises(ModelNotFoundError):
        store.update(model("nope"))
    with pytest.raises(ModelNotFoundError):
        store.remove("nope")
    assert store.version == 1 and store.get("a") == CATALOG[0]
    v = store.update(model("a", 3.0))
    assert v == 2 and store.get("a").input_price_per_mtok == 3.0
    assert [m.id for m in store.list()] == ["a", "b"], "an update keeps the model's place"


def test_durability_settings(tmp_path):
    store = ModelStore(tmp_path / "r.db")
    assert store._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert not store._db.in_transaction


def test_failed_seed_leaves_no_registry(tmp_path):
    db = tmp_path / "r.db"

    def broken():
        raise ValueError("catalog is broken")

    with pytest.raises(ValueError, match="broken"):
        ModelStore(db, broken)
    with ModelStore(db, CATALOG) as store:  # the next start seeds it properly
        assert store.seeded and len(store.list()) == 2


def test_other_connection_writes_are_seen(tmp_path):
    db = tmp_path / "r.db"
    one, two = ModelStore(db, CATALOG), ModelStore(db)
    two.add(model("from-two"))
    assert one.get("from-two").id == "from-two" and one.version == 2


def test_modify_reads_the_file_and_checks_the_etag(tmp_path):
    """Read-modify-write in one transaction, on what the file holds now (another process may have
    written it since this store's snapshot); a stale etag or a failing change writes nothing."""
    db = tmp_path / "r.db"
    one, two = ModelStore(db, CATALOG), ModelStore(db)
    etag = descriptor_etag(one.get("a"))
    assert one.get("a") == two.get("a")
    two.update(model("a", 7.0, sample_scores={"math": 0.5}, sample_counts={"math": 10}))  # another process
    with pytest.raises(ModelChangedError, match="changed since it was read"):
        one.modify("a", lambda d: d.with_changes(output_price_per_mtok=1.0), etag)
    assert one.get("a").input_price_per_mtok == 7.0 and one.version == 2
    stored, version = one.modify("a", lambda d: d.with_changes(output_price_per_mtok=1.0))
    assert version == 3 and (stored.input_price_per_mtok, stored.output_price_per_mtok) == (7.0, 1.0)  # both kept
    assert descriptor_etag(stored) != etag and descriptor_etag(stored) == descriptor_etag(two.get("a"))
    with pytest.raises(ModelNotFoundError):
        one.modify("nope", lambda d: d)
    with pytest.raises(DescriptorError, match="rename"):
        one.modify("a", lambda d: d.with_changes(id="renamed"))
    with pytest.raises(DescriptorError):
        one.modify("a", lambda d: model("a", -1.0))
    assert one.version == 3 and one.get("a") == stored


class _CommitDuringReload:
    """A connection wrapper that lets another process commit in the middle of a snapshot reload."""

    def __init__(self, db, hook):
        self.db, self.hook = db, hook

    def execute(self, sql, *args):
        if self.hook is not None and sql.startswith("SELECT value FROM meta WHERE key = 'version'"):
            hook, self.hook = self.hook, None
            hook()
        return self.db.execute(sql, *args)

    def __getattr__(self, name):
        return getattr(self.db, name)


def test_a_commit_during_a_reload_is_seen_on_the_next_read(tmp_path):
    """A snapshot is one consistent read: rows, version and data_version from the same state, so a
    commit by another process during the reload shows on the next read (it used to be missed
    until some later write: a removed model served for hours)."""
    db = tmp_path / "r.db"
    a, b = ModelStore(db, [model("m")]), ModelStore(db)
    a.add(model("n"))
    a._rdb = _CommitDuringReload(a._rdb, lambda: b.remove("m"))
    first = a.snapshot()
    assert (first.version, [m.id for m in first.models]) == (2, ["m", "n"])  # the file as the read began
    after = a.snapshot()
    assert (after.version, [m.id for m in after.models]) == (3, ["n"])


def test_a_write_waiting_for_the_file_lock_does_not_block_reads(tmp_path):
    """Another process holds the write lock: a write waits for it (busy timeout), and snapshots
    (every Route) go on meanwhile."""
    import threading
    import time

    db = tmp_path / "r.db"
    store = ModelStore(db, CATALOG)
    other = sqlite3.connect(db, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    done = []
    writer = threading.Thread(target=lambda: done.append(store.add(model("c"))))
    writer.start()
    time.sleep(0.2)
    assert not done, "the write waits for the lock"
    started = time.monotonic()
    assert [m.id for m in store.snapshot().models] == ["a", "b"]
    assert time.monotonic() - started < 1.0
    other.execute("ROLLBACK")
    writer.join(10)
    assert done == [2] and [m.id for m in store.snapshot().models] == ["a", "b", "c"]
    other.close()


def test_a_registry_path_under_a_file_is_one_clear_error(tmp_path):
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(StoreError, match="cannot create its directory"):
        ModelStore(tmp_path / "a-file" / "r.db")


def test_foreign_sqlite_file_is_refused(tmp_path):
    db = tmp_path / "other.db"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE t (x)")
    con.commit()
    con.close()
    with pytest.raises(StoreError, match="not a routerl model registry"):
        ModelStore(db)
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "delete", "a refused file is left as it was"
    con.close()
    assert not (tmp_path / "other.db-wal").exists()
    (tmp_path / "junk.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError):
        ModelStore(tmp_path / "junk.db")


@pytest.mark.parametrize("schema_version, error", [("99", "newer than this routerl"), ("x", "not a routerl model registry")])
def test_registry_of_another_schema_is_refused_unchanged(tmp_path, schema_version, error):
    db = tmp_path / "r.db"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    con.execute("INSERT INTO meta VALUES ('schema_version', ?)", (schema_version,))
    con.commit()
    con.close()
    with pytest.raises(StoreError, match=error):
        ModelStore(db)
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    con.close()


def test_unknown_id_errors_repeat_an_overlong_id_shortened():
    store = ModelStore(":memory:", CATALOG)
    with pytest.raises(ModelNotFoundError) as err:
        store.remove("x" * 20_000)
    assert str(err.value) == f"model {'x' * 80 + '...'!r} is not registered"
    assert err.value.model_id == "x" * 20_000


def test_invalid_stored_row_is_kept_but_not_served(tmp_path, caplog):
    db = tmp_path / "r.db"
    ModelStore(db, CATALOG).close()
    con = sqlite3.connect(db)
    con.execute("UPDATE models SET descriptor = '{\"id\": \"a\"}' WHERE id = 'a'")
    con.commit()
    con.close()
    store = ModelStore(db)
    assert [m.id for m in store.list()] == ["b"]
    assert "not served" in caplog.text
    assert store._db.execute("SELECT COUNT(*) FROM models").fetchone()[0] == 2


# -- conversions ---------------------------------------------------------------------------------
scores = st.dictionaries(st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=8).filter(str.strip),
                         st.floats(0, 1), max_size=4)


@st.composite
def descriptors(draw):
    sample_scores = draw(scores)
    counts = {d: draw(st.integers(0, 1000)) for d in sample_scores if draw(st.booleans())}
    endpoint = draw(st.none() | st.builds(Endpoint, st.text(max_size=10), st.text(max_size=10), st.text(max_size=10)))
    return ModelDescriptor(
        id=draw(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:@/+\-]{0,20}", fullmatch=True)),
        input_price_per_mtok=draw(st.floats(0, 10_000)),
        output_price_per_mtok=draw(st.floats(0, 10_000)),
        latency_ms=draw(st.floats(0, 1e6)),
        context_window=draw(st.integers(0, 100_000_000)),
        sample_scores=sample_scores,
        sample_counts=counts,
        probe_results=draw(scores),
        mean_output_tokens=draw(st.floats(0, 1e5)),
        description=draw(st.text(max_size=30)),
        tags=tuple(draw(st.lists(st.text(min_size=1, max_size=8).filter(str.strip), max_size=3))),
        endpoint=endpoint,
    )


@settings(max_examples=60, deadline=None)
@given(descriptors())
def test_descriptor_proto_round_trip(desc):
    msg = pb.ModelDescriptor.FromString(descriptor_to_proto(desc).SerializeToString())
    assert descriptor_from_proto(msg) == desc


@settings(max_examples=30, deadline=None)
@given(descriptors())
def test_store_round_trip(desc):
    store = ModelStore(":memory:")
    store.add(desc)
    assert store.get(desc.id) == desc


@pytest.mark.parametrize(
    "change, field",
    [
        ({"input_price_per_mtok": math.nan}, "model.input_price_per_mtok"),
        ({"output_price_per_mtok": -1.0}, "model.output_price_per_mtok"),
        ({"context_window": -5}, "model.context_window"),
        ({"id": ""}, "model.id"),
        ({"id": "has space"}, "model.id"),
        ({"sample_scores": {"math": 1.5}}, "model.sample_scores.math"),
    ],
)
def test_invalid_proto_descriptor_names_the_field(change, field):
    msg = descriptor_to_proto(model("ok"))
    for key, value in change.items():
        if isinstance(value, dict):
            getattr(msg, key).update(value)
        else:
            setattr(msg, key, value)
    with pytest.raises(DescriptorError) as info:
        descriptor_from_proto(msg, prefix="model")
    assert info.value.field == field


def test_update_mask():
    current = model("a", sample_scores={"math": 0.5, "code": 0.4}, sample_counts={"math": 10, "code": 5}, tags=("x",))
    msg = pb.ModelDescriptor(id="a", input_price_per_mtok=7.0, sample_scores={"math": 0.9})
    out = apply_update_mask(current, msg, ["input_price_per_mtok", "sample_scores"])
    assert out.input_price_per_mtok == 7.0 and out.output_price_per_mtok == 2.0 and out.tags == ("x",)
    assert out.sample_scores == {"math": 0.9} and out.sample_counts == {"math": 10}
    with pytest.raises(DescriptorError) as info:
        apply_update_mask(current, msg, ["id"])
    assert info.value.field == "update_mask"
