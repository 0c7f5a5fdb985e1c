"""One error hierarchy, caught once at the top by the CLI (``error: ...``, exit status 2)."""


class BertgeomError(Exception):
    """Base class of every error bertgeom reports to a user."""


class InputError(BertgeomError):
    """A user-supplied input file or record is missing, empty or malformed."""


class ConfigError(BertgeomError):
    """A configuration value or command-line option is invalid."""


class ArtifactError(BertgeomError):
    """A file written by an earlier stage is missing or inconsistent."""


class OutputError(BertgeomError):
    """An output cannot be written where asked: it would overwrite an input, another run is
    writing it, or its path cannot hold it (a file where a folder is expected, ...)."""


class TrainingError(BertgeomError):
    """Training cannot go on: the loss is no longer finite, or the data cannot train a
    classifier."""
