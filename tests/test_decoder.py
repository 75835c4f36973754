"""The decoder on Alpaca's documented payloads (JSON and msgpack) and on malformed frames."""

from __future__ import annotations

import calendar
import json
import math

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.events import (
    FLAG_DAILY_BAR,
    FLAG_LAST_IN_BATCH,
    FLAG_RESET,
    FLAG_SNAPSHOT,
    FLAG_UPDATED_BAR,
    SIDE_ASK,
    SIDE_BID,
)
from engine.marketdata.decoder import (
    DROP_BAD_TIMESTAMP,
    DROP_INVALID_MESSAGE,
    DROP_MALFORMED_FRAME,
    DROP_MALFORMED_MESSAGE,
    DROP_UNKNOWN_SYMBOL,
    DROP_UNKNOWN_TYPE,
    Decoder,
)
from engine.marketdata.messages import StreamError, Subscription, Success
from engine.marketdata.symbols import SymbolMap
from engine.marketdata.timestamps import format_rfc3339, msgpack_timestamp_payload, parse_rfc3339


def ns(date_time: str, nanos: int = 0) -> int:
    """Expected epoch nanoseconds, computed without the code under test."""
    secs = calendar.timegm(__import__("time").strptime(date_time, "%Y-%m-%dT%H:%M:%S"))
    return secs * 1_000_000_000 + nanos


# Payloads as shown in Alpaca's market data stream documentation.
STOCK_TRADE = {"T": "t", "i": 96921, "S": "AAPL", "x": "D", "p": 126.55, "s": 1, "t": "2021-02-22T15:51:44.208Z", "c": ["@", "I"], "z": "C"}
STOCK_QUOTE = {"T": "q", "S": "AMD", "bx": "U", "bp": 87.66, "bs": 1, "ax": "Q", "ap": 87.68, "as": 4, "t": "2021-02-22T15:51:45.335689322Z", "c": ["R"], "z": "C"}
STOCK_BAR = {"T": "b", "S": "SPY", "o": 388.985, "h": 389.13, "l": 388.975, "c": 389.12, "v": 49378, "t": "2021-02-22T19:15:00Z", "n": 461, "vw": 389.062639}
CRYPTO_TRADE = {"T": "t", "S": "AVAX/USD", "p": 47.299, "s": 29.205707815, "t": "2023-03-15T10:38:39.637436256Z", "i": 31455289, "tks": "B"}
CRYPTO_QUOTE = {"T": "q", "S": "BAT/USD", "bp": 0.35718, "bs": 13445.46, "ap": 0.3581, "as": 13561.902, "t": "2023-03-15T10:40:29.512367015Z"}
CRYPTO_BOOK = {
    "T": "o", "S": "BTC/USD", "t": "2024-03-12T10:38:50.79613221Z",
    "b": [{"p": 71859.53, "s": 0.27994}, {"p": 71849.4, "s": 0.553986}],
    "a": [{"p": 71939.7, "s": 0.83953}],
    "r": True,
}
SUBSCRIPTION = {
    "T": "subscription", "trades": ["AAPL"], "quotes": ["AMD", "CLDR"], "bars": ["*"], "updatedBars": [],
    "dailyBars": ["VOO"], "statuses": ["*"], "lulds": [], "corrections": ["AAPL"], "cancelErrors": ["AAPL"],
}


def as_msgpack(messages: list[dict]) -> bytes:
    """Encode like Alpaca's msgpack stream: timestamps as msgpack Timestamp (ext -1), via the msgpack package."""
    out = []
    for m in messages:
        m = dict(m)
        if "t" in m:
            total = parse_rfc3339(m["t"])
            m["t"] = msgpack.Timestamp(total // 1_000_000_000, total % 1_000_000_000)
        out.append(m)
    return msgpack.packb(out)


def frames(messages: list[dict]) -> list[bytes | str]:
    return [json.dumps(messages), json.dumps(messages).encode(), as_msgpack(messages)]


@pytest.mark.parametrize("kind", ["json-text", "json-bytes", "msgpack"])
def test_stock_trade_quote_bar(kind):
    frame = frames([STOCK_TRADE, STOCK_QUOTE, STOCK_BAR])[["json-text", "json-bytes", "msgpack"].index(kind)]
    dec = Decoder()
    batch = dec.decode(frame, recv_ns=123)
    assert batch.drops == [] and batch.n_messages == 3
    (t,) = batch.trades
    assert dec.symbols.name(int(t["symbol_id"])) == "AAPL"
    assert t["ts_ns"] == ns("2021-02-22T15:51:44", 208_000_000) and t["recv_ns"] == 123
    assert (t["price"], t["size"], t["trade_id"]) == (126.55, 1.0, 96921)
    assert chr(t["exchange"]) == "D" and chr(t["tape"]) == "C"
    (q,) = batch.quotes
    assert dec.symbols.name(int(q["symbol_id"])) == "AMD"
    assert q["ts_ns"] == ns("2021-02-22T15:51:45", 335_689_322)
    assert (q["bid_price"], q["bid_size"], q["ask_price"], q["ask_size"]) == (87.66, 1.0, 87.68, 4.0)
    assert (chr(q["bid_exchange"]), chr(q["ask_exchange"]), chr(q["tape"])) == ("U", "Q", "C")
    (b,) = batch.bars
    assert dec.symbols.name(int(b["symbol_id"])) == "SPY" and b["ts_ns"] == ns("2021-02-22T19:15:00")
    assert (b["open"], b["high"], b["low"], b["close"], b["volume"], b["trade_count"], b["vwap"]) == (
        388.985, 389.13, 388.975, 389.12, 49378.0, 461, 389.062639,
    )
    assert b["flags"] == 0


@pytest.mark.parametrize("encode", [json.dumps, as_msgpack])
def test_updated_and_daily_bars_are_flagged(encode):
    batch = Decoder().decode(encode([STOCK_BAR, {**STOCK_BAR, "T": "u"}, {**STOCK_BAR, "T": "d"}]))
    assert list(batch.bars["flags"]) == [0, FLAG_UPDATED_BAR, FLAG_DAILY_BAR]


@pytest.mark.parametrize("encode", [json.dumps, as_msgpack])
def test_crypto_trade_quote_and_orderbook(encode):
    dec = Decoder()
    batch = dec.decode(encode([CRYPTO_TRADE, CRYPTO_QUOTE, CRYPTO_BOOK]))
    assert batch.drops == []
    (t,) = batch.trades
    assert t["ts_ns"] == ns("2023-03-15T10:38:39", 637_436_256)
    assert (t["price"], t["size"], t["trade_id"], t["exchange"], t["tape"]) == (47.299, 29.205707815, 31455289, 0, 0)
    (q,) = batch.quotes
    assert (q["bid_price"], q["bid_size"], q["ask_price"], q["ask_size"]) == (0.35718, 13445.46, 0.3581, 13561.902)
    d = batch.book_deltas
    assert batch.n_book_messages == 1 and len(d) == 3
    assert list(d["side"]) == [SIDE_BID, SIDE_BID, SIDE_ASK]
    assert list(d["price"]) == [71859.53, 71849.4, 71939.7]
    assert list(d["size"]) == [0.27994, 0.553986, 0.83953]
    assert (d["ts_ns"] == ns("2024-03-12T10:38:50", 796_132_210)).all()
    assert {dec.symbols.name(int(s)) for s in d["symbol_id"]} == {"BTC/USD"}
    assert list(d["flags"]) == [FLAG_SNAPSHOT | FLAG_RESET, FLAG_SNAPSHOT, FLAG_SNAPSHOT | FLAG_LAST_IN_BATCH]


def test_orderbook_deltas_of_several_messages_and_deletes():
    update = {"T": "o", "S": "ETH/USD", "t": "2024-03-12T10:38:51Z", "b": [], "a": [{"p": 3500.5, "s": 0}]}
    empty_reset = {"T": "o", "S": "SOL/USD", "t": "2024-03-12T10:38:52Z", "b": [], "a": [], "r": True}
    no_change = {"T": "o", "S": "ETH/USD", "t": "2024-03-12T10:38:53Z", "b": [], "a": []}
    batch = Decoder().decode(json.dumps([CRYPTO_BOOK, update, empty_reset, no_change]))
    d = batch.book_deltas
    assert batch.n_book_messages == 4 and len(d) == 5
    assert list(d["flags"][3:]) == [FLAG_LAST_IN_BATCH, FLAG_SNAPSHOT | FLAG_RESET | FLAG_LAST_IN_BATCH]
    assert d["size"][3] == 0.0 and d["side"][3] == SIDE_ASK  # s=0 deletes the level
    assert d["price"][4] == 0.0 and d["size"][4] == 0.0  # an empty reset still clears the book


@pytest.mark.parametrize("encode", [json.dumps, as_msgpack])
def test_control_messages(encode):
    dec = Decoder()
    assert dec.decode(encode([{"T": "success", "msg": "connected"}])).controls == [Success("connected")]
    assert dec.decode(encode([{"T": "error", "code": 402, "msg": "auth failed"}])).controls == [StreamError(402, "auth failed")]
    (sub,) = dec.decode(encode([SUBSCRIPTION])).controls
    assert isinstance(sub, Subscription)
    assert sub.symbols("quotes") == ("AMD", "CLDR") and sub.symbols("bars") == ("*",) and sub.symbols("lulds") == ()


def test_documented_but_unused_types_are_ignored_not_dropped():
    status = {"T": "s", "S": "AAPL", "sc": "H", "sm": "Trading Halt", "rc": "T12", "rm": "News", "t": "2021-02-22T15:51:44Z", "z": "C"}
    batch = Decoder().decode(json.dumps([status, STOCK_TRADE]))
    assert batch.n_ignored == 1 and batch.drops == [] and len(batch.trades) == 1


def test_nanosecond_timestamps_are_exact_in_both_encodings():
    stamps = ["2022-05-26T09:40:16.812456789Z", "2022-05-26T09:40:16.8Z", "2022-05-26T09:40:16Z", "1999-12-31T23:59:59.999999999Z"]
    msgs = [{**STOCK_TRADE, "t": s, "i": k} for k, s in enumerate(stamps)]
    expected = [ns("2022-05-26T09:40:16", 812_456_789), ns("2022-05-26T09:40:16", 800_000_000), ns("2022-05-26T09:40:16"), ns("1999-12-31T23:59:59", 999_999_999)]
    for frame in frames(msgs):
        assert list(Decoder().decode(frame).trades["ts_ns"]) == expected
    for value in expected:
        assert parse_rfc3339(format_rfc3339(value)) == value


@pytest.mark.parametrize(
    ("secs", "nanos", "marker"),
    [
        (ns("2021-02-22T15:51:44") // 10**9, 0, b"\xd6\xff"),          # timestamp 32: seconds only
        (ns("2021-02-22T15:51:44") // 10**9, 123, b"\xd7\xff"),        # timestamp 64: 30-bit ns + 34-bit s
        (ns("1960-01-01T00:00:00") // 10**9, 999_999_999, b"\xc7\x0c\xff"),  # timestamp 96: before 1970
    ],
)
def test_all_three_msgpack_timestamp_forms(secs, nanos, marker):
    frame = msgpack.packb([{**STOCK_TRADE, "t": msgpack.Timestamp(secs, nanos)}])
    assert marker in frame
    (t,) = Decoder().decode(frame).trades
    assert t["ts_ns"] == secs * 1_000_000_000 + nanos
    payload = msgpack_timestamp_payload(int(t["ts_ns"]))
    assert marker[-1:] + payload in frame  # the exchange picks the same smallest form


def test_bad_messages_are_counted_and_the_rest_of_the_frame_kept():
    bad = [
        {**STOCK_TRADE, "p": -1.0},             # negative price
        {**STOCK_TRADE, "p": "126.55"},         # wrong type
        {k: v for k, v in STOCK_TRADE.items() if k != "S"},  # missing field
        {**STOCK_TRADE, "s": 10**30},           # absurd size
        {**STOCK_TRADE, "i": 2**70},            # id beyond int64
        {**STOCK_TRADE, "t": "2021-02-30T15:51:44Z"},  # no such date
        {**STOCK_TRADE, "t": "yesterday"},
        {"T": "zz", "S": "AAPL"},               # unknown type
        "not an object",
    ]
    msgs = [STOCK_TRADE] + bad + [STOCK_QUOTE]
    dec = Decoder(log_drops=False)
    batch = dec.decode(json.dumps(msgs))
    assert len(batch.trades) == 1 and len(batch.quotes) == 1
    assert batch.n_messages == len(msgs)
    reasons = [d.reason for d in batch.drops]
    assert len(reasons) == len(bad)
    assert reasons.count(DROP_BAD_TIMESTAMP) == 2 and reasons.count(DROP_UNKNOWN_TYPE) == 1
    assert reasons.count(DROP_INVALID_MESSAGE) == 6
    assert dec.stats.dropped == len(bad) and dec.stats.trades == 1


def test_nan_and_infinity_are_dropped():
    text = json.dumps([STOCK_TRADE, {**STOCK_TRADE, "p": math.nan}, {**STOCK_TRADE, "s": math.inf}, STOCK_TRADE])
    assert "NaN" in text  # not valid JSON: only that element is lost
    batch = Decoder(log_drops=False).decode(text)
    assert len(batch.trades) == 2 and len(batch.drops) == 2
    frame = as_msgpack([STOCK_TRADE, {**STOCK_TRADE, "p": math.nan}, {**STOCK_QUOTE, "bp": -math.inf}])
    batch = Decoder(log_drops=False).decode(frame)
    assert len(batch.trades) == 1 and len(batch.quotes) == 0 and len(batch.drops) == 2


def test_truncated_frames_keep_the_complete_messages():
    text = json.dumps([STOCK_TRADE, STOCK_QUOTE, STOCK_BAR])
    batch = Decoder(log_drops=False).decode(text[: len(text) - 20])
    assert len(batch.trades) == 1 and len(batch.quotes) == 1 and len(batch.bars) == 0
    assert [d.reason for d in batch.drops] == [DROP_MALFORMED_MESSAGE]
    packed = as_msgpack([STOCK_TRADE, STOCK_QUOTE, STOCK_BAR])
    batch = Decoder(log_drops=False).decode(packed[:-10])
    assert len(batch.trades) == 1 and len(batch.quotes) == 1 and len(batch.drops) == 1


@pytest.mark.parametrize("frame", [b"", b"garbage", b"{}", b'{"T":"t"}', b"\xc1\xc1", "[1, 2", b"\x92\xc1"])
def test_frames_that_are_not_arrays(frame):
    dec = Decoder(log_drops=False)
    batch = dec.decode(frame)
    assert batch.n_events == 0 and len(batch.drops) >= 1
    assert all(d.reason in (DROP_MALFORMED_FRAME, DROP_MALFORMED_MESSAGE, DROP_INVALID_MESSAGE) for d in batch.drops)


def test_strict_symbol_map_drops_unknown_symbols_and_add_mode_assigns_stable_ids():
    strict = Decoder(SymbolMap(["AAPL"], mode="strict"), log_drops=False)
    batch = strict.decode(json.dumps([STOCK_TRADE, {**STOCK_TRADE, "S": "MSFT"}]))
    assert len(batch.trades) == 1 and [d.reason for d in batch.drops] == [DROP_UNKNOWN_SYMBOL]
    assert "MSFT" not in strict.symbols
    adding = Decoder(SymbolMap(["SPY"]))
    batch = adding.decode(json.dumps([{**STOCK_TRADE, "S": "MSFT"}, STOCK_TRADE, {**STOCK_TRADE, "S": "MSFT"}]))
    assert list(batch.trades["symbol_id"]) == [1, 2, 1]
    assert adding.symbols.names == ["SPY", "MSFT", "AAPL"]


def test_symbol_map_limits():
    m = SymbolMap(max_symbols=2)
    assert m.id_of("A") == 0 and m.id_of("B") == 1
    assert m.id_of("C") == -1  # full: the message becomes a drop, not an exception
    with pytest.raises(ValueError):
        SymbolMap(mode="loose")  # type: ignore[arg-type]
    names = SymbolMap()
    assert names.id_of("X" * 32) == 0
    assert names.id_of("X" * 33) == -1 and names.id_of("") == -1 and names.id_of("  ") == -1
    with pytest.raises(ValueError, match="not a symbol name"):
        names.add(" ")


# --- fuzzing --------------------------------------------------------------------------------------
_GOOD = [STOCK_TRADE, STOCK_QUOTE, STOCK_BAR, CRYPTO_TRADE, CRYPTO_QUOTE, CRYPTO_BOOK]
_junk_values = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12), st.lists(st.integers(-(2**63), 2**63 - 1), max_size=3),
)


@st.composite
def corrupted(draw):
    base = dict(draw(st.sampled_from(_GOOD)))
    key = draw(st.sampled_from(sorted(base)))
    action = draw(st.sampled_from(["drop", "replace"]))
    if action == "drop":
        del base[key]
    else:
        base[key] = draw(_junk_values)
    return base


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    msgs=st.lists(st.one_of(st.sampled_from(_GOOD), corrupted()), min_size=0, max_size=12),
    as_json=st.booleans(),
    cut=st.one_of(st.none(), st.integers(min_value=0, max_value=2000)),
)
def test_fuzzed_frames_never_raise_and_account_for_every_message(msgs, as_json, cut):
    frame: bytes = json.dumps(msgs).encode() if as_json else as_msgpack_lenient(msgs)
    if cut is not None:
        frame = frame[:cut]
    dec = Decoder(log_drops=False)
    batch = dec.decode(frame)
    kept = len(batch.trades) + len(batch.quotes) + len(batch.bars) + batch.n_book_messages + len(batch.controls) + batch.n_ignored
    assert kept + len(batch.drops) == batch.n_messages or (batch.n_messages == 1 and batch.drops[0].reason == DROP_MALFORMED_FRAME)
    if cut is None:
        assert batch.n_messages == len(msgs)
        good = sum(1 for m in msgs if any(m is g for g in _GOOD))
        assert kept >= good  # a corrupted message may still be valid (e.g. an optional field removed)
    for arr, col in ((batch.trades, "price"), (batch.bars, "close"), (batch.book_deltas, "size")):
        assert np.isfinite(arr[col]).all()
    assert (batch.trades["price"] > 0).all()
    assert dec.stats.dropped == len(batch.drops)


def as_msgpack_lenient(msgs: list[dict]) -> bytes:
    """msgpack of possibly broken messages: a "t" that is a valid timestamp becomes ext -1, else stays."""
    out = []
    for m in msgs:
        m = dict(m)
        t = m.get("t")
        if isinstance(t, str):
            try:
                total = parse_rfc3339(t)
                m["t"] = msgpack.Timestamp(total // 1_000_000_000, total % 1_000_000_000)
            except ValueError:
                pass
        if isinstance(m.get("i"), int) and not -(2**63) <= m["i"] < 2**64:
            m["i"] = str(m["i"])  # msgpack cannot carry it; keep it wrong in another way
        for k, v in list(m.items()):
            if isinstance(v, int) and not isinstance(v, bool) and not -(2**63) <= v < 2**64:
                m[k] = float(v)
        out.append(m)
    return msgpack.packb(out)


@settings(max_examples=80, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_never_raise(data):
    batch = Decoder(log_drops=False).decode(data)
    assert batch.n_events == 0 or batch.n_messages >= 1


# --- the compiled fast path agrees with the msgspec path -------------------------------------------
_SYMS = ["AAPL", "MSFT", "BRK.B", "BTC/USD", "ETH/USD"]
_prices = st.floats(min_value=1e-6, max_value=1e7, allow_nan=False, allow_infinity=False).map(lambda v: float(f"{v:.{len(repr(v))}g}"))
_sizes = st.one_of(st.integers(min_value=0, max_value=10**9), st.floats(min_value=0, max_value=1e9, allow_nan=False))
_stamps = st.tuples(st.integers(min_value=0, max_value=4_102_444_800), st.integers(min_value=0, max_value=999_999_999), st.integers(min_value=0, max_value=9)).map(
    lambda t: format_rfc3339(t[0] * 1_000_000_000 + (t[1] // 10 ** (9 - t[2])) * 10 ** (9 - t[2]))
)
_levels = st.lists(st.fixed_dictionaries({"p": _prices, "s": _sizes}), max_size=4)
_valid_message = st.one_of(
    st.fixed_dictionaries({"T": st.just("t"), "S": st.sampled_from(_SYMS), "i": st.integers(0, 2**63 - 1), "x": st.sampled_from("DVQ"), "p": _prices, "s": _sizes, "t": _stamps, "c": st.just(["@"]), "z": st.sampled_from("ABC")}),
    st.fixed_dictionaries({"T": st.just("q"), "S": st.sampled_from(_SYMS), "bx": st.just("V"), "bp": _prices, "bs": _sizes, "ax": st.just("Q"), "ap": _prices, "as": _sizes, "t": _stamps}),
    st.fixed_dictionaries({"T": st.sampled_from("bud"), "S": st.sampled_from(_SYMS), "o": _prices, "h": _prices, "l": _prices, "c": _prices, "v": _sizes, "t": _stamps, "n": st.integers(0, 10**6), "vw": _prices}),
    st.fixed_dictionaries({"T": st.just("o"), "S": st.sampled_from(_SYMS), "t": _stamps, "b": _levels, "a": _levels, "r": st.booleans()}),
)


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and len(a) == len(b) and all(np.array_equal(a[f], b[f]) for f in a.dtype.names)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(msgs=st.lists(st.one_of(_valid_message, _valid_message, corrupted()), max_size=10), as_json=st.booleans())
def test_compiled_and_msgspec_paths_agree(msgs, as_json):
    frame = json.dumps(msgs).encode() if as_json else as_msgpack_lenient(msgs)
    fast = Decoder(SymbolMap(_SYMS), log_drops=False)
    slow = Decoder(SymbolMap(_SYMS), log_drops=False, compiled=False)
    a, b = fast.decode(frame, 5), slow.decode(frame, 5)
    assert _same(a.trades, b.trades) and _same(a.quotes, b.quotes) and _same(a.bars, b.bars)
    assert _same(a.book_deltas, b.book_deltas)
    assert (a.n_messages, a.n_book_messages, a.drops, a.controls) == (b.n_messages, b.n_book_messages, b.drops, b.controls)


def test_the_fast_path_takes_ordinary_frames_and_falls_back_on_anything_else():
    dec = Decoder(SymbolMap(["AAPL", "AMD", "SPY", "BTC/USD"]), log_drops=False)
    for frame in frames([STOCK_TRADE, STOCK_QUOTE, STOCK_BAR]) + [json.dumps([CRYPTO_BOOK]), as_msgpack([CRYPTO_BOOK])]:
        dec.decode(frame)
    assert dec.stats.compiled_frames == dec.stats.frames == 5
    for frame in (
        json.dumps([{"T": "success", "msg": "connected"}]),      # control message
        json.dumps([{**STOCK_TRADE, "S": "NEW"}]),              # symbol not seen yet
        json.dumps([{**STOCK_TRADE, "S": "AA\\u0050L"}]),        # escaped string
        json.dumps([{**STOCK_TRADE, "p": 0.1 + 0.2}]).replace("0.30000000000000004", "0.300000000000000044408920985006"),
        json.dumps([{**STOCK_TRADE, "p": -3.0}]),               # out of bounds: reported by the slow path
    ):
        dec.decode(frame)
    assert dec.stats.compiled_frames == 5 and dec.stats.frames == 10
    assert dec.stats.drops == {DROP_INVALID_MESSAGE: 1}
    (t,) = Decoder(SymbolMap(["AAPL"])).decode(json.dumps([{**STOCK_TRADE, "p": 1e-7}])).trades  # exponent form
    assert t["price"] == 1e-7


@pytest.mark.parametrize("n_bids,n_asks", [(1, 1), (2, 3), (3, 1), (0, 2)])
def test_asks_before_bids_reorder_in_place_and_float32_prices_decode(n_bids, n_asks):
    # asks first, and float32 numbers (msgpack 0xCA): both are rarer layouts the compiled path must get right
    bids = [{"p": 100.0 - k, "s": 1.5 + k} for k in range(n_bids)]
    asks = [{"p": 101.0 + k, "s": 2.5 + k} for k in range(n_asks)]
    t = msgpack.Timestamp(1_700_000_000, 5)
    msg = {"T": "o", "S": "BTC/USD", "t": t, "a": asks, "b": bids, "r": True}
    frame = msgpack.packb([msg, {**STOCK_TRADE, "S": "AAPL", "t": t, "p": 12.5}], use_single_float=True)
    assert b"\xca" in frame
    fast = Decoder(SymbolMap(_SYMS), log_drops=False)
    slow = Decoder(SymbolMap(_SYMS), log_drops=False, compiled=False)
    a, b = fast.decode(frame, 5), slow.decode(frame, 5)
    assert fast.stats.compiled_frames == 1
    assert _same(a.book_deltas, b.book_deltas) and _same(a.trades, b.trades)
    sides = a.book_deltas["side"].tolist()
    assert sides == [1] * n_bids + [-1] * n_asks
    assert a.book_deltas["price"].tolist() == [d["p"] for d in bids + asks]
    assert a.trades["price"].tolist() == [12.5]
