// Command pot is a RECORDING STAND-IN for bsdpot's `pot` CLI, used by the
// conformance tests (tests/conformance/pot_test.go). It is NOT pot: it
// creates no jail, no ZFS dataset and no network. What it does:
//
//   - checks its argv against the flags each pot subcommand documents (the
//     getopts strings and mandatory-argument checks of share/pot/*.sh in
//     bsdpot/pot); an unknown flag, a missing mandatory argument or a
//     malformed value exits 1 with a message on stderr, as pot does;
//   - appends every invocation (argv and environment) as one JSON line to
//     calls.jsonl beside its own executable;
//   - keeps a little state (which pots exist, which one runs, its pid) under
//     state/ beside the executable, so `prepare` then `start` then
//     `signal`/`exec`/`destroy` behave like a lifecycle;
//   - follows script.json beside the executable: make a subcommand fail with
//     a given exit code and stderr, and say how `pot start` ends (after how
//     long, with which status, and which ExitCode `last-run-stats` reports).
//
// Built by the tests with the Go toolchain (standard library only).
package main

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

type failure struct {
	Exit   int    `json:"exit"`
	Stderr string `json:"stderr"`
}

type startScript struct {
	// RunMs > 0: the jail's command ends by itself after RunMs.
	RunMs int `json:"run_ms"`
	// Exit is pot start's own exit status when the jail ends by itself.
	Exit int `json:"exit"`
	// JailExit is what last-run-stats reports afterwards.
	JailExit int `json:"jail_exit"`
	// StopExit != 0: on SIGTERM (pot destroy stopping the jail) exit with
	// this status instead of dying by the signal.
	StopExit int `json:"stop_exit"`
}

type script struct {
	Fail    map[string]failure `json:"fail"`
	Start   startScript        `json:"start"`
	RSS     string             `json:"rss"`
	Version string             `json:"version"`
}

var (
	home     string
	stateDir string
	scr      script
)

func die(code int, format string, a ...interface{}) {
	fmt.Fprintf(os.Stderr, "pot: "+format+"\n", a...)
	os.Exit(code)
}

func record() {
	line, _ := json.Marshal(map[string]interface{}{"argv": os.Args[1:], "env": os.Environ()})
	f, err := os.OpenFile(filepath.Join(home, "calls.jsonl"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		die(2, "stand-in cannot record: %v", err)
	}
	f.Write(append(line, '\n'))
	f.Close()
}

// getopts parses args like POSIX getopts with optstring (a letter followed
// by ':' takes an argument). It stops at the first operand or "--".
func getopts(optstring string, args []string) (map[byte][]string, []string, error) {
	opts := map[byte][]string{}
	i := 0
	for ; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			i++
			break
		}
		if len(a) < 2 || a[0] != '-' {
			break
		}
		for j := 1; j < len(a); j++ {
			c := a[j]
			k := strings.IndexByte(optstring, c)
			if k < 0 || c == ':' {
				return nil, nil, fmt.Errorf("illegal option -- %c", c)
			}
			if k+1 < len(optstring) && optstring[k+1] == ':' {
				var v string
				if j+1 < len(a) {
					v = a[j+1:]
				} else if i+1 < len(args) {
					i++
					v = args[i]
				} else {
					return nil, nil, fmt.Errorf("option requires an argument -- %c", c)
				}
				opts[c] = append(opts[c], v)
				break
			}
			opts[c] = append(opts[c], "")
		}
	}
	return opts, args[i:], nil
}

func one(o map[byte][]string, c byte) string {
	if v := o[c]; len(v) > 0 {
		return v[len(v)-1]
	}
	return ""
}

func has(o map[byte][]string, c byte) bool { _, ok := o[c]; return ok }

func potDir(name string) string { return filepath.Join(stateDir, "pots", name) }

func requirePot(name string) {
	if name == "" {
		die(1, "A pot name is mandatory")
	}
	if _, err := os.Stat(potDir(name)); err != nil {
		die(1, "pot %s is not valid", name)
	}
}

func runningPid(name string) int {
	b, err := os.ReadFile(filepath.Join(potDir(name), "pid"))
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if pid <= 0 || syscall.Kill(pid, 0) != nil {
		return 0
	}
	return pid
}

var (
	portRE   = regexp.MustCompile(`^[0-9]+(:[0-9]+)?$`)
	memoryRE = regexp.MustCompile(`^[0-9]+[bBkKmMgG]?$`)
	attrRE   = regexp.MustCompile(`^[a-z][a-z0-9_-]*$`)
)

func validPort(s string) bool {
	if !portRE.MatchString(s) {
		return false
	}
	for _, p := range strings.Split(s, ":") {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 {
			return false
		}
	}
	return true
}

func absolute(p string) bool { return strings.HasPrefix(p, "/") }

var signals = map[string]syscall.Signal{
	"HUP": syscall.SIGHUP, "INT": syscall.SIGINT, "QUIT": syscall.SIGQUIT, "KILL": syscall.SIGKILL,
	"TERM": syscall.SIGTERM, "USR1": syscall.SIGUSR1, "USR2": syscall.SIGUSR2, "ALRM": syscall.SIGALRM,
	"CONT": syscall.SIGCONT, "STOP": syscall.SIGSTOP, "TSTP": syscall.SIGTSTP, "WINCH": syscall.SIGWINCH,
	"INFO": syscall.SIGUSR1, // FreeBSD's SIGINFO has no Linux twin; the stand-in maps it to USR1
}

func main() {
	exe, err := os.Executable()
	if err != nil {
		die(2, "stand-in: %v", err)
	}
	home = filepath.Dir(exe)
	stateDir = filepath.Join(home, "state")
	os.MkdirAll(filepath.Join(stateDir, "pots"), 0o755)
	if b, err := os.ReadFile(filepath.Join(home, "script.json")); err == nil {
		if err := json.Unmarshal(b, &scr); err != nil {
			die(2, "stand-in: bad script.json: %v", err)
		}
	}
	record()
	if len(os.Args) < 2 {
		die(1, "usage: pot command [options]")
	}
	sub, args := os.Args[1], os.Args[2:]
	if f, ok := scr.Fail[sub]; ok {
		fmt.Fprint(os.Stderr, f.Stderr)
		os.Exit(f.Exit)
	}
	switch sub {
	case "version":
		mustOpts("hvq", args)
		v := scr.Version
		if v == "" {
			v = "0.16.0"
		}
		fmt.Printf("pot version: %s\n", v)
	case "ls", "list":
		o, _ := mustOpts("hvbpfFBqa", args)
		entries, _ := os.ReadDir(filepath.Join(stateDir, "pots"))
		for _, e := range entries {
			if has(o, 'q') {
				fmt.Println(e.Name())
			} else {
				fmt.Printf("pot name : %s\n", e.Name())
			}
		}
	case "prepare":
		prepare(args)
	case "set-attribute", "set-attr":
		o, _ := mustOpts("hvp:A:V:", args)
		requireArgs(o, map[byte]string{'p': "A pot name is mandatory", 'A': "Option -A is mandatory", 'V': "Option -V is mandatory"})
		if !attrRE.MatchString(one(o, 'A')) {
			die(1, "%s is not a valid attribute", one(o, 'A'))
		}
		requirePot(one(o, 'p'))
	case "copy-in":
		o, _ := mustOpts("hvs:d:p:F", args)
		requireArgs(o, map[byte]string{'p': "A pot name is mandatory", 's': "A source is mandatory", 'd': "A destination is mandatory"})
		if !absolute(one(o, 'd')) {
			die(1, "The destination has to be an absolute pathname")
		}
		requirePot(one(o, 'p'))
	case "mount-in":
		o, _ := mustOpts("hvf:d:z:p:m:wr", args)
		requireArgs(o, map[byte]string{'p': "A pot name is mandatory", 'm': "A mount point is mandatory"})
		n := 0
		for _, c := range []byte("fdz") {
			if has(o, c) {
				n++
			}
		}
		if n != 1 {
			die(1, "One of -f|-d|-z option has to be used (exactly one)")
		}
		if m := one(o, 'm'); !absolute(m) || m == "/" {
			die(1, "The mount point has to be an absolute pathname other than /")
		}
		if has(o, 'd') && !absolute(one(o, 'd')) {
			die(1, "%s is not an absolute directory", one(o, 'd'))
		}
		requirePot(one(o, 'p'))
	case "set-env":
		o, _ := mustOpts("hvp:E:", args)
		requireArgs(o, map[byte]string{'p': "A pot name is mandatory", 'E': "A command is mandatory"})
		for _, e := range o['E'] {
			if !strings.Contains(e, "=") {
				die(1, "%s not in a valid form; VARIABLE=value is accepted", e)
			}
		}
		requirePot(one(o, 'p'))
		b, _ := json.Marshal(o['E'])
		os.WriteFile(filepath.Join(potDir(one(o, 'p')), "env.json"), b, 0o644)
	case "set-hosts":
		o, _ := mustOpts("hvp:H:", args)
		requireArgs(o, map[byte]string{'p': "A pot name is mandatory"})
		for _, h := range o['H'] {
			i := strings.Index(h, ":")
			if i <= 0 || i == len(h)-1 {
				die(1, "%s not in a valid form; hostname:IP is accepted", h)
			}
			if net.ParseIP(h[i+1:]) == nil {
				die(1, "Submitted ip %s is not a valid one", h[i+1:])
			}
		}
		requirePot(one(o, 'p'))
	case "set-rss":
		o, _ := mustOpts("hvp:C:M:", args)
		requireArgs(o, map[byte]string{'p': "A pot name is mandatory"})
		if !has(o, 'C') && !has(o, 'M') {
			die(1, "One resource has to be specified (-C or -M)")
		}
		if m, ok := o['M']; ok {
			if !memoryRE.MatchString(m[0]) || strings.Trim(strings.TrimRight(m[0], "bBkKmMgG"), "0") == "" {
				die(1, "%s is not a valid memory constraint", m[0])
			}
		}
		requirePot(one(o, 'p'))
	case "start":
		start(args)
	case "signal":
		o, _ := mustOpts("hvflCs:P:m:p:", args)
		requireArgs(o, map[byte]string{'p': "A pot name is mandatory"})
		name := one(o, 'p')
		sig := one(o, 's')
		if sig == "" {
			sig = "SIGINFO"
		}
		s, ok := signals[strings.TrimPrefix(sig, "SIG")]
		if !ok {
			die(1, "Invalid signal %s", sig)
		}
		if has(o, 'P') && has(o, 'm') {
			die(1, "Process ID and pattern match are mutually exclusive")
		}
		requirePot(name)
		pid := runningPid(name)
		if pid == 0 {
			die(1, "The pot is not running")
		}
		if err := syscall.Kill(pid, s); err != nil {
			die(1, "Sending signal failed: %v", err)
		}
	case "exec":
		o, rest := mustOpts("hvdtp:e:u:U:", args)
		if len(rest) == 0 {
			die(1, "A command is mandatory")
		}
		requireArgs(o, map[byte]string{'p': "A pot name is mandatory"})
		if has(o, 'u') && has(o, 'U') {
			die(1, "Parameters -u and -U are mutually exclusive")
		}
		requirePot(one(o, 'p'))
		if runningPid(one(o, 'p')) == 0 {
			die(1, "The pot is not running")
		}
		// Stand-in for jexec: run the command on this host.
		cmd := exec.Command(rest[0], rest[1:]...)
		cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
		if err := cmd.Run(); err != nil {
			if ee, ok := err.(*exec.ExitError); ok {
				os.Exit(ee.ExitCode())
			}
			die(127, "jexec: %v", err)
		}
	case "destroy":
		o, _ := mustOpts("hvrf:p:b:FB:q", args)
		name := one(o, 'p')
		if name == "" {
			die(1, "-b or -p or -f or -B are missing")
		}
		if _, err := os.Stat(potDir(name)); err != nil {
			die(1, "pot %s not found or corrupted. Try to use the -F flag", name)
		}
		pid := runningPid(name)
		if pid != 0 && !has(o, 'F') {
			die(1, "pot %s is running", name)
		}
		// The pot disappears from `ls`/`last-run-stats` before its jail is
		// stopped, so what the driver sees after the stop does not depend on
		// timing (a stand-in choice: real pot's order is not observable here).
		gone := filepath.Join(stateDir, fmt.Sprintf("destroyed-%s-%d", name, os.Getpid()))
		if err := os.Rename(potDir(name), gone); err != nil {
			die(1, "destroying %s: %v", name, err)
		}
		if pid != 0 {
			syscall.Kill(pid, syscall.SIGTERM)
			for i := 0; i < 500 && syscall.Kill(pid, 0) == nil; i++ {
				time.Sleep(10 * time.Millisecond)
			}
		}
		os.RemoveAll(gone)
	case "last-run-stats":
		o, _ := mustOpts("hvp:", args)
		requireArgs(o, map[byte]string{'p': "A pot name is mandatory"})
		requirePot(one(o, 'p'))
		b, err := os.ReadFile(filepath.Join(potDir(one(o, 'p')), "last_run_stats"))
		if err != nil {
			fmt.Println("{}")
		} else {
			fmt.Println(string(b))
		}
	case "get-rss":
		o, _ := mustOpts("hvp:J", args)
		requireArgs(o, map[byte]string{'p': "A pot name or -a are mandatory"})
		requirePot(one(o, 'p'))
		if !has(o, 'J') {
			fmt.Println("Resource usage by the pot", one(o, 'p'))
			return
		}
		rss := scr.RSS
		if rss == "" {
			rss = `{ "ResourceUsage": { "MemoryStats": { "RSS" : 1048576, "Swap" : 0 }, "CpuStats": { "TotalTicks": 12.5, "Percent": 3 } } } `
		}
		fmt.Println(rss)
	default:
		die(1, "%s: unknown command", sub)
	}
}

func mustOpts(optstring string, args []string) (map[byte][]string, []string) {
	o, rest, err := getopts(optstring, args)
	if err != nil {
		die(1, "%v", err)
	}
	return o, rest
}

func requireArgs(o map[byte][]string, msgs map[byte]string) {
	keys := make([]int, 0, len(msgs))
	for c := range msgs {
		keys = append(keys, int(c))
	}
	sort.Ints(keys)
	for _, c := range keys {
		if one(o, byte(c)) == "" {
			die(1, "%s", msgs[byte(c)])
		}
	}
}

var networkTypes = map[string]bool{"inherit": true, "alias": true, "public-bridge": true, "private-bridge": true, "host": true}

func prepare(args []string) {
	o, rest := mustOpts("hvp:U:t:c:e:a:n:SN:i:", args)
	if len(rest) > 0 {
		die(1, "unexpected operand %q", rest[0])
	}
	requireArgs(o, map[byte]string{'p': "A pot name is mandatory", 't': "A tag is mandatory", 'a': "An allocation id is mandatory", 'U': "An image URL is mandatory"})
	if n := one(o, 'N'); has(o, 'N') && !networkTypes[n] {
		die(1, "Network type %s not recognized", n)
	}
	for _, e := range o['e'] {
		if !validPort(e) {
			die(1, "%s is not a valid port number", e)
		}
	}
	if i := one(o, 'i'); has(o, 'i') && i != "auto" && net.ParseIP(i) == nil {
		die(1, "%s is not a valid IP address", i)
	}
	base := one(o, 'n')
	if base == "" {
		base = one(o, 'p') + "_" + one(o, 't')
	}
	name := strings.ReplaceAll(base+"_"+one(o, 'a'), ".", "_")
	if _, err := os.Stat(potDir(name)); err == nil {
		die(1, "A pot with name %s already exists", name)
	}
	if err := os.MkdirAll(potDir(name), 0o755); err != nil {
		die(1, "cannot create %s: %v", name, err)
	}
	fmt.Printf("Prepared the pot %s\n", name)
}

func start(args []string) {
	_, rest := mustOpts("hvsS", args)
	if len(rest) != 1 {
		die(1, "A pot name is mandatory")
	}
	name := rest[0]
	requirePot(name)
	if runningPid(name) != 0 {
		return // already running: pot returns 0
	}
	os.Remove(filepath.Join(potDir(name), "last_run_stats"))
	os.WriteFile(filepath.Join(potDir(name), "pid"), []byte(strconv.Itoa(os.Getpid())), 0o644)
	// Deliberately not SIGTERM/SIGINT: those end the stand-in as they would
	// end a process (pot destroy sends SIGTERM here).
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGWINCH)
	if scr.Start.StopExit != 0 {
		signal.Notify(sigs, syscall.SIGTERM)
	}
	fmt.Printf("pot %s started\n", name)
	var done <-chan time.Time
	if scr.Start.RunMs > 0 {
		done = time.After(time.Duration(scr.Start.RunMs) * time.Millisecond)
	}
	for {
		select {
		case s := <-sigs:
			if s == syscall.SIGTERM {
				os.Remove(filepath.Join(potDir(name), "pid"))
				os.Exit(scr.Start.StopExit)
			}
			fmt.Printf("got %s\n", strings.ToUpper(unixName(s.(syscall.Signal))))
		case <-done:
			stats := fmt.Sprintf(`{"ExitCode": %d}`, scr.Start.JailExit)
			os.WriteFile(filepath.Join(potDir(name), "last_run_stats"), []byte(stats), 0o644)
			os.Remove(filepath.Join(potDir(name), "pid"))
			fmt.Printf("pot %s ended\n", name)
			os.Exit(scr.Start.Exit)
		}
	}
}

func unixName(s syscall.Signal) string {
	for n, v := range signals {
		if v == s && n != "INFO" {
			return "SIG" + n
		}
	}
	return s.String()
}
