"""The one error tree. A user mistake is a `ConfigError`: the CLI prints it as one line,
exit code 2. Every error the simulator raises on purpose is a `SimError`."""


class SimError(Exception):
    """Root of every error the simulator raises on purpose."""


class ConfigError(SimError):
    """Bad input: the message names the field and the problem."""


class CausalityError(SimError):
    """An LP broke its lookahead promise: a message would arrive in its receiver's past."""


class LPFailure(SimError):
    """A logical process (or the actor hosting it) died during the run."""


class CapacityError(SimError):
    """A device was asked to hold more than its memory."""


class ConservationError(SimError):
    """A run broke a conservation law (a request, a token, a message or a byte was lost or
    made up): a bug in the model, never a user mistake."""


class HangError(SimError):
    """A run made no simulated progress for longer than its watchdog allows, or would run
    past any end its workload can need: the message names what was stuck or the parameter."""


class CalibrationError(ConfigError):
    """A calibration file that exists but cannot be read, parsed or used: names the file."""
