"""Errors a user can fix. The CLI prints them as one line and exits with code 2."""


class UserError(Exception):
    """Bad input from the user: the message names the problem and the fix."""


class ConfigError(UserError):
    """An unknown config key, a value of the wrong type, or an unknown preset."""


class EnvError(UserError):
    """An environment that cannot be made, or whose spaces Reverie cannot handle."""


class CheckpointError(UserError):
    """A checkpoint that is missing, corrupt, or does not match the config."""


class TrainingError(Exception):
    """A run that cannot go on (e.g. updates keep producing NaN). The CLI prints it as one line
    and exits with code 1; checkpoints written before it are intact."""
