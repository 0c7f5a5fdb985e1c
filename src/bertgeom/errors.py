"""One error hierarchy, caught once at the top by the CLI (``error: ...``, exit status 2)."""


class BertgeomError(Exception):
    """Base class of every error bertgeom reports to a user."""


class InputError(BertgeomError):
    """A user-supplied input file or record is missing, empty or malformed."""


class ConfigError(BertgeomError):
    """A configuration value or command-line option is invalid."""


class ArtifactError(BertgeomError):
    """A file written by an earlier stage is missing or inconsistent."""
