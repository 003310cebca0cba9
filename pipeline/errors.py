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
