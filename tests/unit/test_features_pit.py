"""The point-in-time join against a brute-force reference, on seeded random tables and on named cases."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import pandas as pd
import pytest

from cl_hpc.errors import DataError
from cl_hpc.features.pit import point_in_time

T0 = pd.Timestamp("2026-01-01T00:00:00")
US = pd.Timedelta(1, "us")
FEATURES = ["amount", "count", "flag"]
EVENT, CREATED, BATCH = "_event_ts", "_created_ts", "_batch"


def reference(queries: pd.DataFrame, table: pd.DataFrame, *, entities: list[str], timestamp: str,
              features: list[str], ttl: Optional[pd.Timedelta]) -> dict[str, list[Any]]:
    """One query at a time: the visible rows of its entity, sorted by the rule's keys, the last one."""
    ordered = table.assign(_pos=np.arange(len(table)))
    out: dict[str, list[Any]] = {name: [] for name in [*features, EVENT]}
    for _, query in queries.iterrows():
        t = query[timestamp]
        same = np.logical_and.reduce([ordered[e].to_numpy() == query[e] for e in entities])
        visible = ordered[same & (ordered[CREATED] <= t).to_numpy()]
        best = visible.sort_values([EVENT, CREATED, BATCH, "_pos"]).iloc[-1] if len(visible) else None
        if best is not None and ttl is not None and t - best[EVENT] > ttl:
            best = None  # expired: missing, never an older value
        for name in out:
            out[name].append(None if best is None else best[name])
    return out


def plain(values: Any) -> list[Any]:
    return [None if pd.isna(v) else v for v in values]


def assert_matches(got: pd.DataFrame, want: dict[str, list[Any]], queries: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(got[list(queries.columns)], queries)  # rows, order, index, columns kept
    assert list(got.columns) == [*queries.columns, *want]
    for name, values in want.items():
        assert plain(got[name]) == plain(values), name


def random_table(rng: np.random.Generator, entities: list[str], rows: int) -> pd.DataFrame:
    """Few entities and coarse hour grids, so that equal event times, equal created times, recomputations
    of one event time in later batches, late data and backfills all happen often."""
    keys = {e: rng.integers(0, 6 if len(entities) == 1 else 3, rows) for e in entities}
    if len(entities) == 2:
        keys[entities[1]] = np.array(["m0", "m1", "m2"])[keys[entities[1]]]  # string keys too
    event = T0 + pd.to_timedelta(rng.integers(0, 24, rows), unit="h")
    kind = rng.choice(["on_time", "late", "backfill"], rows, p=[0.6, 0.25, 0.15])
    lag = np.select([kind == "late", kind == "backfill"], [rng.integers(1, 3, rows), rng.integers(24, 72, rows)], 0)
    table = pd.DataFrame({**keys, EVENT: event, CREATED: event + pd.to_timedelta(lag, unit="h"),
                          BATCH: rng.integers(0, 3, rows), "amount": rng.normal(size=rows),
                          "count": rng.integers(-10**18, 10**18, rows), "flag": rng.random(rows) < 0.5})
    table.loc[rng.random(rows) < 0.1, "amount"] = np.nan  # a row's own missing value is its value
    twins = table.sample(frac=0.2, random_state=int(rng.integers(1 << 31)))  # same keys, times, batch: table order
    table = pd.concat([table, twins.assign(amount=rng.normal(size=len(twins)))], ignore_index=True)
    table[[EVENT, CREATED]] = table[[EVENT, CREATED]].astype("datetime64[us]")
    return table.sample(frac=1.0, random_state=int(rng.integers(1 << 31))).reset_index(drop=True)


def random_queries(rng: np.random.Generator, table: pd.DataFrame, entities: list[str], count: int,
                   ttl: Optional[pd.Timedelta]) -> pd.DataFrame:
    """Queries at random times, at exactly a row's _created_ts, at the TTL edge and 1 us past it, before
    any data, and for unknown entities; shuffled, with an index that is not 0..n-1."""
    rows = table.iloc[rng.integers(0, len(table), count)].reset_index(drop=True)
    age = ttl if ttl is not None else pd.Timedelta(hours=5)
    times = {"random": T0 + pd.to_timedelta(rng.integers(-3 * 3600, 100 * 3600, count), unit="s"),
             "created": rows[CREATED], "ttl_edge": rows[EVENT] + age, "past_edge": rows[EVENT] + age + US,
             "before": pd.Series(T0 - pd.Timedelta(hours=1), index=rows.index)}
    pick = rng.choice(list(times), count)
    at = pd.Series([times[p][i] for i, p in enumerate(pick)], dtype="datetime64[ns]")
    queries = rows[entities].copy()
    queries.loc[rng.random(count) < 0.05, entities[0]] = 99  # an entity the table never saw
    queries["at"], queries["label"] = at, rng.integers(0, 2, count)
    queries.index = rng.permutation(np.arange(1000, 1000 + 3 * count, 3))
    return queries


@pytest.mark.parametrize("seed", range(40))
def test_matches_the_brute_force_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    entities = ["user_id"] if seed % 2 else ["user_id", "merchant_id"]
    ttl = [None, pd.Timedelta(hours=3), pd.Timedelta(hours=26), pd.Timedelta(0)][seed % 4]
    table = random_table(rng, entities, rows=int(rng.integers(50, 300)))
    queries = random_queries(rng, table, entities, count=150, ttl=ttl)
    got = point_in_time(queries, table, entities=entities, timestamp="at", features=FEATURES, ttl=ttl)
    assert_matches(got, reference(queries, table, entities=entities, timestamp="at", features=FEATURES, ttl=ttl),
                   queries)


def frame(*rows: tuple[int, str, str, int, float], feature: str = "amount") -> pd.DataFrame:
    """Offline rows (user_id, event offset, created offset, batch, value) from T0."""
    return pd.DataFrame([{"user_id": u, EVENT: T0 + pd.Timedelta(e), CREATED: T0 + pd.Timedelta(c),
                          BATCH: b, feature: v} for u, e, c, b, v in rows]).astype({EVENT: "datetime64[us]",
                                                                                    CREATED: "datetime64[us]"})


def ask(table: pd.DataFrame, *offsets: str, ttl: Optional[str] = None, user: int = 1,
        feature: str = "amount") -> pd.DataFrame:
    queries = pd.DataFrame({"user_id": user, "at": [T0 + pd.Timedelta(o) for o in offsets]})
    return point_in_time(queries, table, entities=["user_id"], timestamp="at", features=[feature],
                         ttl=None if ttl is None else pd.Timedelta(ttl))


def test_a_backfill_is_invisible_before_it_was_written() -> None:
    """Feast's created_timestamp only breaks ties, so a value backfilled on day 10 for day 1 leaks into a
    training row of day 5. Here it appears from day 10 on, not before."""
    table = frame((1, "0D", "0D", 0, 1.0), (1, "0D", "10D", 1, 2.0), (1, "3D", "10D", 1, 3.0))
    got = ask(table, "5D", "10D", "10D 1h")
    assert got["amount"].tolist() == [1.0, 3.0, 3.0]
    assert got[EVENT].tolist() == [T0, T0 + pd.Timedelta("3D"), T0 + pd.Timedelta("3D")]


def test_late_data_counts_from_its_created_time_at_the_microsecond() -> None:
    table = frame((1, "1h", "1h", 0, 1.0), (1, "2h", "5h", 0, 2.0))
    got = ask(table, "4h", "5h", "5h")
    assert got["amount"].tolist() == [1.0, 2.0, 2.0]
    sub = pd.DataFrame({"user_id": 1, "at": pd.to_datetime([T0 + pd.Timedelta("5h") - pd.Timedelta(500, "ns"),
                                                            T0 + pd.Timedelta("5h") + pd.Timedelta(500, "ns")])})
    got = point_in_time(sub.astype({"at": "datetime64[ns]"}), table, entities=["user_id"], timestamp="at",
                        features=["amount"], ttl=None)
    assert got["amount"].tolist() == [1.0, 2.0]  # 500 ns before the row was written, and 500 ns after


def test_expired_is_missing_not_stale() -> None:
    table = frame((1, "0h", "0h", 0, 1.0), (1, "2h", "2h", 0, 2.0))
    got = ask(table, "3h", "4h", "4h 1us", "9h", ttl="2h")
    assert plain(got["amount"]) == [2.0, 2.0, None, None]  # never the older 1.0
    assert plain(got[EVENT]) == [T0 + pd.Timedelta("2h"), T0 + pd.Timedelta("2h"), None, None]
    edge = T0 + pd.Timedelta("4h")  # nanosecond queries: 500 ns past the TTL is past it
    ns = pd.DataFrame({"user_id": 1, "at": pd.Series([edge, edge + pd.Timedelta(500, "ns")], dtype="datetime64[ns]")})
    got = point_in_time(ns, table, entities=["user_id"], timestamp="at", features=["amount"], ttl=pd.Timedelta("2h"))
    assert plain(got["amount"]) == [2.0, None]


def test_ties_go_to_created_then_batch_then_table_order() -> None:
    table = frame((1, "1h", "3h", 0, 1.0), (1, "1h", "2h", 5, 2.0),  # later created beats higher batch
                  (2, "1h", "1h", 2, 3.0), (2, "1h", "1h", 1, 4.0),  # higher batch beats table order
                  (3, "1h", "1h", 1, 5.0), (3, "1h", "1h", 1, 6.0))  # then the last row
    assert [ask(table, "4h", user=u)["amount"][0] for u in (1, 2, 3)] == [1.0, 3.0, 6.0]


def test_no_visible_row_is_missing_and_an_empty_table_answers_every_query() -> None:
    table = frame((1, "1h", "1h", 0, 1.0))
    assert plain(ask(table, "0h", "1h")["amount"]) == [None, 1.0]
    assert plain(ask(table, "5h", user=7)[EVENT]) == [None]
    empty = point_in_time(pd.DataFrame({"user_id": [1], "at": [T0]}), table.iloc[:0], entities=["user_id"],
                          timestamp="at", features=["amount"], ttl=None)
    assert plain(empty["amount"]) == [None] and empty[EVENT].dtype == table[EVENT].dtype


def test_int_and_bool_features_become_nullable_only_when_a_value_is_missing() -> None:
    big = 2**62 + 1  # float64 would round it
    table = frame((1, "1h", "1h", 0, big), feature="count").assign(flag=True)
    found = point_in_time(pd.DataFrame({"user_id": [1], "at": [T0 + pd.Timedelta("2h")]}), table,
                          entities=["user_id"], timestamp="at", features=["count", "flag"], ttl=None)
    assert (found["count"].dtype, found["flag"].dtype) == (np.dtype("int64"), np.dtype("bool"))
    both = point_in_time(pd.DataFrame({"user_id": [1, 1], "at": [T0, T0 + pd.Timedelta("2h")]}), table,
                         entities=["user_id"], timestamp="at", features=["count", "flag"], ttl=None)
    assert (both["count"].dtype, both["flag"].dtype) == (pd.Int64Dtype(), pd.BooleanDtype())
    assert plain(both["count"]) == [None, big] and plain(both["flag"]) == [None, True]


def test_tz_aware_and_narrow_int_queries_are_converted() -> None:
    table = frame((1, "1h", "1h", 0, 1.0), (1, "3h", "3h", 0, 2.0))
    naive = pd.DataFrame({"user_id": np.array([1, 1], dtype=np.int32), "at": [T0 + pd.Timedelta("2h")] * 2})
    aware = naive.assign(at=naive["at"].dt.tz_localize("UTC").dt.tz_convert("Europe/Paris"))
    for queries in (naive, aware):
        got = point_in_time(queries, table, entities=["user_id"], timestamp="at", features=["amount"], ttl=None)
        assert got["amount"].tolist() == [1.0, 1.0] and got["at"].equals(queries["at"])


@pytest.mark.parametrize(("queries", "match"), [
    (pd.DataFrame({"user_id": [1, 1], "at": [T0, pd.NaT]}, index=[7, 8]), r"NaT\) in row 8"),
    (pd.DataFrame({"user_id": [1], "at": ["2026-01-01"]}), "not datetime64; convert it with pd.to_datetime"),
    (pd.DataFrame({"user_id": ["1"], "at": [T0]}), r"'user_id' is .* in the queries but int64 in the offline"),
    (pd.DataFrame({"user_id": [1.0], "at": [T0]}), "integers of any width, or strings"),
    (pd.DataFrame({"user_id": pd.array([1, None], dtype="Int64"), "at": [T0, T0]}), "query row 1 has no value"),
    (pd.DataFrame({"user": [1], "at": [T0]}), r"queries lack the column\(s\) \['user_id'\]"),
    (pd.DataFrame({"user_id": [1], "at": [T0], "amount": [0.0]}), "already have the column"),
])
def test_bad_queries_are_refused_with_what_is_valid(queries: pd.DataFrame, match: str) -> None:
    with pytest.raises(DataError, match=match):
        point_in_time(queries, frame((1, "1h", "1h", 0, 1.0)), entities=["user_id"], timestamp="at",
                      features=["amount"], ttl=None)


def test_bad_tables_are_refused() -> None:
    queries = pd.DataFrame({"user_id": [1], "at": [T0]})
    early = frame((1, "2h", "1h", 0, 1.0))  # created before its event time: it would leak the future
    with pytest.raises(DataError, match="created before its event time"):
        point_in_time(queries, early, entities=["user_id"], timestamp="at", features=["amount"], ttl=None)
    with pytest.raises(DataError, match=r"offline table lacks the column\(s\) \['_batch'\]"):
        point_in_time(queries, early.drop(columns=BATCH), entities=["user_id"], timestamp="at",
                      features=["amount"], ttl=None)
    with pytest.raises(DataError, match="ttl -1 days"):
        point_in_time(queries, early, entities=["user_id"], timestamp="at", features=["amount"],
                      ttl=pd.Timedelta("-1D"))


def test_string_and_nullable_keys_join_and_a_missing_table_key_never_does() -> None:
    """(b, 3): a pair whose second value no query has must not be coded as another query's pair."""
    table = pd.DataFrame({"shop": ["a", "a", None, "b"], "user_id": pd.array([1, None, 2, 3], dtype="Int64"),
                          EVENT: [T0] * 4, CREATED: [T0] * 4, BATCH: 0, "amount": [1.0, 2.0, 3.0, 4.0]})
    table = table.astype({EVENT: "datetime64[us]", CREATED: "datetime64[us]"})
    queries = pd.DataFrame({"shop": np.array(["a", "a", "b"], dtype=object),
                            "user_id": np.array([1, 2, 2], dtype=np.uint32), "at": [T0] * 3})
    got = point_in_time(queries, table, entities=["shop", "user_id"], timestamp="at", features=["amount"], ttl=None)
    assert plain(got["amount"]) == [1.0, None, None]
