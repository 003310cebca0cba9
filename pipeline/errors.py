"""One exception family for problems a user can fix (bad params, unreadable inputs, missing models)."""


class DemoireError(Exception):
    """A user-facing problem; its message is one line naming the thing and the fix."""


class ParamsError(DemoireError):
    """params.yaml (or a CLI option) holds a key or value that is not allowed."""


class InputDataError(DemoireError):
    """An input file or folder is missing or cannot be used."""


class ModelNotFoundError(DemoireError):
    """A model path, registered name or alias does not exist."""


class ServiceUnavailableError(DemoireError):
    """A service that may answer again (a tracking server restarting, the registry's lock held): worth a retry,
    unlike the other user errors, which would only fail again."""


def first_line(text: str) -> str:
    """First non-empty line of a library's message, for errors that are one line."""
    return next((line.strip() for line in text.splitlines() if line.strip()), text)


SHOWN_VALUE_CHARS = 80  # a one-line message shows this much of a value: enough to recognise it


def shown_value(text: str, limit: int = SHOWN_VALUE_CHARS) -> str:
    """A value's text (its repr, or JSON) cut to `limit` characters for a one-line message, saying how much is cut."""
    # a YAML alias bomb of 400 bytes or a large request field would otherwise make a message of megabytes
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text) - limit:,} characters more)"
