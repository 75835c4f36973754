"""The embedded simulator: an Alpaca-protocol market-data exchange and paper broker on localhost.

Import the submodule you need (``engine.sim.exchange``, ``engine.sim.market``, ...); this package
imports nothing on its own so that ``import engine.sim`` stays cheap.
"""
