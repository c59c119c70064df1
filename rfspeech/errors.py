"""The one exception type the console scripts turn into a one-line error."""


class RFSpeechError(Exception):
    """A user-facing error: bad input, bad config, a missing file.

    Console scripts print ``error: <message>`` (one line, no traceback) and exit with a
    non-zero code. The message must name the file or config key at fault.
    """


class ConfigError(RFSpeechError):
    """A config value that cannot work (hop vs upsampling, segment vs receptive field, ...)."""


class DataError(RFSpeechError):
    """Unreadable or malformed input data (audio, metadata, features)."""
