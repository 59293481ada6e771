// Command rkt is a RECORDING STAND-IN for CoreOS rkt's CLI (1.x), used by
// the conformance tests (tests/conformance/rkt_test.go). It is NOT rkt: it
// fetches no image and runs no pod. rkt is abandoned upstream and its
// binary is not obtainable here. What it does:
//
//   - checks its argv against the flags rkt 1.30 documents for the
//     subcommands the driver uses (global flags before the subcommand,
//     `--flag=value` forms, value formats of --volume, --mount, --port,
//     --set-env, --dns, --insecure-options); anything else exits 254 with
//     a message on stderr;
//   - appends every invocation (argv and environment) as one JSON line to
//     calls.jsonl beside its own executable;
//   - `prepare` prints a pod UUID and remembers the pod under state/;
//     `run-prepared <uuid>` runs until signalled (or as script.json says),
//     printing what it would run; `enter <uuid> cmd...` runs cmd on this
//     host while the pod "runs";
//   - follows script.json beside the executable: fail a subcommand with an
//     exit code and stderr, end run-prepared after run_ms with an exit
//     code, report another version.
//
// Built by the tests with the Go toolchain (standard library only).
package main

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

type failure struct {
	Exit   int    `json:"exit"`
	Stderr string `json:"stderr"`
}

type script struct {
	Fail    map[string]failure `json:"fail"`
	Version string             `json:"version"`
	Run     struct {
		RunMs int `json:"run_ms"`
		Exit  int `json:"exit"`
	} `json:"run"`
}

var (
	home, stateDir string
	scr            script
)

func die(format string, a ...interface{}) {
	fmt.Fprintf(os.Stderr, "rkt: "+format+"\n", a...)
	os.Exit(254)
}

// flagKind: 'b' boolean (--f or --f=true|false), 's' string, 'r' repeatable string.
type flagSet map[string]byte

var globalFlags = flagSet{
	"insecure-options": 's', "debug": 'b', "dir": 's', "local-config": 's',
	"system-config": 's', "user-config": 's', "trust-keys-from-https": 'b',
}

// parseFlags reads `--name=value` / `--name value` / `--name` flags until the
// first operand (or "--"); it returns the flags and the remaining args.
// rkt's global flags are cobra persistent flags: they are accepted after a
// subcommand too.
func parseFlags(set flagSet, args []string, what string) (map[string][]string, []string) {
	merged := flagSet{}
	for k, v := range globalFlags {
		merged[k] = v
	}
	for k, v := range set {
		merged[k] = v
	}
	set = merged
	out := map[string][]string{}
	i := 0
	for ; i < len(args); i++ {
		a := args[i]
		if a == "--" || !strings.HasPrefix(a, "--") {
			break
		}
		name, val, hasVal := strings.Cut(a[2:], "=")
		kind, ok := set[name]
		if !ok {
			die("unknown flag: --%s (for %s)", name, what)
		}
		switch kind {
		case 'b':
			if !hasVal {
				val = "true"
			}
			if _, err := strconv.ParseBool(val); err != nil {
				die("invalid argument %q for --%s: not a boolean", val, name)
			}
		default:
			if !hasVal {
				if i+1 >= len(args) {
					die("flag needs an argument: --%s", name)
				}
				i++
				val = args[i]
			}
			if kind == 's' && len(out[name]) > 0 {
				die("--%s given twice", name)
			}
		}
		out[name] = append(out[name], val)
	}
	return out, args[i:]
}

var (
	volumeRE   = regexp.MustCompile(`^([a-z0-9][a-z0-9-]*),kind=host,source=(/[^,]*)(,readOnly=(true|false))?$`)
	mountRE    = regexp.MustCompile(`^volume=([a-z0-9][a-z0-9-]*),target=(/.*)$`)
	portRE     = regexp.MustCompile(`^([a-z0-9][a-z0-9-]*):(?:[0-9.]+:)?([0-9]+)$`)
	quantityRE = regexp.MustCompile(`^[0-9]+(m|k|M|G|T|Ki|Mi|Gi|Ti)?$`)
	uuidRE     = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)
	insecure   = map[string]bool{"none": true, "image": true, "tls": true, "ondisk": true, "http": true, "pubkey": true,
		"capabilities": true, "paths": true, "seccomp": true, "all-fetch": true, "all-run": true, "all": true}
)

var prepareFlags = flagSet{
	"no-overlay": 'b', "volume": 'r', "mount": 'r', "set-env": 'r', "set-env-file": 's', "inherit-env": 'b',
	"exec": 's', "memory": 's', "cpu": 's', "port": 'r', "user": 's', "group": 's', "quiet": 'b',
	"private-users": 'b', "pod-manifest": 's', "stage1-name": 's', "stage1-path": 's', "stage1-url": 's',
	"stage1-hash": 's', "stage1-from-dir": 's', "hostname": 's', "caps-retain": 's', "caps-remove": 's',
	"readonly-rootfs": 'b', "working-dir": 's', "environment": 'r', "signature": 's',
}

func checkPrepare(f map[string][]string) {
	vols := map[string]bool{}
	for _, v := range f["volume"] {
		m := volumeRE.FindStringSubmatch(v)
		if m == nil {
			die("invalid --volume %q: want NAME,kind=host,source=/ABS/PATH[,readOnly=BOOL]", v)
		}
		if vols[m[1]] {
			die("duplicate volume name %q", m[1])
		}
		vols[m[1]] = true
	}
	for _, v := range f["mount"] {
		m := mountRE.FindStringSubmatch(v)
		if m == nil {
			die("invalid --mount %q: want volume=NAME,target=/PATH", v)
		}
		if !vols[m[1]] {
			die("--mount names volume %q that no --volume defines", m[1])
		}
	}
	for _, v := range f["set-env"] {
		if k, _, ok := strings.Cut(v, "="); !ok || k == "" {
			die("invalid --set-env %q: want NAME=VALUE", v)
		}
	}
	for _, v := range f["port"] {
		m := portRE.FindStringSubmatch(v)
		if m == nil {
			die("invalid --port %q: want NAME:HOSTPORT", v)
		}
		if n, _ := strconv.Atoi(m[2]); n < 1 || n > 65535 {
			die("invalid --port %q: host port out of range", v)
		}
	}
	for _, k := range []string{"memory", "cpu"} {
		for _, v := range f[k] {
			if !quantityRE.MatchString(v) {
				die("invalid --%s %q: not a resource quantity", k, v)
			}
		}
	}
}

func newUUID() string {
	b := make([]byte, 16)
	rand.Read(b)
	h := hex.EncodeToString(b)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

func podDir(uuid string) string { return filepath.Join(stateDir, "pods", uuid) }

func runningPid(uuid string) int {
	b, err := os.ReadFile(filepath.Join(podDir(uuid), "pid"))
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if pid <= 0 || syscall.Kill(pid, 0) != nil {
		return 0
	}
	return pid
}

func main() {
	exe, err := os.Executable()
	if err != nil {
		die("stand-in: %v", err)
	}
	home = filepath.Dir(exe)
	stateDir = filepath.Join(home, "state")
	os.MkdirAll(filepath.Join(stateDir, "pods"), 0o755)
	if b, err := os.ReadFile(filepath.Join(home, "script.json")); err == nil {
		if err := json.Unmarshal(b, &scr); err != nil {
			die("stand-in: bad script.json: %v", err)
		}
	}
	line, _ := json.Marshal(map[string]interface{}{"argv": os.Args[1:], "env": os.Environ()})
	if f, err := os.OpenFile(filepath.Join(home, "calls.jsonl"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644); err == nil {
		f.Write(append(line, '\n'))
		f.Close()
	}

	global, rest := parseFlags(globalFlags, os.Args[1:], "rkt")
	for _, v := range global["insecure-options"] {
		for _, o := range strings.Split(v, ",") {
			if !insecure[o] {
				die("invalid --insecure-options %q: unknown option %q", v, o)
			}
		}
	}
	if len(rest) == 0 {
		die("no command given")
	}
	sub, args := rest[0], rest[1:]
	if f, ok := scr.Fail[sub]; ok {
		fmt.Fprint(os.Stderr, f.Stderr)
		os.Exit(f.Exit)
	}
	switch sub {
	case "version":
		parseFlags(flagSet{}, args, sub)
		v := scr.Version
		if v == "" {
			v = "1.30.0"
		}
		fmt.Printf("rkt Version: %s\nappc Version: 0.8.11\nGo Version: go1.8.3\nGo OS/Arch: linux/amd64\nFeatures: -TPM +SDJOURNAL\n", v)
	case "trust":
		f, ops := parseFlags(flagSet{"skip-fingerprint-review": 'b', "prefix": 's', "root": 'b', "insecure-allow-http": 'b'}, args, sub)
		if len(f["prefix"]) == 0 && len(ops) == 0 {
			die("trust: --prefix or a public key file is required")
		}
		fmt.Printf("pubkey: prefix: %q\nTrusting key for prefix %q\n", strings.Join(f["prefix"], ""), strings.Join(f["prefix"], ""))
	case "prepare":
		f, ops := parseFlags(prepareFlags, args, sub)
		if len(ops) == 0 || ops[0] == "--" {
			die("prepare: an image is required")
		}
		image := ops[0]
		// Per-app flags may follow the image (rkt's image-args syntax).
		appFlags, after := parseFlags(prepareFlags, ops[1:], "prepare "+image)
		for k, v := range appFlags {
			f[k] = append(f[k], v...)
		}
		var appArgs []string
		if len(after) > 0 {
			if after[0] != "--" {
				die("prepare: unexpected argument %q (app arguments go after --)", after[0])
			}
			appArgs = after[1:]
		}
		checkPrepare(f)
		uuid := newUUID()
		os.MkdirAll(podDir(uuid), 0o755)
		pod, _ := json.Marshal(map[string]interface{}{"image": image, "exec": f["exec"], "args": appArgs, "env": f["set-env"]})
		os.WriteFile(filepath.Join(podDir(uuid), "pod.json"), pod, 0o644)
		fmt.Fprintf(os.Stderr, "image: using image from local store for image name %s\n", image)
		fmt.Println(uuid)
	case "run-prepared":
		f, ops := parseFlags(flagSet{"dns": 'r', "dns-search": 'r', "dns-opt": 'r', "dns-domain": 's', "hosts-entry": 'r',
			"net": 's', "interactive": 'b', "mds-register": 'b'}, args, sub)
		for _, d := range f["dns"] {
			if d != "host" && d != "none" && net.ParseIP(d) == nil {
				die("invalid --dns %q", d)
			}
		}
		if len(ops) != 1 || !uuidRE.MatchString(ops[0]) {
			die("run-prepared: exactly one pod UUID is required, got %q", ops)
		}
		uuid := ops[0]
		pod, err := os.ReadFile(filepath.Join(podDir(uuid), "pod.json"))
		if err != nil {
			die("run-prepared: no prepared pod %s", uuid)
		}
		if runningPid(uuid) != 0 {
			die("run-prepared: pod %s is already running", uuid)
		}
		os.WriteFile(filepath.Join(podDir(uuid), "pid"), []byte(strconv.Itoa(os.Getpid())), 0o644)
		sigs := make(chan os.Signal, 8)
		signal.Notify(sigs, syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGUSR2)
		fmt.Printf("pod %s running %s\n", uuid, pod)
		var done <-chan time.Time
		if scr.Run.RunMs > 0 {
			done = time.After(time.Duration(scr.Run.RunMs) * time.Millisecond)
		}
		for {
			select {
			case s := <-sigs:
				fmt.Printf("got %s\n", map[os.Signal]string{syscall.SIGHUP: "SIGHUP", syscall.SIGUSR1: "SIGUSR1", syscall.SIGUSR2: "SIGUSR2"}[s])
			case <-done:
				os.Remove(filepath.Join(podDir(uuid), "pid"))
				os.Exit(scr.Run.Exit)
			}
		}
	case "enter":
		_, ops := parseFlags(flagSet{"app": 's'}, args, sub)
		if len(ops) < 2 || !uuidRE.MatchString(ops[0]) {
			die("enter: want UUID and a command, got %q", ops)
		}
		if runningPid(ops[0]) == 0 {
			die("enter: pod %s is not running", ops[0])
		}
		cmd := exec.Command(ops[1], ops[2:]...)
		cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
		if err := cmd.Run(); err != nil {
			if ee, ok := err.(*exec.ExitError); ok {
				os.Exit(ee.ExitCode())
			}
			die("enter: %v", err)
		}
	default:
		die("unknown command %q", sub)
	}
}
