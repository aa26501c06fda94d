"""The errors a user can fix (a bad config, dataset, model path, run directory or name), and the one form of a
config check.

`python -m rl.train` prints a UserError as one line and exits 2; anything else is a bug and keeps its traceback.
"""


class UserError(ValueError):
    """Bad input, named in the message: what is wrong and where."""


class ConfigError(UserError):
    """A config key is unknown, has the wrong type, or an invalid value. `key` is the dotted path when known;
    rl.config places it under where its section sits (`algo.loss.` + `clip_low`)."""

    def __init__(self, message: str, key: str = ""):
        sep = "" if message.startswith("=") else " "  # "trainer.sharding" + "=fsdp needs ..."
        super().__init__(f"{key}{sep}{message}" if key else message)
        self.key, self.message = key, message

    def at(self, prefix: str) -> "ConfigError":
        """The same error with its key under `prefix`."""
        return ConfigError(self.message, f"{prefix}.{self.key}" if self.key else prefix) if prefix else self


def require(ok: bool, key: str, message: str) -> None:
    """Raises ConfigError(message, key) unless `ok`: how every config section checks its values in __post_init__."""
    if not ok:
        raise ConfigError(message, key)
