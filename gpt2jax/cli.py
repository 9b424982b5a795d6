"""One way for every command-line tool to define its flags, run, and end.

Each tool defines its flags on a FlagValues it is given and reads them back from it:

    def define_flags(fv):
        flags.DEFINE_string("workdir", None, "Run directory.", flag_values=fv)

    def main(argv, fv):
        ...

    if __name__ == "__main__":
        cli.run(main, define_flags)

`run` parses the command line and calls `main`. A mistake a user can make -- a bad flag, a missing or
broken --config file, a misspelt config key, a bad config value, missing or malformed data, a wrong
checkpoint, a full disk, another run holding the workdir -- ends the command with a non-zero exit
status (2 for flags, 1 otherwise, 130 for Ctrl-C) and one last stderr line `error: ...` naming the
field, file, path or step. The traceback is shown only with --debug or GPT2JAX_DEBUG=1. Anything else
(a bug) raises as usual.

`call(main, define_flags, argv)` does the same on a private FlagValues and returns the exit status:
tests run a tool in-process with it. A tool with error classes of its own (e.g. an experiment
runner's) passes them as `run(main, define_flags, user_errors=(SweepError,))`.
"""

from __future__ import annotations

import difflib
import errno
import os
import sys
import traceback

from absl import app, flags

# (module, class) of the errors a user can cause. Looked up only in modules already imported (an
# exception of a class can only be raised once its module is loaded), so importing this module stays
# cheap and imports no JAX (plan.py must set XLA_FLAGS before JAX is imported).
USER_ERRORS = (
    ("gpt2jax.config", "ConfigError"),
    ("gpt2jax.data.sources", "DataError"),
    ("gpt2jax.checkpoint", "CheckpointError"),
    ("gpt2jax.convert", "ConversionError"),
    ("gpt2jax.eval.tasks", "MissingTaskData"),
    ("gpt2jax.eval.tasks", "TaskError"),
    ("gpt2jax.tokenizer", "TokenizerFileError"),
    ("gpt2jax.lock", "LockError"),
    ("gpt2jax.train", "NonFiniteError"),
)


class FlagsError(Exception):
    """The command line cannot be parsed; the message names the flag."""


def define_common_flags(fv) -> None:
    if "debug" not in fv:
        flags.DEFINE_bool("debug", False, "Show the traceback of an error (also GPT2JAX_DEBUG=1).", flag_values=fv)


def user_error_types() -> tuple:
    out = [flags.Error, app.UsageError, FlagsError, OSError]
    for module, name in USER_ERRORS:
        mod = sys.modules.get(module)
        if mod is not None and hasattr(mod, name):
            out.append(getattr(mod, name))
    return tuple(out)


def _one_line(text: str) -> str:
    return " ".join(line.strip() for line in str(text).splitlines() if line.strip())


def describe(e: BaseException) -> str:
    """The `error: ...` text for a user error."""
    if isinstance(e, OSError) and not type(e).__module__.startswith("gpt2jax"):  # from the system
        if e.errno == errno.ENOSPC:
            return "disk full (no space left on device)" + (f" writing {e.filename}" if e.filename else "")
        if e.strerror and e.filename:
            return f"{e.strerror}: {e.filename}"
    return _one_line(str(e)) or type(e).__name__


def _debug(fv) -> bool:
    if os.environ.get("GPT2JAX_DEBUG", "") not in ("", "0"):
        return True
    try:
        return bool(fv["debug"].value)
    except (KeyError, AttributeError):
        return False


# ---------------------------------------------------------------------------------------- parsing
def _config_flag_names(fv) -> list[str]:
    from ml_collections.config_flags.config_flags import is_config_flag

    return [name for name in fv if is_config_flag(fv[name])]


def _check_config_file(fv, name: str) -> None:
    """A --config file that does not exist or does not load (ml_collections defers that error)."""
    from ml_collections import config_flags

    value = fv[name].value
    if value is None:
        return
    try:
        value.keys()
    except Exception as e:  # the library's stand-in for a config that failed to load
        path = config_flags.get_config_filename(fv[name])
        if not os.path.isfile(path):
            raise FlagsError(f"--{name}={path}: no such config file") from e
        raise FlagsError(f"--{name}={path}: cannot load it ({_one_line(e)})") from e


def _flag_arg(name: str, argv) -> str | None:
    """The value given to --NAME in argv (the last one), or None."""
    value = None
    for i, arg in enumerate(argv[1:], 1):
        if arg.startswith(f"--{name}="):
            value = arg.split("=", 1)[1]
        elif arg == f"--{name}" and i + 1 < len(argv):
            value = argv[i + 1]
    return value


def _explain_config_failure(name: str, argv, error: Exception) -> str:
    """Why parsing --NAME (a config file) or one of its --NAME.a.b overrides failed."""
    from ml_collections import config_flags

    path = _flag_arg(name, argv)
    if path is None:
        return f"--{name}: {type(error).__name__}: {_one_line(error)}"
    if not os.path.isfile(path.split(":", 1)[0]):
        return f"--{name}={path}: no such config file"
    alone = flags.FlagValues()  # the file without the overrides: does it load?
    alone_argv = ["prog", f"--{name}={path}"]
    config_flags.DEFINE_config_file(name, None, "", flag_values=alone, lock_config=True, sys_argv=alone_argv)
    try:
        alone(alone_argv)
        config = alone[name].value
        config.keys()
    except Exception as e:
        return f"--{name}={path}: cannot load it ({type(e).__name__}: {_one_line(e)})"
    for arg in argv[1:]:
        if not arg.startswith(f"--{name}."):
            continue
        key = arg[len(name) + 3:].split("=", 1)[0]
        node, done = config, []
        for part in key.split("."):
            keys = list(node.keys()) if hasattr(node, "keys") else []
            if part not in keys:
                where = ".".join([name] + done)
                hint = difflib.get_close_matches(part, keys, n=1)
                msg = f"--{name}.{key}: {where} has no field {part!r}"
                return msg + (f" (did you mean {'.'.join([name] + done + [hint[0]])!r}?)" if hint else "")
            node, done = node[part], done + [part]
    return f"--{name}={path}: {type(error).__name__}: {_one_line(error)}"


def parse(fv, argv) -> list[str]:
    """Parse `argv` into `fv`; FlagsError naming the flag (or config file, or config key) on failure."""
    try:
        rest = fv(argv)
    except flags.Error as e:
        raise FlagsError(_one_line(e)) from e
    except Exception as e:  # raised by a config file or a --config.key override while parsing
        names = [n for n in _config_flag_names(fv) if any(a.startswith(f"--{n}") for a in argv[1:])]
        if not names:
            raise
        raise FlagsError(_explain_config_failure(names[0], argv, e)) from e
    for name in _config_flag_names(fv):
        _check_config_file(fv, name)
    return rest


# ---------------------------------------------------------------------------------------- running
def _report(e: BaseException, fv) -> int:
    if _debug(fv):
        traceback.print_exception(e)
    if isinstance(e, KeyboardInterrupt):
        print("error: interrupted", file=sys.stderr, flush=True)
        return 130
    print(f"error: {describe(e)}", file=sys.stderr, flush=True)
    return 2 if isinstance(e, (flags.Error, app.UsageError, FlagsError)) else 1


def _run_main(main, argv, fv, user_errors=()) -> int:
    try:
        out = main(argv, fv)
        return int(out or 0)
    except (KeyboardInterrupt, *user_error_types(), *user_errors) as e:
        return _report(e, fv)


def call(main, define_flags, argv, *, user_errors=()) -> int:
    """Run a tool in-process on fresh flags; returns its exit status (as `run` would exit with)."""
    argv = list(argv)
    fv = flags.FlagValues()
    saved = sys.argv
    sys.argv = argv  # ml_collections reads --config.a.b overrides from sys.argv
    try:
        define_flags(fv)
        define_common_flags(fv)
        rest = parse(fv, argv)
    except FlagsError as e:
        return _report(e, fv)
    finally:
        sys.argv = saved
    return _run_main(main, rest, fv, tuple(user_errors))


def run(main, define_flags, *, user_errors=()) -> None:
    """The `if __name__ == "__main__":` entry point of a tool: parse, run, exit."""
    fv = flags.FLAGS
    define_flags(fv)
    define_common_flags(fv)

    def parser(argv):
        try:
            return parse(fv, argv)
        except FlagsError as e:
            sys.exit(_report(e, fv))

    app.run(lambda argv: _run_main(main, argv, fv, tuple(user_errors)), flags_parser=parser)
