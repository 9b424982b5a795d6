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
status (2 for flags and sweep specs, 1 otherwise, 130 for Ctrl-C) and one last stderr line
`error: ...` naming the field, file, path or step: every such error is a `gpt2jax.errors.UserError`
(or an OSError from the system, or absl's flag and usage errors). The traceback is shown only with
--debug or GPT2JAX_DEBUG=1. Anything else (a bug) raises as usual. `--help` prints the tool's
docstring and flags and exits 0 (`--helpfull`: every flag).

A `--config` flag takes a path or the name of a shipped config (`--config=tiny`, gpt2jax/configs/).

`call(main, define_flags, argv)` does the same on a private FlagValues and returns the exit status:
tests run a tool in-process with it. The console scripts (`gpt2jax-train`, ...) are the functions at
the bottom, one per tool.
"""

from __future__ import annotations

import difflib
import errno
import importlib
import os
import sys
import traceback

from absl import app, flags

from gpt2jax import configs
from gpt2jax.errors import FlagsError, UserError

__all__ = ["FlagsError", "call", "describe", "parse", "run"]

HELP_FLAGS = ("-h", "-?", "--help", "--helpshort", "--nohelp", "--helpfull")


class _HelpShown(Exception):
    """--help was given and printed: exit 0."""


def define_common_flags(fv) -> None:
    if "debug" not in fv:
        flags.DEFINE_bool("debug", False, "Show the traceback of an error (also GPT2JAX_DEBUG=1).", flag_values=fv)


def user_error_types() -> tuple:
    return (flags.Error, app.UsageError, UserError, OSError)


def _one_line(text: str) -> str:
    return " ".join(line.strip() for line in str(text).splitlines() if line.strip())


def describe(e: BaseException) -> str:
    """The `error: ...` text for a user error."""
    if isinstance(e, OSError) and not isinstance(e, UserError):  # from the system
        if e.errno == errno.ENOSPC:
            return "disk full (no space left on device)" + (f" writing {e.filename}" if e.filename else "")
        if e.strerror and e.filename:
            return f"{e.strerror}: {e.filename}"
    return _one_line(str(e)) or type(e).__name__


def exit_status(e: BaseException) -> int:
    if isinstance(e, KeyboardInterrupt):
        return 130
    if isinstance(e, (flags.Error, app.UsageError)):
        return 2
    return int(getattr(e, "exit_status", 1))


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
        if os.path.isdir(path):
            raise FlagsError(f"--{name}={path} is a directory, not a config file") from e
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


def _with_config_paths(names, argv) -> list[str]:
    """argv with each --NAME (a config flag) value that names a shipped config replaced by its path."""
    out = list(argv)
    for i, arg in enumerate(out[1:], 1):
        if arg == "--":
            break
        for name in names:
            if arg.startswith(f"--{name}="):
                out[i] = f"--{name}=" + configs.resolve(arg.split("=", 1)[1])
            elif arg == f"--{name}" and i + 1 < len(out):
                out[i + 1] = configs.resolve(out[i + 1])
    return out


def _explain_config_failure(name: str, argv, error: Exception) -> str:
    """Why parsing --NAME (a config file) or one of its --NAME.a.b overrides failed."""
    from ml_collections import config_flags

    path = _flag_arg(name, argv)
    if path is None:
        return f"--{name}: {type(error).__name__}: {_one_line(error)}"
    if os.path.isdir(path.split(":", 1)[0]):
        return f"--{name}={path} is a directory, not a config file (a path to a .py file, or one of " \
               f"{', '.join(configs.names())})"
    if not os.path.isfile(path.split(":", 1)[0]):
        return f"--{name}={path}: no such config file (a path, or one of {', '.join(configs.names())})"
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


def _help_text(fv, define_flags, full: bool) -> str:
    if full:
        return fv.get_help()
    module = define_flags.__module__
    doc = (getattr(sys.modules.get(module), "__doc__", None) or "").strip()
    # absl files a flag under the defining module's name, or sys.argv[0] for __main__'s.
    key = sys.argv[0] if module == "__main__" else module
    parts = [doc] if doc else []
    for name in (key, __name__):
        text = fv.module_help(name)
        if text.strip():
            parts.append(text)
    parts.append("Try --helpfull to get a list of all flags.")
    return "\n\n".join(parts) + "\n"


def parse(fv, argv, define_flags=None) -> list[str]:
    """Parse `argv` into `fv`; FlagsError naming the flag (or config file, or config key) on failure.
    With --help (and `define_flags`, whose module's docstring and flags it prints), _HelpShown."""
    if define_flags is not None:
        asked = [a for a in argv[1:] if a in HELP_FLAGS or a.startswith("--help=")]
        if asked:
            print(_help_text(fv, define_flags, full="--helpfull" in asked), end="", flush=True)
            raise _HelpShown()
    argv = _with_config_paths(_config_flag_names(fv), argv)
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
    return exit_status(e)


def _run_main(main, argv, fv) -> int:
    try:
        out = main(argv, fv)
        return int(out or 0)
    except (KeyboardInterrupt, *user_error_types()) as e:
        return _report(e, fv)


def call(main, define_flags, argv) -> int:
    """Run a tool in-process on fresh flags; returns its exit status (as `run` would exit with)."""
    argv = list(argv)
    fv = flags.FlagValues()
    saved = sys.argv
    sys.argv = argv  # ml_collections reads --config.a.b overrides from sys.argv
    try:
        define_flags(fv)
        define_common_flags(fv)
        rest = parse(fv, argv, define_flags)
    except _HelpShown:
        return 0
    except FlagsError as e:
        return _report(e, fv)
    finally:
        sys.argv = saved
    return _run_main(main, rest, fv)


def run(main, define_flags) -> None:
    """The `if __name__ == "__main__":` entry point of a tool: parse, run, exit."""
    fv = flags.FLAGS
    define_flags(fv)
    define_common_flags(fv)

    def parser(argv):
        try:
            return parse(fv, argv, define_flags)
        except _HelpShown:
            sys.exit(0)
        except FlagsError as e:
            sys.exit(_report(e, fv))

    app.run(lambda argv: _run_main(main, argv, fv), flags_parser=parser)


# ---------------------------------------------------------------------------------------- console scripts
def _tool(name: str) -> None:
    module = importlib.import_module(f"gpt2jax.{name}")
    run(module.main, module.define_flags)


def prepare() -> None:
    _tool("prepare")


def train() -> None:
    _tool("train")


def sample() -> None:
    _tool("sample")


def evaluate() -> None:
    _tool("evaluate")


def convert() -> None:
    _tool("convert")


def plan() -> None:
    _tool("plan")


def bench() -> None:
    _tool("bench")


def sweep() -> None:
    _tool("sweep")


def analyze() -> None:
    _tool("analyze")


def detect() -> None:
    _tool("detect")
