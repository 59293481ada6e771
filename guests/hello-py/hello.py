"""The hello driver's logic, free of the component bindings (unit-testable with CPython).

Mirrors ``guests/hello/src/lib.rs``: plugin config ``shell`` (``bash`` or
``fish``, default ``bash``); task config ``greeting`` (default
``Hello, World!``), ``sleep`` (u32 seconds) and ``exit_code`` (u8). The
greeting is passed as a positional argument, never spliced into shell source.
"""

import json

import cty

NAME = "hello-world-example"
VERSION = "0.1.0"
SHELLS = ("bash", "fish")
DEFAULT_SHELL = "bash"
DEFAULT_GREETING = "Hello, World!"

U32_MAX = 2**32 - 1
U8_MAX = 255


class InvalidConfig(Exception):
    """The config is wrong; the message names the field."""


def plugin_config(data):
    """The shell from the agent's plugin config (cty-msgpack bytes)."""
    try:
        attrs = cty.attributes(cty.decode_value(data))
        shell = cty.string(attrs["shell"], "shell") if "shell" in attrs else DEFAULT_SHELL
    except cty.ConfigError as e:
        raise InvalidConfig(str(e)) from None
    if shell not in SHELLS:
        raise InvalidConfig(
            f'field "shell": unsupported shell {cty.rust_debug(shell)}; '
            'expected one of "bash", "fish"'
        )
    return shell


def task_conf(data):
    """(greeting, sleep, exit_code) from a task's config (cty-msgpack bytes)."""
    try:
        attrs = cty.attributes(cty.decode_value(data))
        greeting = (
            cty.string(attrs["greeting"], "greeting") if "greeting" in attrs else DEFAULT_GREETING
        )
        sleep = cty.integer(attrs["sleep"], "sleep", "u32", 0, U32_MAX) if "sleep" in attrs else 0
        exit_code = (
            cty.integer(attrs["exit_code"], "exit_code", "u8", 0, U8_MAX)
            if "exit_code" in attrs
            else 0
        )
    except cty.ConfigError as e:
        raise InvalidConfig(str(e)) from None
    return greeting, sleep, exit_code


def shell_from_config(config):
    """The shell set_config stored (its UTF-8 bytes), or the default."""
    try:
        return bytes(config).decode("utf-8")
    except UnicodeDecodeError:
        return DEFAULT_SHELL


def task_argv(shell, shell_path, greeting, sleep, exit_code):
    """The argv that prints ``greeting``, sleeps and exits, every value a positional parameter."""
    fish = shell == "fish"

    def arg(i):
        return f"$argv[{i}]" if fish else f'"${i}"'

    script = f"printf '%s\\n' {arg(1)}"
    if sleep > 0:
        script += f"; sleep {arg(2)}"
    if exit_code != 0:
        script += f"; exit {arg(3)}"
    argv = [shell_path, "-c", script]
    if not fish:
        argv.append(NAME)  # $0
    argv += [greeting, str(sleep), str(exit_code)]
    return argv


def parse_version(output):
    """``GNU bash, version 5.2.15(1)-release (...)`` -> ``5.2.15(1)-release``."""
    lines = output.splitlines()
    if not lines:
        return None
    parts = lines[0].split("version ")
    if len(parts) < 2:
        return None
    words = parts[1].split()
    return words[0] if words else None


def task_state(shell, env, alloc_dir, task_name, user):
    """The driver state a running task keeps: serde_json's form of the Rust guest's TaskState."""
    state = {
        "shell": shell,
        "env": [[k, v] for k, v in env],
        "cwd": f"{alloc_dir}/{task_name}" if alloc_dir else None,
        "user": user or None,
    }
    return json.dumps(state, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def read_task_state(data):
    """The state ``task_state`` wrote; ValueError when it is not that."""
    state = json.loads(bytes(data).decode("utf-8"))
    if not isinstance(state, dict):
        raise ValueError("expected a JSON object")
    shell = state.get("shell")
    env = state.get("env")
    cwd = state.get("cwd")
    user = state.get("user")
    if not isinstance(shell, str):
        raise ValueError('"shell" is not a string')
    if not isinstance(env, list) or not all(
        isinstance(p, list) and len(p) == 2 and all(isinstance(s, str) for s in p) for p in env
    ):
        raise ValueError('"env" is not a list of [name, value] pairs')
    for key, val in (("cwd", cwd), ("user", user)):
        if val is not None and not isinstance(val, str):
            raise ValueError(f'"{key}" is not a string or null')
    return {"shell": shell, "env": [(k, v) for k, v in env], "cwd": cwd, "user": user}
