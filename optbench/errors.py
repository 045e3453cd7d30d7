"""The one exception type that the CLI turns into a single line and exit status 2."""


class ConfigError(ValueError):
    """Bad user input: the message names the bad value and the valid choices."""


def choices(values) -> str:
    return ", ".join(str(v) for v in sorted(values))
