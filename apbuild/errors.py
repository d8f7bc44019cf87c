"""The errors apbuild shows to users: each one says what is wrong and where."""

from __future__ import annotations

from pathlib import Path


class ApbuildError(Exception):
    """A failure the CLI reports as one line (exit 1), without a traceback."""

    exit_code = 1


class ConfigError(ApbuildError):
    """A definition file is wrong: names the file, the key and what is allowed (exit 2)."""

    exit_code = 2

    def __init__(self, file: Path | str, key: str, message: str) -> None:
        self.file = Path(file)
        self.key = key
        self.message = message
        where = f"{self.file}: {key}: " if key else f"{self.file}: "
        super().__init__(where + message)


class ConfigErrors(ConfigError):
    """Several mistakes in definitions, reported together: one 'FILE: KEY: message' line
    each (the CLI prints 'error: ' before every line), so one run shows all of them."""

    def __init__(self, errors: list[ConfigError]) -> None:
        first = errors[0]
        super().__init__(first.file, first.key, first.message)
        self.errors = errors
        self.args = ("\nerror: ".join(str(e) for e in errors),)

    @staticmethod
    def of(errors: list[ConfigError]) -> ConfigError:
        """One error as itself, several as one ConfigErrors (nested ones flattened)."""
        flat = [e for err in errors for e in getattr(err, "errors", [err])]
        return flat[0] if len(flat) == 1 else ConfigErrors(flat)


class MissingToolError(ApbuildError):
    """A host program is not installed; names the Debian package that provides it."""

    def __init__(self, tool: str, package: str) -> None:
        self.tool = tool
        self.package = package
        super().__init__(
            f"host tool '{tool}' is missing: install it with 'apt-get install {package}'"
        )


class CommandError(ApbuildError):
    """A subprocess failed; carries its command line and what it wrote to stderr."""

    def __init__(self, argv: list[str], returncode: int, stderr: str) -> None:
        self.argv = argv
        self.returncode = returncode
        self.stderr = stderr
        import shlex

        if returncode < 0:
            import signal

            how = f"was killed by {signal.Signals(-returncode).name}"
        elif returncode == 127:
            how = "was not found (exit 127)"
        else:
            how = f"returned non-zero exit code {returncode}"
        tail = stderr.strip().splitlines()[-15:]
        detail = ("\n  " + "\n  ".join(tail)) if tail else ""
        super().__init__(f'"{shlex.join(argv)}" {how}{detail}')


class IntegrityError(ApbuildError):
    """A download or cached artifact does not match its expected hash or signature."""


class CommandTimeout(ApbuildError):
    """A subprocess ran past its deadline and was killed."""

    def __init__(self, argv: list[str], timeout: float) -> None:
        import shlex

        self.argv = argv
        self.timeout = timeout
        super().__init__(f'"{shlex.join(argv)}" did not finish within {timeout:g} s and was killed')
