"""Recording a market-data stream: raw frames with their receive times, one JSON line each.

A recording is exactly what the wire carried, so a replay goes through the same decoder as live
data. Lines are ``{"recv_ns": int, "text": str}`` for JSON frames and ``{"recv_ns": int,
"msgpack": base64}`` for msgpack frames, after one header line ``{"tickforge_recording": 1, ...}``.
Files are gzip (``.gz``) or zstd (``.zst``, needs the ``zstandard`` package) compressed by suffix,
plain otherwise. Also the ``tickforge record`` command.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gzip
import io
import logging
import os
import time
from pathlib import Path
from typing import IO, Any, Literal

import msgspec

from engine.errors import InputError

log = logging.getLogger(__name__)

Compression = Literal["auto", "gzip", "zstd", "none"]
FORMAT_VERSION = 1


def _compression_for(path: Path, compression: Compression) -> str:
    if compression != "auto":
        return compression
    if path.suffix == ".gz":
        return "gzip"
    if path.suffix in (".zst", ".zstd"):
        return "zstd"
    return "none"


def open_recording(path: str | os.PathLike[str], mode: Literal["rb", "wb"], compression: Compression = "auto") -> IO[bytes]:
    """Open a recording file for binary reading or writing, (de)compressing by suffix or by choice."""
    p = Path(path)
    kind = _compression_for(p, compression)
    try:
        if kind == "gzip":
            return gzip.open(p, mode)  # type: ignore[return-value]
        if kind == "zstd":
            try:
                import zstandard  # noqa: PLC0415 - optional dependency
            except ImportError:
                raise InputError("zstd recordings need the 'zstandard' package (pip install zstandard)") from None
            stream = zstandard.open(p, mode)
            # the decompression reader has no readline: buffer it so recordings iterate by line
            return io.BufferedReader(stream) if mode == "rb" else stream  # type: ignore[return-value]
        if kind == "none":
            return open(p, mode)  # noqa: SIM115 - the caller closes it
    except FileNotFoundError:
        raise InputError(f"recording not found: {p}") from None
    raise InputError(f"unknown compression {compression!r}; expected auto, gzip, zstd or none")


class Recorder:
    """Appends frames to a recording; use as a context manager or call ``close()``."""

    def __init__(self, path: str | os.PathLike[str], *, compression: Compression = "auto", source: str = "") -> None:
        self.path = Path(path)
        self._file = open_recording(self.path, "wb", compression)
        self._encoder = msgspec.json.Encoder()
        self.frames_written = 0
        self.bytes_in = 0
        header = {"tickforge_recording": FORMAT_VERSION, "source": source, "started_ns": time.time_ns()}
        self._file.write(self._encoder.encode(header) + b"\n")

    def write(self, frame: str | bytes, recv_ns: int) -> None:
        """Record one frame as received (text frames as text, binary frames base64-encoded)."""
        if isinstance(frame, (bytes, bytearray, memoryview)) and _is_json(frame):
            frame = bytes(frame).decode("utf-8", "replace")  # a text frame the client kept as bytes
        if isinstance(frame, str):
            line: dict[str, Any] = {"recv_ns": recv_ns, "text": frame}
            self.bytes_in += len(frame)
        else:
            line = {"recv_ns": recv_ns, "msgpack": base64.b64encode(frame).decode("ascii")}
            self.bytes_in += len(frame)
        self._file.write(self._encoder.encode(line) + b"\n")
        self.frames_written += 1

    __call__ = write  # so a recorder can be passed as StreamClient(on_frame=recorder)

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _is_json(frame: bytes | bytearray | memoryview) -> bool:
    # msgpack frames are arrays (0x90-0x9f, 0xdc, 0xdd); JSON frames start with '[' or whitespace
    head = bytes(frame[:1])
    return head in (b"[", b" ", b"\n", b"\r", b"\t")


# --- the `tickforge record` command -----------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="recording file (.jsonl.gz, .jsonl.zst or .jsonl)")
    parser.add_argument("--url", default=None, help="stream URL (default: an embedded exchange started in-process)")
    parser.add_argument("--seconds", type=float, default=10.0, help="how long to record (default 10)")
    parser.add_argument("--symbols", default=None, help="comma-separated symbols (default: feed.symbols, or * on the embedded exchange)")
    parser.add_argument("--channels", default="trades,quotes,bars", help="comma-separated channels (default trades,quotes,bars)")
    parser.add_argument("--json", action="store_true", help="ask for JSON frames instead of msgpack")
    parser.add_argument("--config", default=None, help="TOML config file (credentials, feed)")


def run(args: argparse.Namespace) -> int:
    if args.seconds <= 0:
        raise InputError("--seconds must be > 0")
    summary = asyncio.run(_record(args))
    print(
        f"recorded {summary['frames']} frames, {summary['messages']} messages ({summary['events']} events, "
        f"{summary['drops']} dropped) in {summary['seconds']:.1f}s to {args.out}"
    )
    return 0


async def _record(args: argparse.Namespace) -> dict[str, Any]:
    from engine.config import TickforgeConfig  # noqa: PLC0415 - keep `--help` light
    from engine.marketdata.client import StreamClient  # noqa: PLC0415

    config = TickforgeConfig.load(args.config)
    channels = [c.strip() for c in args.channels.split(",") if c.strip()]
    symbols = [s.strip() for s in args.symbols.split(",")] if args.symbols else None
    feed = config.feed.model_copy(update={"msgpack": not args.json})
    server = None
    if args.url is None:
        from engine.sim.exchange import MarketDataServer  # noqa: PLC0415
        from engine.sim.market import SyntheticMarket, default_symbols  # noqa: PLC0415

        sim = config.sim
        market = SyntheticMarket(default_symbols(sim.n_symbols, n_crypto=4), seed=sim.seed)
        server = MarketDataServer(market, sim)
        await server.start()
        crypto = any("/" in c for c in (symbols or []))
        url = server.url_for("crypto" if crypto or "orderbooks" in channels else "iex")
        key, secret = sim.key_id, sim.secret_key
    else:
        url = args.url
        if not config.alpaca.has_credentials:
            raise InputError("recording from a URL needs credentials: set APCA_API_KEY_ID and APCA_API_SECRET_KEY")
        key, secret = config.alpaca.key_id, config.alpaca.secret_key
    names = symbols or list(config.feed.crypto_symbols if url.endswith("/crypto/us") else config.feed.symbols) or ["*"]
    recorder = Recorder(args.out, source=url)
    started = time.monotonic()
    try:
        client = StreamClient(url, key_id=key, secret_key=secret, feed=feed, subscriptions={c: names for c in channels}, on_batch=lambda b: None, on_frame=recorder)  # type: ignore[arg-type]
        try:
            await client.connect(timeout=max(args.seconds, 10.0))
            await asyncio.sleep(max(args.seconds - (time.monotonic() - started), 0.0))
        finally:
            await client.disconnect()
    finally:
        recorder.close()
        if server is not None:
            await server.stop()
    st = client.stats
    return {"frames": recorder.frames_written, "messages": st.messages, "events": st.events, "drops": st.drops, "seconds": time.monotonic() - started}


__all__ = ["Recorder", "open_recording", "add_arguments", "run"]
