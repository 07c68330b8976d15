"""Validation of user-supplied names before they reach a path, a SQL string or a log line.

Symbols follow exchange tickers as Yahoo spells them (``BRK-B``, ``^GSPC``, ``EURUSD=X``,
``BF.B``); versions follow the model store's ``vYYYYMMDD-HHMMSS`` layout.
"""

from __future__ import annotations

import re

from stage2_assets.errors import InvalidNameError

_SYMBOL = re.compile(r"^\^?[A-Z0-9][A-Z0-9=\-]*(\.[A-Z0-9=\-]+)*$")
_VERSION = re.compile(r"^v\d{8}-\d{6}$")
MAX_SYMBOL_LENGTH = 20


def validate_symbol(symbol: object) -> str:
    """Return the symbol upper-cased, or raise InvalidNameError naming it."""
    if not isinstance(symbol, str):
        raise InvalidNameError(f"symbol {symbol!r} is not a string")
    candidate = symbol.strip().upper()
    if not candidate or len(candidate) > MAX_SYMBOL_LENGTH or not _SYMBOL.match(candidate):
        raise InvalidNameError(
            f"symbol {symbol!r} is not a valid ticker: use letters, digits and . - = ^ only "
            f"(at most {MAX_SYMBOL_LENGTH} characters, no path separators or '..')"
        )
    return candidate


def validate_version(version: object) -> str:
    """Return the version name unchanged, or raise InvalidNameError naming it."""
    if not isinstance(version, str) or not _VERSION.match(version):
        raise InvalidNameError(
            f"version {version!r} is not a model version name: expected vYYYYMMDD-HHMMSS, "
            "as listed by `stage2 versions`"
        )
    return version
