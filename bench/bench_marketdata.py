"""Market data benchmark: decode throughput against json+dict and pydantic peers, and end-to-end
messages per second from the embedded exchange through the stream client into the book.

    python bench/bench_marketdata.py           # full run (about a minute)
    python bench/bench_marketdata.py --quick   # seconds

Decode: frames of 100 Alpaca messages (trades, quotes, crypto orderbooks), JSON and msgpack, decoded
into ``engine.events`` arrays with exact nanosecond timestamps by each contender on one core.
End-to-end: the exchange runs in a child process (its own core) serving pre-generated messages as
fast as the client reads; the client decodes and applies every batch to a ``BookManager``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import sys
import time
from pathlib import Path
from typing import Annotated, Literal, Union

import msgpack
import msgspec
import numpy as np
from pydantic import BaseModel, Field, TypeAdapter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import best_of, machine, write_result  # noqa: E402

from engine.events import BOOK_DELTA_DTYPE, FLAG_LAST_IN_BATCH, FLAG_RESET, QUOTE_DTYPE, SIDE_ASK, SIDE_BID, TRADE_DTYPE  # noqa: E402
from engine.marketdata.decoder import Decoder  # noqa: E402
from engine.marketdata.symbols import SymbolMap  # noqa: E402
from engine.sim.exchange import MarketDataServer  # noqa: E402
from engine.sim.market import MessageLoop, SyntheticMarket, default_symbols  # noqa: E402

FRAME_MESSAGES = 100


# --- frames -------------------------------------------------------------------------------------
def sample_messages(kind: str, n: int) -> list[dict]:
    if kind == "trade":
        market = SyntheticMarket(default_symbols(50), seed=1, trade_share=1.0)
    elif kind == "quote":
        market = SyntheticMarket(default_symbols(50), seed=1, trade_share=0.0)
    else:
        market = SyntheticMarket(default_symbols(0, 20), seed=1, trade_share=0.0)
    msgs = [m for m in market.step(n * 2) if m["T"] == {"trade": "t", "quote": "q", "orderbook": "o"}[kind]]
    # Real Alpaca stamps carry nine digits; keep every one of them significant.
    return [{**m, "t": m["t"] + 123_456_789 % 1_000_000 + k} for k, m in enumerate(msgs[:n])]


def encode_frames(msgs: list[dict], binary: bool) -> list[bytes]:
    server = MarketDataServer(MessageLoop(msgs))
    return [server.encode(msgs[i : i + FRAME_MESSAGES], binary) for i in range(0, len(msgs), FRAME_MESSAGES)]


# --- peer 1: json.loads / msgpack.unpackb and dict handling ------------------------------------
def _ts(t) -> int:
    if isinstance(t, int):
        return t
    return int(np.datetime64(t[:-1], "ns").astype(np.int64))  # exact to the nanosecond


def dict_decode(frame: bytes, symbols: dict[str, int], binary: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    msgs = msgpack.unpackb(frame, timestamp=3 if False else 2) if binary else json.loads(frame)  # timestamp=2: int ns
    trades, quotes, deltas = [], [], []
    for m in msgs:
        kind = m.get("T")
        sid = symbols.setdefault(m["S"], len(symbols)) if "S" in m else -1
        if kind == "t":
            trades.append((_ts(m["t"]), 0, sid, ord(m.get("x", "\0")[:1] or "\0"), ord(m.get("z", "\0")[:1] or "\0"), 0, m["p"], m["s"], m.get("i", 0)))
        elif kind == "q":
            quotes.append((_ts(m["t"]), 0, sid, ord(m.get("bx", "\0")[:1] or "\0"), ord(m.get("ax", "\0")[:1] or "\0"), 0, 0, m["bp"], m["bs"], m["ap"], m["as"]))
        elif kind == "o":
            ts = _ts(m["t"])
            levels = [(SIDE_BID, lv) for lv in m.get("b", [])] + [(SIDE_ASK, lv) for lv in m.get("a", [])]
            for k, (side, lv) in enumerate(levels):
                flags = (FLAG_RESET if k == 0 and m.get("r") else 0) | (FLAG_LAST_IN_BATCH if k == len(levels) - 1 else 0)
                deltas.append((ts, 0, sid, side, flags, lv["p"], lv["s"]))
    return np.array(trades, TRADE_DTYPE), np.array(quotes, QUOTE_DTYPE), np.array(deltas, BOOK_DELTA_DTYPE)


# --- peer 2: pydantic models ---------------------------------------------------------------------
class PTrade(BaseModel):
    T: Literal["t"]
    S: str
    p: float
    s: float
    t: str | int
    i: int = 0
    x: str = ""
    z: str = ""


class PQuote(BaseModel):
    T: Literal["q"]
    S: str
    bp: float
    bs: float
    ap: float
    as_: float = Field(alias="as")
    t: str | int
    bx: str = ""
    ax: str = ""


class PLevel(BaseModel):
    p: float
    s: float


class PBook(BaseModel):
    T: Literal["o"]
    S: str
    t: str | int
    b: list[PLevel] = []
    a: list[PLevel] = []
    r: bool = False


_FRAME = TypeAdapter(list[Annotated[Union[PTrade, PQuote, PBook], Field(discriminator="T")]])  # noqa: UP007


def pydantic_decode(frame: bytes, symbols: dict[str, int], binary: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    msgs = _FRAME.validate_python(msgpack.unpackb(frame, timestamp=2)) if binary else _FRAME.validate_json(frame)
    trades, quotes, deltas = [], [], []
    for m in msgs:
        sid = symbols.setdefault(m.S, len(symbols))
        if isinstance(m, PTrade):
            trades.append((_ts(m.t), 0, sid, ord(m.x[:1] or "\0"), ord(m.z[:1] or "\0"), 0, m.p, m.s, m.i))
        elif isinstance(m, PQuote):
            quotes.append((_ts(m.t), 0, sid, ord(m.bx[:1] or "\0"), ord(m.ax[:1] or "\0"), 0, 0, m.bp, m.bs, m.ap, m.as_))
        else:
            ts = _ts(m.t)
            levels = [(SIDE_BID, lv) for lv in m.b] + [(SIDE_ASK, lv) for lv in m.a]
            for k, (side, lv) in enumerate(levels):
                flags = (FLAG_RESET if k == 0 and m.r else 0) | (FLAG_LAST_IN_BATCH if k == len(levels) - 1 else 0)
                deltas.append((ts, 0, sid, side, flags, lv.p, lv.s))
    return np.array(trades, TRADE_DTYPE), np.array(quotes, QUOTE_DTYPE), np.array(deltas, BOOK_DELTA_DTYPE)


def check_agreement(frames: list[bytes], binary: bool) -> None:
    """All three contenders decode to the same arrays (recv_ns aside), or the race is meaningless."""
    ours = Decoder(log_drops=False)
    peer: dict[str, int] = {}
    for frame in frames[:5]:
        batch = ours.decode(frame, 0)
        for got, ref in zip((batch.trades, batch.quotes, batch.book_deltas), dict_decode(frame, peer, binary)):
            assert len(got) == len(ref)
            for col in ("ts_ns", "price") if "price" in got.dtype.names else ("ts_ns", "bid_price", "ask_size"):
                assert np.array_equal(got[col], ref[col]), col


def bench_decode(quick: bool) -> dict[str, dict[str, float]]:
    n_frames = 20 if quick else 100
    repeat = 3 if quick else 7
    results: dict[str, dict[str, float]] = {}
    for kind in ("trade", "quote", "orderbook"):
        msgs = sample_messages(kind, n_frames * FRAME_MESSAGES)
        for binary in (False, True):
            frames = encode_frames(msgs, binary)
            check_agreement(frames, binary)
            n = len(msgs)
            dec = Decoder(log_drops=False)
            ours = best_of(lambda: [dec.decode(f, 0) for f in frames], repeat=repeat)
            syms: dict[str, int] = {}
            dicts = best_of(lambda: [dict_decode(f, syms, binary) for f in frames], repeat=max(2, repeat // 2))
            pyd = best_of(lambda: [pydantic_decode(f, syms, binary) for f in frames], repeat=max(2, repeat // 2))
            name = f"{kind}_{'msgpack' if binary else 'json'}"
            results[name] = {
                "tickforge_msgs_per_s": n / ours,
                "json_dict_msgs_per_s": n / dicts,
                "pydantic_msgs_per_s": n / pyd,
                "speedup_vs_json_dict": dicts / ours,
                "speedup_vs_pydantic": pyd / ours,
                "bytes_per_msg": sum(map(len, frames)) / n,
            }
            r = results[name]
            print(
                f"decode {name:18s} tickforge {r['tickforge_msgs_per_s'] / 1e6:6.2f} M msg/s | "
                f"{'msgpack' if binary else 'json'}+dict {r['json_dict_msgs_per_s'] / 1e6:5.2f} M ({r['speedup_vs_json_dict']:4.1f}x) | "
                f"pydantic {r['pydantic_msgs_per_s'] / 1e6:5.2f} M ({r['speedup_vs_pydantic']:4.1f}x)"
            )
    return results


# --- end to end ----------------------------------------------------------------------------------
def _serve(kind: str, port_out: mp.Queue, stop: mp.Event, binary: bool) -> None:  # runs in the child
    async def main() -> None:
        if kind == "orderbook":
            names = default_symbols(0, 100)
            market = SyntheticMarket(names, seed=2, trade_share=0.0)
        else:
            names = default_symbols(200)
            market = SyntheticMarket(names, seed=2, trade_share=0.0)
        msgs = market.step(200_000)
        source = MessageLoop(msgs, market, wire="msgpack" if binary else "json")
        from engine.config import SimConfig  # noqa: PLC0415

        cfg = SimConfig(messages_per_s=float("inf"))
        async with MarketDataServer(source, cfg, max_frame_messages=1000, wall_clock=False) as server:
            port_out.put((server.url_for("crypto" if kind == "orderbook" else "iex"), names))
            while not stop.is_set():
                await asyncio.sleep(0.05)

    asyncio.run(main())


async def _consume(url: str, names: list[str], seconds: float, binary: bool) -> dict[str, float]:
    from engine.book import BookManager  # noqa: PLC0415
    from engine.config import FeedConfig, SimConfig  # noqa: PLC0415
    from engine.marketdata.client import StreamClient  # noqa: PLC0415

    sim = SimConfig()
    book = BookManager(len(names), 0.01)
    crypto = url.endswith("/crypto/us")
    counts = {"messages": 0, "book_updates": 0}

    def on_batch(batch) -> None:
        if len(batch.book_deltas):
            book.apply_deltas(batch.book_deltas)
        if len(batch.quotes):
            book.apply_quotes(batch.quotes)
        counts["messages"] += batch.n_events

    client = StreamClient(
        url, key_id=sim.key_id, secret_key=sim.secret_key, feed=FeedConfig(msgpack=binary),
        subscriptions={"orderbooks" if crypto else "quotes": ["*"]}, symbols=SymbolMap(names), on_batch=on_batch,
    )
    await client.connect(timeout=60)
    await asyncio.sleep(min(1.0, seconds / 3))  # warm up: numba kernels, socket buffers
    start_msgs, start = counts["messages"], time.perf_counter()
    await asyncio.sleep(seconds)
    done_msgs, elapsed = counts["messages"], time.perf_counter() - start
    await client.disconnect()
    return {
        "msgs_per_s": (done_msgs - start_msgs) / elapsed,
        "seconds": elapsed,
        "messages": done_msgs - start_msgs,
        "drops": client.stats.drops,
        "reconnects": client.stats.reconnects,
        "book_crossed": book.stats().get("crossed", 0),
    }


def bench_end_to_end(quick: bool) -> dict[str, dict[str, float]]:
    seconds = 2.0 if quick else 6.0
    ctx = mp.get_context("spawn")
    results = {}
    for kind in ("orderbook", "quote"):
        for binary in (True, False):
            port_out, stop = ctx.Queue(), ctx.Event()
            child = ctx.Process(target=_serve, args=(kind, port_out, stop, binary), daemon=True)
            child.start()
            try:
                url, names = port_out.get(timeout=120)
                r = asyncio.run(_consume(url, names, seconds, binary))
            finally:
                stop.set()
                child.join(10)
                if child.is_alive():
                    child.terminate()
            name = f"{kind}_{'msgpack' if binary else 'json'}"
            results[name] = r
            print(f"end-to-end {name:18s} {r['msgs_per_s'] / 1e3:8.0f} k msg/s into the book ({r['messages']} msgs, {r['drops']} drops)")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a seconds-long run")
    args = parser.parse_args()
    info = machine()
    print(f"machine: {info['cpu']} ({info['cores']} cores), python {info['python']}")
    decode = bench_decode(args.quick)
    e2e = bench_end_to_end(args.quick)
    best_decode = min(r["tickforge_msgs_per_s"] for r in decode.values())
    print(f"slowest decode case {best_decode / 1e6:.2f} M msg/s (target 1 M); "
          f"slowest end-to-end {min(r['msgs_per_s'] for r in e2e.values()) / 1e3:.0f} k msg/s (target 250 k)")
    write_result("marketdata" + ("-quick" if args.quick else ""), {
        "frame_messages": FRAME_MESSAGES,
        "decode": decode,
        "end_to_end": e2e,
        "targets": {"decode_msgs_per_s": 1_000_000, "end_to_end_msgs_per_s": 250_000},
    })


if __name__ == "__main__":
    main()
