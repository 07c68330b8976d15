"""Our exception types. Every message names the thing at fault and says what to do next."""


class Stage2Error(Exception):
    """Base class: a failure a person can act on (the CLI prints it without a traceback)."""


class ConfigError(Stage2Error):
    """The configuration file is missing, unreadable, or has a bad key or value."""


class InvalidNameError(Stage2Error, ValueError):
    """A user-supplied name (symbol, version) is not allowed to reach a path or a query."""


class DataSourceError(Stage2Error):
    """A market data source cannot answer, or answered with data we refuse to store."""


class SourceMismatchError(DataSourceError):
    """The warehouse already holds bars from another source; stores never mix sources."""


class QualityGateError(Stage2Error):
    """Too many symbols failed the data-quality suite; validated data was left untouched."""


class ModelStoreError(Stage2Error):
    """A model version is missing, incomplete, tampered with, or cannot be written."""


class TrainingError(Stage2Error):
    """Training cannot proceed on the data it was given (too few rows, one class, NaN)."""
