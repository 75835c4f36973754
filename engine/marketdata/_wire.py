"""Typed wire shapes of Alpaca market-data messages, for msgspec to decode straight into.

Two variants of each shape exist because the timestamp field differs by encoding: RFC 3339 text
in JSON, a msgpack Timestamp extension (kept as raw ``Ext`` so nanoseconds survive) in msgpack.
Value bounds live in the types so that msgspec rejects NaN, infinities, negative sizes and absurd
magnitudes in C; fields the engine does not use (conditions, ``c`` lists) are not declared and so
never decoded.
"""


from typing import Annotated, Any, Union

import msgspec
from msgspec import Meta

# Bounds: wide enough for any real instrument (a BRK.A share, a SHIB/USD tick), narrow enough to
# turn overflowed or garbage numbers into a counted drop instead of a poisoned book.
Price = Annotated[float, Meta(gt=0.0, lt=1e10)]
QuotePrice = Annotated[float, Meta(ge=0.0, lt=1e10)]  # 0 = that side of the quote is empty
Size = Annotated[float, Meta(ge=0.0, lt=1e13)]
Int64 = Annotated[int, Meta(ge=-(2**63), le=2**63 - 1)]
Code = Annotated[str, Meta(max_length=4)]
Symbol = Annotated[str, Meta(min_length=1, max_length=32)]


def _shapes(ts: Any) -> dict[str, Any]:
    """Build the message structs for one timestamp representation."""

    class Trade(msgspec.Struct, tag_field="T", tag="t"):
        S: Symbol
        p: Price
        s: Size
        t: ts
        i: Int64 = 0
        x: Code = ""
        z: Code = ""

    class Quote(msgspec.Struct, tag_field="T", tag="q"):
        S: Symbol
        t: ts
        bp: QuotePrice = 0.0
        bs: Size = 0.0
        ap: QuotePrice = 0.0
        as_: Size = msgspec.field(default=0.0, name="as")
        bx: Code = ""
        ax: Code = ""
        z: Code = ""

    class Bar(msgspec.Struct, tag_field="T", tag="b"):
        S: Symbol
        o: Price
        h: Price
        l: Price  # noqa: E741 - Alpaca's field name
        c: Price
        t: ts
        v: Size = 0.0
        n: Int64 = 0
        vw: QuotePrice = 0.0

    class UpdatedBar(Bar, tag="u"):
        pass

    class DailyBar(Bar, tag="d"):
        pass

    class Level(msgspec.Struct):
        p: Price
        s: Size

    class Orderbook(msgspec.Struct, tag_field="T", tag="o"):
        S: Symbol
        t: ts
        b: list[Level] = []
        a: list[Level] = []
        r: bool = False

    class Success(msgspec.Struct, tag_field="T", tag="success"):
        msg: str = ""

    class Error(msgspec.Struct, tag_field="T", tag="error"):
        code: Int64 = 0
        msg: str = ""

    class Subscription(msgspec.Struct, tag_field="T", tag="subscription"):
        trades: list[str] = []
        quotes: list[str] = []
        bars: list[str] = []
        updatedBars: list[str] = []  # noqa: N815 - Alpaca's field name
        dailyBars: list[str] = []  # noqa: N815
        statuses: list[str] = []
        lulds: list[str] = []
        corrections: list[str] = []
        cancelErrors: list[str] = []  # noqa: N815
        orderbooks: list[str] = []

    # Documented message types the engine receives but does not turn into events (yet).
    class TradingStatus(msgspec.Struct, tag_field="T", tag="s"):
        pass

    class Luld(msgspec.Struct, tag_field="T", tag="l"):
        pass

    class Correction(msgspec.Struct, tag_field="T", tag="c"):
        pass

    class CancelError(msgspec.Struct, tag_field="T", tag="x"):
        pass

    class News(msgspec.Struct, tag_field="T", tag="n"):
        pass

    message = Union[  # noqa: UP007 - msgspec wants a typing.Union of tagged structs
        Trade, Quote, Bar, UpdatedBar, DailyBar, Orderbook, Success, Error, Subscription,
        TradingStatus, Luld, Correction, CancelError, News,
    ]
    return {
        "Trade": Trade, "Quote": Quote, "Bar": Bar, "UpdatedBar": UpdatedBar, "DailyBar": DailyBar,
        "Orderbook": Orderbook, "Level": Level, "Success": Success, "Error": Error,
        "Subscription": Subscription, "Message": message,
        "Ignored": (TradingStatus, Luld, Correction, CancelError, News),
    }


JSON = _shapes(str)
MSGPACK = _shapes(msgspec.msgpack.Ext)
