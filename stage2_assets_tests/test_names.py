import pytest

from stage2_assets.errors import InvalidNameError
from stage2_assets.names import validate_symbol, validate_version


@pytest.mark.parametrize("symbol", ["AAPL", "brk-b", "BF.B", "^GSPC", "EURUSD=X", "A"])
def test_real_tickers_are_accepted_and_upper_cased(symbol):
    assert validate_symbol(symbol) == symbol.upper()


@pytest.mark.parametrize(
    "symbol",
    [
        "../x",
        "..",
        "a/b",
        "a\\b",
        "",
        "X;DROP TABLE raw_bars",
        "A B",
        ".hidden",
        "A..B",
        "X" * 21,
        None,
        3,
    ],
)
def test_hostile_symbols_are_refused(symbol):
    with pytest.raises(InvalidNameError, match="symbol"):
        validate_symbol(symbol)


def test_version_names_follow_the_store_layout():
    assert validate_version("v20250627-120000") == "v20250627-120000"
    for bad in ["../v20250627-120000", "v2025", "production", "v20250627-120000/../../x"]:
        with pytest.raises(InvalidNameError, match="not a model version name"):
            validate_version(bad)
