"""The errors a user can cause, in one leaf module (it imports nothing of the package).

Every one subclasses `UserError`, which `gpt2jax.cli.run` turns into one last stderr line `error: ...`
and a non-zero exit status, with no traceback (unless --debug). The message names the field, file,
path or step and, where there is one, the fix. Each class also keeps the builtin base that callers
catch (a missing data file is a FileNotFoundError, a bad config value a ValueError).

The modules that raise them re-export their own (`from gpt2jax.config import ConfigError` works).
"""

from __future__ import annotations


class UserError(Exception):
    """Something the user can fix: a flag, a config value, a file, a path, a run's state."""

    exit_status = 1  # of the command it ends (gpt2jax.cli)


class FlagsError(UserError):
    """The command line cannot be parsed; the message names the flag."""

    exit_status = 2


class ConfigError(UserError, ValueError):
    """A config field has a value that cannot work. The message names the field."""


class DataError(UserError, ValueError):
    """Bad or empty input data."""


class DataNotFoundError(DataError, FileNotFoundError):
    """Input files, archives or prepared data are missing."""


class CheckpointError(UserError, ValueError):
    """A checkpoint is missing or does not fit what is asked of it."""


class CorruptCheckpointError(CheckpointError):
    """A committed checkpoint cannot be read back intact (truncated, corrupted or missing files)."""


class ConversionError(UserError, ValueError):
    """A checkpoint cannot be converted; the message names the file, field or tensor."""


class TokenizerFileError(UserError, ValueError):
    """A vocabulary file is missing or does not have the expected sha256."""


class LockError(UserError, RuntimeError):
    """Another writer holds the workdir; the message names it and what to do."""


class NonFiniteError(UserError, FloatingPointError):
    """A non-finite loss or gradient with train.nonfinite='stop'. `step` is the bad update's step."""

    def __init__(self, message: str, step: int):
        super().__init__(message)
        self.step = step


class MissingTaskData(UserError, FileNotFoundError):
    """A task's data file is not in --tasks_dir. The message says what to download and where to put it."""


class TaskError(UserError, ValueError):
    """An unknown task name, or a task file that cannot be read (the message names file and line)."""


class TaskDataError(UserError, RuntimeError):
    """An lm-eval task's data could not be loaded. The message names the task."""


class MissingExtra(UserError, ImportError):
    """An optional dependency a setting needs is not installed; the message says how to install it."""


class WandbMissing(MissingExtra):
    """config.train.wandb.project is set but wandb is not installed."""


class LmEvalMissing(MissingExtra):
    """lm-evaluation-harness is not installed. The message says how to install it."""


class SweepError(UserError, ValueError):
    """A sweep spec, run or launcher setting that cannot work. The message names it."""

    exit_status = 2


class AnalysisError(UserError):
    """Runs or tables that cannot be analysed (a path, a file's contents). The message names the file."""


class DetectionError(UserError, ValueError):
    """A text that cannot be scored (empty, one token, a bad field) or two models that cannot score it
    together (different tokenizers). The message names the text (file and line) or the models."""
