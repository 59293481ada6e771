"""HashiCorp's skeleton "hello" driver as a WebAssembly component written in Python.

The same driver as ``guests/hello`` (Rust), built with componentize-py against
the same WIT world (``nomad:driver@0.1.0``, ``driver-guest``): the world is
language-neutral, and the host cannot tell the two apart except by size and
speed. ``componentize-py`` looks for the export ``driver`` as the class
``Driver`` in this module.

The host calls every export on a fresh instance: nothing is kept between
calls. What must be remembered travels in the bytes ``set_config`` returns
(the shell name) and in ``driver_state`` (JSON, the same as the Rust guest's).
"""

from typing import List, Optional

import cty
import hello
from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import process
from wit_world.imports.process import (
    Command,
    Limits,
    Output,
    ProcessError_Failed,
    ProcessError_NotFound,
    ProcessError_NotGranted,
    SpawnSpec,
)
from wit_world.imports.types import (
    AttrSpec,
    Attribute,
    AttributeValue_Text,
    DefaultSpec,
    DriverCapabilities,
    DriverError_Fatal,
    DriverError_InvalidConfig,
    DriverError_Temporary,
    DriverError_Unsupported,
    ExitResult,
    ExitStatus,
    FingerprintReport,
    FsIsolation,
    Health,
    NomadConfig,
    PluginInfo,
    Spec,
    SpecNode_Attr,
    SpecNode_Default,
    SpecNode_Literal,
    SpecNode_Object,
    TaskConfig,
    TaskRef,
    TaskStarted,
    TaskUsage,
)

# The signal a stop uses when the job names none (as Nomad's own drivers).
DEFAULT_STOP_SIGNAL = "SIGINT"


def process_error(e):
    """A host process error as a driver error (as the Rust SDK maps them)."""
    if isinstance(e, (ProcessError_NotGranted, ProcessError_NotFound)):
        return DriverError_Fatal(e.value)
    if isinstance(e, ProcessError_Failed):
        return DriverError_Temporary(e.value)
    return DriverError_Fatal(str(e))


def defaulted_attr(name, type_expr, default_literal, nodes):
    """Appends `default(attr, literal)` for ``name``; returns the default node's index.

    Nodes are laid out as the Rust SDK's schema builder lays them out: the
    default node, then its primary attr, then the literal.
    """
    at = len(nodes)
    nodes.append(SpecNode_Default(DefaultSpec(primary=at + 1, default=at + 2)))
    nodes.append(SpecNode_Attr(AttrSpec(name=name, type_expr=type_expr, required=False)))
    nodes.append(SpecNode_Literal(default_literal))
    return at


def plain_attr(name, type_expr, nodes):
    at = len(nodes)
    nodes.append(SpecNode_Attr(AttrSpec(name=name, type_expr=type_expr, required=False)))
    return at


def lookup_shell(shell):
    path = process.lookup_path(shell)
    if path is None:
        raise Err(
            DriverError_Fatal(f"shell {cty.rust_debug(shell)} was not found on the host's PATH")
        )
    return path


def guarded(call):
    """Turns an unexpected exception into a driver error instead of a trap."""

    def wrapper(*args):
        try:
            return call(*args)
        except Err:
            raise
        except hello.InvalidConfig as e:
            raise Err(DriverError_InvalidConfig(str(e))) from None
        except Exception as e:  # a bug in this guest: say so, do not trap
            raise Err(DriverError_Fatal(f"{call.__name__}: {type(e).__name__}: {e}")) from None

    wrapper.__name__ = call.__name__
    return wrapper


class Driver(exports.Driver):
    def info(self) -> PluginInfo:
        return PluginInfo(name=hello.NAME, version=hello.VERSION)

    def config_schema(self) -> Optional[Spec]:
        nodes: list = [None]
        nodes[0] = SpecNode_Object([("shell", defaulted_attr("shell", "string", '"bash"', nodes))])
        return Spec(nodes=nodes)

    def task_config_schema(self) -> Spec:
        nodes: list = [None]
        fields = [
            ("greeting", defaulted_attr("greeting", "string", '"Hello, World!"', nodes)),
            ("sleep", plain_attr("sleep", "number", nodes)),
            ("exit_code", plain_attr("exit_code", "number", nodes)),
        ]
        nodes[0] = SpecNode_Object(fields)
        return Spec(nodes=nodes)

    def capabilities(self) -> DriverCapabilities:
        return DriverCapabilities(
            send_signals=True,
            exec=True,
            fs_isolation=FsIsolation.NONE,
            network_modes=[],
            must_create_network=False,
            mounts=False,
            remote_tasks=False,
            disable_log_collection=False,
        )

    @guarded
    def set_config(self, msgpack: bytes, nomad: Optional[NomadConfig]) -> bytes:
        return hello.plugin_config(msgpack).encode("utf-8")

    def fingerprint(self, config: bytes) -> FingerprintReport:
        try:
            return self._fingerprint(config)
        except Exception as e:  # a bug in this guest: report it, do not trap
            return FingerprintReport(
                Health.UNHEALTHY, f"fingerprint failed: {type(e).__name__}: {e}", []
            )

    def _fingerprint(self, config: bytes) -> FingerprintReport:
        shell = hello.shell_from_config(config)
        path = process.lookup_path(shell)
        if path is None:
            return FingerprintReport(Health.UNDETECTED, f"shell {shell} not found", [])
        cmd = Command(program=path, args=["--version"], env=[], cwd=None, user=None)
        try:
            out = process.run(cmd, 5000)
        except Err as e:
            return FingerprintReport(
                Health.UNHEALTHY, f"cannot run {shell}: {process_error(e.value).value}", []
            )
        if out.status.code != 0:
            return FingerprintReport(
                Health.UNHEALTHY, f"{shell} --version exited with {out.status.code}", []
            )
        version = hello.parse_version(bytes(out.stdout).decode("utf-8", "replace")) or ""
        return FingerprintReport(
            Health.HEALTHY,
            "ready",
            [
                Attribute("driver.hello.shell", AttributeValue_Text(shell), ""),
                Attribute("driver.hello.shell_version", AttributeValue_Text(version), ""),
            ],
        )

    @guarded
    def start_task(self, config: bytes, task: TaskConfig) -> TaskStarted:
        shell = hello.shell_from_config(config)
        greeting, sleep, exit_code = hello.task_conf(task.driver_config)
        path = lookup_shell(shell)
        state = hello.task_state(shell, task.env, task.alloc_dir, task.name, task.user)
        argv = hello.task_argv(shell, path, greeting, sleep, exit_code)
        spec = SpawnSpec(
            command=Command(
                program=path,
                args=argv[1:],
                env=list(task.env),
                cwd=f"{task.alloc_dir}/{task.name}" if task.alloc_dir else None,
                user=task.user or None,
            ),
            stdout=Output.TASK_STDOUT,
            stderr=Output.TASK_STDERR,
            limits=Limits(
                memory_max_bytes=max(task.resources.memory_limit_bytes, 0),
                cpu_shares=max(task.resources.cpu_shares, 0),
            ),
        )
        try:
            pid = process.spawn(spec)
        except Err as e:
            raise Err(process_error(e.value)) from None
        return TaskStarted(driver_state=state, main_process=pid, network_override=None)

    def task_exited(self, config: bytes, task: TaskRef, status: ExitStatus) -> ExitResult:
        return ExitResult(
            exit_code=status.code, signal=status.signal, oom_killed=status.oom_killed, err=None
        )

    @guarded
    def stop_task(self, config: bytes, task: TaskRef, signal: str, timeout_ms: int) -> None:
        # The host kills what is left once the kill timeout (timeout_ms) has
        # passed, so a signal is all a process-based driver sends.
        self.signal_task(config, task, signal or DEFAULT_STOP_SIGNAL)

    @guarded
    def signal_task(self, config: bytes, task: TaskRef, signal: str) -> None:
        if task.main_process is None:
            raise Err(DriverError_Unsupported("this task has no process to signal"))
        try:
            process.signal(task.main_process, signal)
        except Err as e:
            raise Err(process_error(e.value)) from None

    @guarded
    def exec_command(self, config: bytes, task: TaskRef, command: List[str]) -> Command:
        """Runs the command on the host in the task's environment, directory and user."""
        try:
            state = hello.read_task_state(task.driver_state)
        except ValueError as e:  # json.JSONDecodeError and UnicodeDecodeError too
            raise Err(DriverError_Fatal(f"task state is unreadable: {e}")) from None
        if not command:
            raise Err(DriverError_InvalidConfig("exec: the command is empty"))
        program = process.lookup_path(command[0])
        if program is None:
            raise Err(
                DriverError_InvalidConfig(f"exec: {cty.rust_debug(command[0])} was not found")
            )
        return Command(
            program=program,
            args=list(command[1:]),
            env=state["env"],
            cwd=state["cwd"],
            user=state["user"],
        )

    @guarded
    def poll_task(self, config: bytes, task: TaskRef):
        # Every hello task has a main process, which the host waits on.
        raise Err(
            DriverError_Unsupported("this driver does not follow tasks without a main process")
        )

    @guarded
    def task_stats(self, config: bytes, task: TaskRef) -> Optional[TaskUsage]:
        # The task is a host process tree: the host measures it.
        return None

    @guarded
    def destroy_task(self, config: bytes, task: TaskRef) -> None:
        return None
