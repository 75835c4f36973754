"""Configuration: one frozen pydantic model per subsystem, loaded from a TOML file and the environment.

Precedence (highest first): explicit keyword arguments, environment (``TICKFORGE_<SECTION>__<FIELD>``,
plus Alpaca's own ``APCA_API_KEY_ID`` / ``APCA_API_SECRET_KEY``), the TOML file, defaults.
Credentials are ``SecretStr``: they never appear in a repr, a log line or an exception.
A bad value is a ``ConfigError`` naming the field and the problem.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from engine.errors import TickforgeError

PAPER_TRADING_URL = "https://paper-api.alpaca.markets"
LIVE_TRADING_URL = "https://api.alpaca.markets"
DATA_STREAM_URL = "wss://stream.data.alpaca.markets"


class ConfigError(TickforgeError, ValueError):
    """Configuration could not be loaded or is invalid; the message names the field."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class AlpacaConfig(_Frozen):
    """Where and as whom to talk to Alpaca. No credentials means the embedded simulator."""

    key_id: SecretStr | None = Field(None, validation_alias=AliasChoices("key_id", "APCA_API_KEY_ID"))
    secret_key: SecretStr | None = Field(None, validation_alias=AliasChoices("secret_key", "APCA_API_SECRET_KEY"))
    live: bool = False  # trading against real money needs this set explicitly
    trading_url: str | None = None  # override (e.g. the embedded broker); default from `live`
    data_url: str = DATA_STREAM_URL
    feed: Literal["iex", "sip", "test"] = "iex"

    @property
    def has_credentials(self) -> bool:
        return bool(self.key_id and self.key_id.get_secret_value() and self.secret_key and self.secret_key.get_secret_value())

    @property
    def base_trading_url(self) -> str:
        return self.trading_url or (LIVE_TRADING_URL if self.live else PAPER_TRADING_URL)


class FeedConfig(_Frozen):
    """Market data subscription and connection behaviour."""

    symbols: tuple[str, ...] = ()
    crypto_symbols: tuple[str, ...] = ()
    channels: tuple[Literal["trades", "quotes", "bars", "updatedBars", "dailyBars", "orderbooks"], ...] = (
        "trades",
        "quotes",
        "bars",
    )
    msgpack: bool = True
    stale_after_s: float = Field(10.0, gt=0)
    reconnect_base_s: float = Field(0.5, gt=0)
    reconnect_max_s: float = Field(30.0, gt=0)
    healthy_after_s: float = Field(30.0, gt=0)  # backoff resets only after this long connected
    ping_interval_s: float = Field(10.0, gt=0)


class RiskConfig(_Frozen):
    """Pre-trade limits. Quantities in shares/units, money in account currency."""

    max_order_qty: float = Field(1_000.0, gt=0)
    max_position_qty: float = Field(5_000.0, gt=0)
    max_gross_notional: float = Field(1_000_000.0, gt=0)
    max_symbol_notional: float = Field(250_000.0, gt=0)
    max_open_positions: int = Field(50, ge=0)
    max_daily_loss: float = Field(10_000.0, gt=0)
    max_orders_per_window: int = Field(100, gt=0, le=100_000)  # the window keeps one slot per order
    rate_window_s: float = Field(1.0, gt=0)
    price_band_bps: float = Field(50.0, gt=0)
    allow_short: bool = True
    initial_state: Literal["ACTIVE", "REDUCING", "HALTED"] = "ACTIVE"
    # the trading day (daily P&L, daily loss limit) starts at this wall-clock time in this zone
    session_reset_time: str = Field("00:00", pattern=r"^([01]\d|2[0-3]):[0-5]\d$")
    session_timezone: str = "America/New_York"

    @model_validator(mode="after")
    def _known_timezone(self) -> RiskConfig:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError  # noqa: PLC0415 - only this validator needs it

        try:
            ZoneInfo(self.session_timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {self.session_timezone!r}") from None
        return self


class RetryConfig(_Frozen):
    """Exponential backoff with jitter for retryable calls."""

    max_attempts: int = Field(5, ge=1)
    base_delay_s: float = Field(0.1, gt=0)
    multiplier: float = Field(2.0, ge=1.0)
    jitter_low: float = Field(0.85, gt=0)
    jitter_high: float = Field(1.15, gt=0)
    max_delay_s: float = Field(30.0, gt=0)

    @model_validator(mode="after")
    def _jitter_order(self) -> RetryConfig:
        if self.jitter_low > self.jitter_high:
            raise ValueError("jitter_low must not exceed jitter_high")
        return self


class ExecutionConfig(_Frozen):
    """Order routing: rate limit, timeouts, retries, slippage guard."""

    rate_limit_per_min: int = Field(200, gt=0)
    connect_timeout_s: float = Field(2.0, gt=0)
    read_timeout_s: float = Field(5.0, gt=0)
    write_timeout_s: float = Field(5.0, gt=0)
    pool_timeout_s: float = Field(2.0, gt=0)
    slippage_bps: float = Field(50.0, gt=0)
    slippage_action: Literal["reject", "limit"] = "reject"
    client_order_id_prefix: str = Field("tf", min_length=1, max_length=16, pattern=r"^[A-Za-z0-9_-]+$")
    retry: RetryConfig = RetryConfig()
    # order submits over a lean keep-alive HTTP/1.1 pool (same timeouts) instead of httpx; off behind a proxy
    order_lane: bool = True
    # trade_updates: the reconnect backoff resets only after a connection stayed up this long
    stream_healthy_after_s: float = Field(30.0, gt=0)
    # trade_updates: reconciliation looks this far before the outage (covers clock skew with the venue)
    reconcile_lookback_s: float = Field(2.0, ge=0)


class SimConfig(_Frozen):
    """The embedded exchange and paper broker (localhost only)."""

    host: str = "127.0.0.1"
    market_port: int = Field(0, ge=0, le=65535)  # 0: pick a free port
    broker_port: int = Field(0, ge=0, le=65535)
    key_id: SecretStr = SecretStr("tickforge-sim")
    secret_key: SecretStr = SecretStr("tickforge-sim-secret")
    seed: int = 7
    n_symbols: int = Field(20, ge=1, le=100_000)
    messages_per_s: float = Field(10_000.0, gt=0)
    # the exchange sends what it generated once per interval, one frame per subscriber (a real feed's
    # own batching; a longer interval means bigger frames and ticks that wait longer to be sent)
    frame_interval_ms: float = Field(1.0, gt=0, le=1000)
    starting_cash: float = Field(1_000_000.0, gt=0)
    rate_limit_per_min: int = Field(200, gt=0)
    # real time: serve the exchange and broker from a process of their own, as a real venue is (on the
    # engine's loop their work delays every order's answer); lock-step always keeps them in-process
    own_process: bool = True


class LiveConfig(_Frozen):
    """The live engine's run: strategy, duration, backend, observability."""

    strategy: str = "engine.strategies.MovingAverageRsi"
    strategy_params: dict[str, float | int | str | bool] = {}
    duration_s: float = Field(30.0, gt=0)
    backend: Literal["auto", "gpu", "cpu"] = "auto"
    bar_seconds: int = Field(1, ge=1)
    metrics_port: int = Field(0, ge=0, le=65535)  # 0: no metrics endpoint
    metrics_host: str = "127.0.0.1"  # the control endpoint (POST /halt) has no auth: keep it on loopback
    dashboard: bool = False
    busy_poll: bool = False  # the loop polls instead of sleeping: lower, steadier latency, one core at 100%
    # with busy_poll: replay the latest frame through a twin of the book path this often while idle,
    # so the next frame finds the decision path in cache (engine.rehearsal); 0 turns it off
    rehearse_us: int = Field(200, ge=0, le=1_000_000)
    # pin the engine process to these CPUs (Linux); () leaves placement to the OS. On loopback the
    # venue's process is otherwise woken onto the engine's core right after each order write
    cpu_affinity: tuple[Annotated[int, Field(ge=0)], ...] = ()
    halt_on_strategy_error: bool = False
    halt_file: str | None = None  # kill switch: trading halts as soon as this file exists
    record_path: str | None = None  # record the raw market data frames here (.gz / .zst / plain by suffix)
    # embedded simulator only: the exchange sends frame k+1 after the engine settled frame k
    # (orders acked, fills booked), so a seed always gives the same fills and P&L
    lockstep: bool = False
    frame_messages: int = Field(100, ge=1, le=10_000)  # lock-step frame size
    max_messages: int = Field(0, ge=0)  # stop after this many market data messages (0: duration only)
    benchmark_symbol: str = ""  # beta/correlation benchmark; "" = SPY when traded, else the first symbol
    beta_window: int = Field(20, ge=2, le=10_000)  # bars in the rolling beta/correlation
    shutdown_timeout_s: float = Field(5.0, gt=0)  # wait this long for cancel acks at shutdown


class TickforgeConfig(BaseSettings):
    """The whole configuration. ``TickforgeConfig.load(path)`` is the usual way in."""

    model_config = SettingsConfigDict(
        env_prefix="TICKFORGE_", env_nested_delimiter="__", frozen=True, extra="forbid"
    )

    alpaca: AlpacaConfig = AlpacaConfig()
    feed: FeedConfig = FeedConfig()
    risk: RiskConfig = RiskConfig()
    execution: ExecutionConfig = ExecutionConfig()
    sim: SimConfig = SimConfig()
    live: LiveConfig = LiveConfig()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None, **overrides: object) -> TickforgeConfig:
        """Load from an optional TOML file, the environment and keyword overrides."""
        data: dict[str, object] = {}
        if path is not None:
            p = Path(path)
            try:
                data = tomllib.loads(p.read_text())
            except FileNotFoundError:
                raise ConfigError(f"config file not found: {p}") from None
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(f"config file {p} is not valid TOML: {exc}") from None
        try:
            from_env = cls().model_dump(exclude_unset=True)  # only what the environment set
        except ValidationError as exc:
            raise ConfigError(_describe(exc)) from None
        creds = {k: os.environ[v] for k, v in (("key_id", "APCA_API_KEY_ID"), ("secret_key", "APCA_API_SECRET_KEY")) if os.environ.get(v)}
        merged = _deep_merge(_deep_merge(_deep_merge(data, from_env), {"alpaca": creds} if creds else {}), overrides)
        try:
            return cls(**merged)  # type: ignore[arg-type]
        except ValidationError as exc:
            raise ConfigError(_describe(exc)) from None


def _deep_merge(base: dict, top: dict) -> dict:
    """``top`` wins; nested tables merge key by key."""
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _describe(exc: ValidationError) -> str:
    """One line per bad field, without echoing input values (they may be secrets)."""
    lines = []
    for err in exc.errors(include_input=False, include_url=False):
        where = ".".join(str(p) for p in err["loc"]) or "config"
        lines.append(f"{where}: {err['msg']}")
    return "invalid configuration: " + "; ".join(lines)
