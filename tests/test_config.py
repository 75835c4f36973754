"""Configuration: file + environment precedence, validation messages, secrets kept secret."""

import pytest

from engine.config import ConfigError, TickforgeConfig


def test_defaults_mean_simulator_and_paper():
    cfg = TickforgeConfig.load()
    assert not cfg.alpaca.has_credentials
    assert cfg.alpaca.base_trading_url == "https://paper-api.alpaca.markets"
    assert cfg.execution.rate_limit_per_min == 200
    assert cfg.risk.price_band_bps == 50.0


def test_live_url_only_when_asked():
    assert TickforgeConfig.load(alpaca={"live": True}).alpaca.base_trading_url == "https://api.alpaca.markets"


def test_file_then_environment_then_overrides(tmp_path, monkeypatch):
    path = tmp_path / "tf.toml"
    path.write_text('[risk]\nmax_order_qty = 10\nmax_position_qty = 20\n[feed]\nsymbols = ["AAPL", "MSFT"]\n')
    monkeypatch.setenv("TICKFORGE_RISK__MAX_POSITION_QTY", "30")
    cfg = TickforgeConfig.load(path)
    assert cfg.risk.max_order_qty == 10
    assert cfg.risk.max_position_qty == 30
    assert cfg.feed.symbols == ("AAPL", "MSFT")


def test_alpaca_standard_environment_credentials(monkeypatch):
    monkeypatch.setenv("APCA_API_KEY_ID", "AKTESTKEY")
    monkeypatch.setenv("APCA_API_SECRET_KEY", "very-secret-value")
    cfg = TickforgeConfig.load()
    assert cfg.alpaca.has_credentials
    text = repr(cfg) + str(cfg) + cfg.model_dump_json()
    assert "very-secret-value" not in text and "AKTESTKEY" not in text


def test_secret_never_echoed_in_validation_errors(tmp_path):
    path = tmp_path / "tf.toml"
    path.write_text('[alpaca]\nkey_id = "k"\nsecret_key = "hunter2-secret"\nfeed = "hunter2-secret"\n')
    with pytest.raises(ConfigError) as info:
        TickforgeConfig.load(path)
    assert "alpaca.feed" in str(info.value)
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize(
    ("toml", "field"),
    [
        ("[risk]\nmax_order_qty = 0", "risk.max_order_qty"),
        ("[risk]\nmax_order_qty = -1", "risk.max_order_qty"),
        ("[risk]\ninitial_state = 'PANIC'", "risk.initial_state"),
        ("[execution.retry]\njitter_low = 1.2\njitter_high = 1.1", "execution.retry"),
        ("[sim]\nmarket_port = 70000", "sim.market_port"),
        ("[live]\nrehearse_us = -1", "live.rehearse_us"),
        ("[live]\nrehearse_us = 1000001", "live.rehearse_us"),
        ("[risk]\nno_such_limit = 1", "risk.no_such_limit"),
    ],
)
def test_bad_values_name_the_field(tmp_path, toml, field):
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        TickforgeConfig.load(path)


def test_limit_boundary_is_inclusive_of_small_positive():
    assert TickforgeConfig.load(risk={"max_order_qty": 1e-9}).risk.max_order_qty == 1e-9


def test_rehearsal_interval_bounds_are_inclusive():
    assert TickforgeConfig.load(live={"rehearse_us": 0}).live.rehearse_us == 0  # off
    assert TickforgeConfig.load(live={"rehearse_us": 1_000_000}).live.rehearse_us == 1_000_000


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        TickforgeConfig.load(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[risk\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        TickforgeConfig.load(bad)


def test_config_is_frozen():
    cfg = TickforgeConfig.load()
    with pytest.raises(Exception):
        cfg.risk.max_order_qty = 5  # type: ignore[misc]
