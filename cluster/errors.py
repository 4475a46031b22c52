"""Errors. A user mistake is a `ConfigError`: the CLI prints it as one line, exit code 2."""


class SimError(Exception):
    """Root of every error the simulator raises on purpose."""


class ConfigError(SimError):
    """Bad input: the message names the field and the problem."""


class CausalityError(SimError):
    """An LP broke its lookahead promise: a message would arrive in its receiver's past."""


class LPFailure(SimError):
    """A logical process (or the actor hosting it) died during the run."""
