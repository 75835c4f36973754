"""Market data: Alpaca stream client, pure decoder (frames -> event arrays), recorder and replay.

Import the submodule you need (``engine.marketdata.decoder``, ``.client``, ...): this package
imports nothing heavy on its own.
"""

__all__ = ["client", "decoder", "messages", "recorder", "replay", "symbols", "timestamps"]
