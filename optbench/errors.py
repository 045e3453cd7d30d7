"""The one exception type that the CLI turns into a single line and exit status 2."""

from __future__ import annotations

import argparse


class ConfigError(ValueError):
    """Bad user input: the message names the bad value and the valid choices."""


def choices(values) -> str:
    return ", ".join(str(v) for v in sorted(values))


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose usage errors are ConfigErrors: one `optbench: error: ...` line, status 2,
    instead of the usage block argparse prints (argparse's message already names the valid choices)."""

    def error(self, message: str):
        verb = self.prog.removeprefix("optbench").strip()
        raise ConfigError(f"{verb}: {message}" if verb else message)
