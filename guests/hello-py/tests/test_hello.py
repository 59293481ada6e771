"""Native tests of the Python hello guest (CPython, no component, no host).

Run with ``guests/hello-py/test.sh``, which puts the guest's sources, the pure
msgpack and the componentize-py bindings for ``wit/`` on the path. The
imports the host provides (``process.lookup_path``, ``spawn``, ...) are
replaced by fakes that record what the guest asked for; what the real host
does with it is covered by the conformance harness run against the built
component.

Expected texts and byte layouts are the Rust hello guest's
(``guests/hello/src/lib.rs``, ``guests/sdk/src/cty.rs``), so the two guests
stay interchangeable.
"""

import json
import random
import unittest

import msgpack

import app
import cty
import hello
from componentize_py_types import Err
from wit_world.imports import process
from wit_world.imports import types as t


def pack(obj):
    return msgpack.packb(obj, use_bin_type=True)


def nomad_task_config(greeting=None, sleep=None, exit_code=None):
    """A task config as Nomad sends it: every attribute, nil when unset, keys sorted."""
    return pack({"exit_code": exit_code, "greeting": greeting, "sleep": sleep})


class ArgvTests(unittest.TestCase):
    def test_greeting_is_an_argument_not_shell_source(self):
        evil = '"; rm -rf / #'
        argv = hello.task_argv("bash", "/usr/bin/bash", evil, 0, 0)
        self.assertEqual(
            argv,
            ["/usr/bin/bash", "-c", "printf '%s\\n' \"$1\"", hello.NAME, evil, "0", "0"],
        )
        self.assertNotIn(evil, argv[2])

    def test_sleep_and_exit_code_extend_the_script(self):
        argv = hello.task_argv("bash", "/bin/bash", "hi", 5, 3)
        self.assertEqual(argv[2], 'printf \'%s\\n\' "$1"; sleep "$2"; exit "$3"')
        self.assertEqual(argv[4:], ["hi", "5", "3"])
        fish = hello.task_argv("fish", "/usr/bin/fish", "hi", 5, 3)
        self.assertEqual(fish[2], "printf '%s\\n' $argv[1]; sleep $argv[2]; exit $argv[3]")
        self.assertEqual(fish[3:], ["hi", "5", "3"])

    def test_versions_parse(self):
        self.assertEqual(
            hello.parse_version("GNU bash, version 5.2.15(1)-release (x86_64-pc-linux-gnu)\n..."),
            "5.2.15(1)-release",
        )
        self.assertEqual(hello.parse_version("fish, version 3.6.0"), "3.6.0")
        self.assertIsNone(hello.parse_version("nonsense"))
        self.assertIsNone(hello.parse_version(""))


class PluginConfigTests(unittest.TestCase):
    def test_unsupported_shell_names_the_field(self):
        # {"shell": "zsh"}, the same bytes as the Rust guest's test.
        data = bytes([0x81, 0xA5]) + b"shell" + bytes([0xA3]) + b"zsh"
        with self.assertRaises(hello.InvalidConfig) as e:
            hello.plugin_config(data)
        self.assertEqual(
            str(e.exception),
            'field "shell": unsupported shell "zsh"; expected one of "bash", "fish"',
        )

    def test_defaults_and_choices(self):
        self.assertEqual(hello.plugin_config(b""), "bash")  # no agent block
        self.assertEqual(hello.plugin_config(pack({"shell": None})), "bash")
        self.assertEqual(hello.plugin_config(pack({"shell": "fish"})), "fish")

    def test_wrong_type_names_the_field(self):
        with self.assertRaises(hello.InvalidConfig) as e:
            hello.plugin_config(pack({"shell": 5}))
        self.assertEqual(str(e.exception), 'field "shell": expected a string, found integer 5')


class TaskConfigTests(unittest.TestCase):
    def test_defaults_when_nomad_sends_nulls(self):
        self.assertEqual(hello.task_conf(nomad_task_config()), ("Hello, World!", 0, 0))
        self.assertEqual(hello.task_conf(b""), ("Hello, World!", 0, 0))
        self.assertEqual(hello.task_conf(b"\x80"), ("Hello, World!", 0, 0))

    def test_numbers_as_cty_sends_them(self):
        # go-cty sends whole numbers as ints, others as floats or decimal text.
        for raw, want in [
            (7, 7),
            (7.0, 7),
            ("7", 7),
            ("7.000", 7),
            ("0.7e1", 7),
            ("700e-2", 7),
            ("+7", 7),
            ("4294967295", 2**32 - 1),
        ]:
            with self.subTest(raw=raw):
                self.assertEqual(hello.task_conf(nomad_task_config(sleep=raw))[1], want)

    def test_vector_number_as_string(self):
        # shared/vectors/cty-msgpack.txt: "count" = "42" travels as int 42 ...
        self.assertEqual(cty.integer(42, "count", "u32", 0, 2**32 - 1), 42)
        # ... and 0.1 as the text "0.1" (a3302e31).
        value = cty.decode_value(bytes.fromhex("a3302e31"))
        self.assertEqual(value, "0.1")
        with self.assertRaises(cty.ConfigError) as e:
            cty.integer(value, "count", "u32", 0, 2**32 - 1)
        self.assertEqual(
            str(e.exception), 'field "count": expected a whole number (u32), found string "0.1"'
        )
        # 1e30 as its digits (bf 31 30 ...): a whole number, out of range.
        big = cty.decode_value(
            bytes.fromhex("bf31303030303030303030303030303030303030303030303030303030303030")
        )
        with self.assertRaises(cty.ConfigError) as e:
            cty.integer(big, "count", "u32", 0, 2**32 - 1)
        self.assertIn("in the range of u32 (0 to 4294967295)", str(e.exception))

    def test_bad_numbers_name_the_field(self):
        cases = [
            ({"sleep": 1.5}, 'field "sleep": expected a whole number (u32), found number 1.5'),
            ({"sleep": "1.5"}, 'field "sleep": expected a whole number (u32), found string "1.5"'),
            ({"sleep": "soon"}, 'field "sleep": expected a number (u32), found string "soon"'),
            ({"sleep": True}, 'field "sleep": expected a number (u32), found boolean true'),
            (
                {"sleep": 2**32},
                'field "sleep": expected a whole number in the range of u32 '
                "(0 to 4294967295), found integer 4294967296",
            ),
            (
                {"exit_code": 256},
                'field "exit_code": expected a whole number in the range of u8 '
                "(0 to 255), found integer 256",
            ),
            (
                {"exit_code": -1},
                'field "exit_code": expected a whole number in the range of u8 '
                "(0 to 255), found integer -1",
            ),
            (
                {"exit_code": "1e400"},
                'field "exit_code": expected a whole number in the range of u8 '
                '(0 to 255), found string "1e400"',
            ),
            (
                {"exit_code": float("inf")},
                'field "exit_code": expected a whole number in the range of u8 '
                "(0 to 255), found number inf",
            ),
            (
                {"exit_code": float("nan")},
                'field "exit_code": expected a whole number (u8), found number nan',
            ),
            ({"greeting": 5}, 'field "greeting": expected a string, found integer 5'),
            (
                {"greeting": [1, 2]},
                'field "greeting": expected a string, found a list of 2 elements',
            ),
        ]
        for conf, want in cases:
            with self.subTest(conf=conf):
                with self.assertRaises(hello.InvalidConfig) as e:
                    hello.task_conf(pack(conf))
                self.assertEqual(str(e.exception), want)

    def test_huge_exponents_are_cheap(self):
        # A whole number with a huge exponent is refused without building it.
        with self.assertRaises(hello.InvalidConfig) as e:
            hello.task_conf(pack({"sleep": "1e999999999"}))
        self.assertIn("in the range of u32", str(e.exception))
        with self.assertRaises(hello.InvalidConfig) as e:
            hello.task_conf(pack({"sleep": "9" * 100000}))
        self.assertIn("in the range of u32", str(e.exception))
        self.assertEqual(hello.task_conf(pack({"sleep": "0" * 100000 + "7"}))[1], 7)
        # Zero stays zero however it is written.
        self.assertEqual(hello.task_conf(pack({"sleep": "0e999999999"}))[1], 0)

    def test_dynamic_wrapper_is_unwrapped(self):
        # shared/vectors: "string as DynamicPseudoType" = [bin("\"string\""), "x"].
        wrapped = bytes.fromhex("92c40822737472696e6722a178")
        data = b"\x81\xa8greeting" + wrapped
        self.assertEqual(hello.task_conf(data)[0], "x")

    def test_unknown_and_ext_values(self):
        data = b"\x81\xa8greeting" + bytes.fromhex("d40000")  # cty unknown
        with self.assertRaises(hello.InvalidConfig) as e:
            hello.task_conf(data)
        self.assertEqual(str(e.exception), 'field "greeting": value is unknown (not yet computed)')
        data = b"\x81\xa8greeting" + bytes.fromhex("d40500")
        with self.assertRaises(hello.InvalidConfig) as e:
            hello.task_conf(data)
        self.assertEqual(str(e.exception), 'field "greeting": unsupported msgpack extension type 5')
        data = b"\x81\xa5sleep" + bytes.fromhex("d6ff00000001")  # msgpack timestamp
        with self.assertRaises(hello.InvalidConfig) as e:
            hello.task_conf(data)
        self.assertEqual(str(e.exception), 'field "sleep": unsupported msgpack extension type -1')

    def test_garbage_is_a_config_error(self):
        cases = [
            (b"\xc1", "invalid msgpack"),
            (b"\x81\xa8greeting", "invalid msgpack"),  # truncated
            (b"\x80\x00", "invalid msgpack: 1 trailing bytes after the value"),
            (b"\x81\xa8greeting\xa2\xff\xfe", "invalid msgpack: a string is not valid UTF-8"),
            (b"\x05", "expected a map of attributes, found integer 5"),
            (b"\xc0", "expected a map of attributes, found null"),
            (b"\x81\x01\x02", "expected a string key, found integer 1"),
            (b"\x81\x91\x01\x02", "invalid msgpack"),  # a list as a map key
            (b"\xdf\xff\xff\xff\xff", "invalid msgpack"),  # claims 4 billion entries
        ]
        for data, want in cases:
            with self.subTest(data=data):
                with self.assertRaises(hello.InvalidConfig) as e:
                    hello.task_conf(data)
                self.assertTrue(str(e.exception).startswith(want), str(e.exception))

    def test_nesting_is_bounded(self):
        deep = b"\x81\xa5extra" + b"\x91" * 200 + b"\xc0"
        with self.assertRaises(hello.InvalidConfig) as e:
            hello.task_conf(deep)
        self.assertEqual(str(e.exception), "invalid msgpack: nested deeper than 128 levels")
        # Within the limit, an unknown attribute is ignored, as serde ignores it.
        ok = b"\x81\xa5extra" + b"\x91" * 100 + b"\xc0"
        self.assertEqual(hello.task_conf(ok), ("Hello, World!", 0, 0))
        # Siblings do not add up to depth.
        wide = b"\x81\xa5extra\xdc\x01\x00" + b"\x91\xc0" * 256
        self.assertEqual(hello.task_conf(wide), ("Hello, World!", 0, 0))

    def test_random_bytes_never_escape_as_other_errors(self):
        rng = random.Random(20261125)
        seeds = [
            nomad_task_config("hi", 5, 3),
            nomad_task_config("x" * 40, "12", 1.0),
            bytes.fromhex("92c40822737472696e6722a178"),
        ]
        for _ in range(3000):
            base = bytearray(rng.choice(seeds))
            for _ in range(rng.randint(1, 4)):
                op = rng.randint(0, 2)
                pos = rng.randrange(len(base) + 1)
                if op == 0 and base:
                    base[min(pos, len(base) - 1)] = rng.randrange(256)
                elif op == 1:
                    base[pos:pos] = bytes([rng.randrange(256)])
                else:
                    del base[pos : pos + rng.randint(1, 3)]
            try:
                greeting, sleep, exit_code = hello.task_conf(bytes(base))
            except hello.InvalidConfig as e:
                self.assertTrue(str(e), base)
                continue
            self.assertIsInstance(greeting, str)
            self.assertTrue(0 <= sleep < 2**32 and 0 <= exit_code < 256)


class TaskStateTests(unittest.TestCase):
    def test_same_json_as_the_rust_guest(self):
        # serde_json's compact form of the Rust guest's TaskState.
        state = hello.task_state("bash", [("A", "1"), ("É", "\n")], "/alloc", "web", "")
        self.assertEqual(
            state,
            '{"shell":"bash","env":[["A","1"],["É","\\n"]],"cwd":"/alloc/web","user":null}'.encode(),
        )
        self.assertEqual(
            hello.task_state("fish", [], "", "web", "nobody"),
            b'{"shell":"fish","env":[],"cwd":null,"user":"nobody"}',
        )

    def test_reads_back_and_refuses_others(self):
        state = hello.read_task_state(hello.task_state("bash", [("A", "1")], "/a", "t", "u"))
        self.assertEqual(state, {"shell": "bash", "env": [("A", "1")], "cwd": "/a/t", "user": "u"})
        for bad in [b"", b"[]", b'{"shell":1,"env":[]}', b'{"shell":"b","env":[["A"]]}', b"\xff"]:
            with self.subTest(bad=bad):
                with self.assertRaises(ValueError):
                    hello.read_task_state(bad)


class FakeHost:
    """Stands in for the host's process imports, recording the calls."""

    def __init__(self, paths, run_result=None, spawn_error=None):
        self.paths = paths
        self.run_result = run_result
        self.spawn_error = spawn_error
        self.spawned = []
        self.signals = []

    def install(self, case):
        for name in ("lookup_path", "run", "spawn", "signal"):
            original = getattr(process, name)
            case.addCleanup(setattr, process, name, original)
            setattr(process, name, getattr(self, name))

    def lookup_path(self, name):
        return self.paths.get(name)

    def run(self, command, timeout_ms):
        if isinstance(self.run_result, Exception):
            raise self.run_result
        return self.run_result

    def spawn(self, spec):
        if self.spawn_error:
            raise self.spawn_error
        self.spawned.append(spec)
        return "proc-1"

    def signal(self, pid, sig):
        self.signals.append((pid, sig))


def task_config(driver_config, **over):
    fields = dict(
        id="a1/web/0",
        name="web",
        alloc_id="a1",
        task_group="g",
        job_name="j",
        job_id="j",
        namespace="default",
        node_name="n",
        node_id="n1",
        driver_config=driver_config,
        env=[("NOMAD_TASK_NAME", "web")],
        user="",
        alloc_dir="/alloc",
        stdout_path="/alloc/logs/out",
        stderr_path="/alloc/logs/err",
        resources=t.Resources(
            cpu_shares=100,
            memory_mb=300,
            memory_max_mb=0,
            memory_limit_bytes=300 << 20,
            cpuset_cpus="",
            ports=[],
        ),
        mounts=[],
        network_namespace=None,
    )
    fields.update(over)
    return t.TaskConfig(**fields)


class DriverTests(unittest.TestCase):
    def setUp(self):
        self.driver = app.Driver()

    def test_identity_and_capabilities(self):
        self.assertEqual(self.driver.info(), t.PluginInfo("hello-world-example", "0.1.0"))
        caps = self.driver.capabilities()
        self.assertTrue(caps.send_signals and caps.exec)
        self.assertEqual(caps.fs_isolation, t.FsIsolation.NONE)
        self.assertFalse(caps.mounts or caps.remote_tasks or caps.must_create_network)

    def test_schemas_match_the_rust_builder(self):
        # Node order of the SDK's Schema::build: parent first, then children in order.
        attr = lambda n, ty: t.SpecNode_Attr(t.AttrSpec(n, ty, False))  # noqa: E731
        self.assertEqual(
            self.driver.config_schema().nodes,
            [
                t.SpecNode_Object([("shell", 1)]),
                t.SpecNode_Default(t.DefaultSpec(2, 3)),
                attr("shell", "string"),
                t.SpecNode_Literal('"bash"'),
            ],
        )
        self.assertEqual(
            self.driver.task_config_schema().nodes,
            [
                t.SpecNode_Object([("greeting", 1), ("sleep", 4), ("exit_code", 5)]),
                t.SpecNode_Default(t.DefaultSpec(2, 3)),
                attr("greeting", "string"),
                t.SpecNode_Literal('"Hello, World!"'),
                attr("sleep", "number"),
                attr("exit_code", "number"),
            ],
        )

    def test_set_config_errors_are_invalid_config(self):
        self.assertEqual(self.driver.set_config(pack({"shell": "fish"}), None), b"fish")
        with self.assertRaises(Err) as e:
            self.driver.set_config(pack({"shell": "zsh"}), None)
        self.assertIsInstance(e.exception.value, t.DriverError_InvalidConfig)

    def test_start_task_spawns_the_argv(self):
        host = FakeHost({"bash": "/usr/bin/bash"})
        host.install(self)
        started = self.driver.start_task(b"bash", task_config(nomad_task_config("hi", 2, 3)))
        self.assertEqual(started.main_process, "proc-1")
        (spec,) = host.spawned
        self.assertEqual(spec.command.program, "/usr/bin/bash")
        self.assertEqual(
            spec.command.args,
            hello.task_argv("bash", "/usr/bin/bash", "hi", 2, 3)[1:],
        )
        self.assertEqual(spec.command.env, [("NOMAD_TASK_NAME", "web")])
        self.assertEqual(spec.command.cwd, "/alloc/web")
        self.assertIsNone(spec.command.user)
        self.assertEqual(
            (spec.stdout, spec.stderr), (process.Output.TASK_STDOUT, process.Output.TASK_STDERR)
        )
        self.assertEqual(spec.limits, process.Limits(300 << 20, 100))
        self.assertEqual(
            json.loads(started.driver_state),
            {
                "shell": "bash",
                "env": [["NOMAD_TASK_NAME", "web"]],
                "cwd": "/alloc/web",
                "user": None,
            },
        )

    def test_start_task_refusals(self):
        host = FakeHost({})
        host.install(self)
        with self.assertRaises(Err) as e:
            self.driver.start_task(b"bash", task_config(nomad_task_config()))
        self.assertEqual(
            e.exception.value,
            t.DriverError_Fatal('shell "bash" was not found on the host\'s PATH'),
        )
        with self.assertRaises(Err) as e:
            self.driver.start_task(b"bash", task_config(pack({"greeting": 5})))
        self.assertEqual(
            e.exception.value,
            t.DriverError_InvalidConfig('field "greeting": expected a string, found integer 5'),
        )
        host.paths["bash"] = "/usr/bin/bash"
        host.spawn_error = Err(process.ProcessError_NotGranted("grant it with --allow-exec"))
        with self.assertRaises(Err) as e:
            self.driver.start_task(b"bash", task_config(nomad_task_config()))
        self.assertEqual(e.exception.value, t.DriverError_Fatal("grant it with --allow-exec"))
        host.spawn_error = Err(process.ProcessError_Failed("fork failed"))
        with self.assertRaises(Err) as e:
            self.driver.start_task(b"bash", task_config(nomad_task_config()))
        self.assertEqual(e.exception.value, t.DriverError_Temporary("fork failed"))

    def test_fingerprint(self):
        ok = process.RunOutput(
            t.ExitStatus(0, 0, False), b"GNU bash, version 5.2.15(1)-release (x86_64)\n", b""
        )
        FakeHost({"bash": "/usr/bin/bash"}, run_result=ok).install(self)
        report = self.driver.fingerprint(b"bash")
        self.assertEqual(report.health, t.Health.HEALTHY)
        self.assertEqual(
            [(a.key, a.value.value) for a in report.attributes],
            [("driver.hello.shell", "bash"), ("driver.hello.shell_version", "5.2.15(1)-release")],
        )
        report = self.driver.fingerprint(b"fish")
        self.assertEqual(
            (report.health, report.description), (t.Health.UNDETECTED, "shell fish not found")
        )
        FakeHost(
            {"bash": "/usr/bin/bash"},
            run_result=Err(
                process.ProcessError_NotGranted("not granted: --allow-exec /usr/bin/bash")
            ),
        ).install(self)
        report = self.driver.fingerprint(b"bash")
        self.assertEqual(report.health, t.Health.UNHEALTHY)
        self.assertIn("--allow-exec", report.description)
        self.assertEqual(report.attributes, [])
        FakeHost({"bash": "/usr/bin/bash"}, run_result=RuntimeError("boom")).install(self)
        report = self.driver.fingerprint(b"bash")
        self.assertEqual(
            (report.health, report.description),
            (t.Health.UNHEALTHY, "fingerprint failed: RuntimeError: boom"),
        )

    def test_exec_and_signals(self):
        host = FakeHost({"bash": "/usr/bin/bash", "ls": "/usr/bin/ls"})
        host.install(self)
        state = hello.task_state("bash", [("A", "1")], "/alloc", "web", "nobody")
        ref = t.TaskRef("a1/web/0", "web", "a1", state, "proc-1")
        cmd = self.driver.exec_command(b"bash", ref, ["ls", "-l"])
        self.assertEqual(
            cmd, process.Command("/usr/bin/ls", ["-l"], [("A", "1")], "/alloc/web", "nobody")
        )
        with self.assertRaises(Err) as e:
            self.driver.exec_command(b"bash", ref, [])
        self.assertEqual(
            e.exception.value, t.DriverError_InvalidConfig("exec: the command is empty")
        )
        with self.assertRaises(Err) as e:
            self.driver.exec_command(b"bash", ref, ["nope"])
        self.assertEqual(
            e.exception.value, t.DriverError_InvalidConfig('exec: "nope" was not found')
        )
        broken = t.TaskRef("a1/web/0", "web", "a1", b"{", "proc-1")
        with self.assertRaises(Err) as e:
            self.driver.exec_command(b"bash", broken, ["ls"])
        self.assertIsInstance(e.exception.value, t.DriverError_Fatal)
        self.assertIn("task state is unreadable", e.exception.value.value)

        self.driver.stop_task(b"bash", ref, "", 5000)
        self.driver.signal_task(b"bash", ref, "SIGHUP")
        self.assertEqual(host.signals, [("proc-1", "SIGINT"), ("proc-1", "SIGHUP")])
        no_proc = t.TaskRef("a1/web/0", "web", "a1", state, None)
        with self.assertRaises(Err) as e:
            self.driver.signal_task(b"bash", no_proc, "SIGHUP")
        self.assertIsInstance(e.exception.value, t.DriverError_Unsupported)

    def test_exit_stats_destroy(self):
        ref = t.TaskRef("a1/web/0", "web", "a1", b"{}", "proc-1")
        self.assertEqual(
            self.driver.task_exited(b"bash", ref, t.ExitStatus(-1, 9, True)),
            t.ExitResult(-1, 9, True, None),
        )
        self.assertIsNone(self.driver.task_stats(b"bash", ref))
        self.assertIsNone(self.driver.destroy_task(b"bash", ref))
        with self.assertRaises(Err) as e:
            self.driver.poll_task(b"bash", ref)
        self.assertIsInstance(e.exception.value, t.DriverError_Unsupported)


if __name__ == "__main__":
    unittest.main()
