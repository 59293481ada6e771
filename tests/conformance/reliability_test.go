package conformance

// Reliability under a host crash: many tasks, the host SIGKILLed with no
// chance to clean up, a fresh host recovering every handle Nomad stored
// (NOMAD-PROTOCOL.md §8.4; host/src/supervisor.rs).

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"

	"conformancepb/drivers"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

const (
	relTaskCount   = 200
	relLongCount   = 100 // the rest exit by themselves
	relSeed        = 20240611
	relConcurrency = 8
	relLongSleep   = 300 // seconds: outlives the test
	relMaxSleep    = 6   // short tasks sleep 1..relMaxSleep s
	relBeforeKill  = 1500 * time.Millisecond
	relDowntime    = 3 * time.Second
)

// relTask is one task of TestReliability200 and what the test learned
// about it before the host was killed.
type relTask struct {
	idx      int
	tk       *Task
	long     bool
	greeting string
	sleep    int
	exitCode int

	handle       *drivers.TaskHandle // as Nomad's state DB keeps it
	startedAt    time.Time
	mainProcess  string // supervisor record name in the state dir
	pid          int    // the task process (handle main_pid)
	startTime    uint64 // its /proc start time before the kill
	supPid       int
	supStartTime uint64

	phase string // when a short task exited: before-kill, downtime, after-recovery
}

func (rt *relTask) String() string {
	kind := "short"
	if rt.long {
		kind = "long"
	}
	return fmt.Sprintf("task #%d (%s, sleep %d, exit_code %d, id %s)", rt.idx, kind, rt.sleep, rt.exitCode, rt.tk.ID)
}

// forEachParallel runs f for every task on n goroutines. f must not call
// t.Fatal (use t.Error).
func forEachParallel(tasks []*relTask, n int, f func(rt *relTask)) {
	ch := make(chan *relTask)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for rt := range ch {
				f(rt)
			}
		}()
	}
	for _, rt := range tasks {
		ch <- rt
	}
	close(ch)
	wg.Wait()
}

// stateRecords lists the process record directories in stateDir.
func stateRecords(t *testing.T, stateDir string) []string {
	t.Helper()
	ents, err := os.ReadDir(stateDir)
	if err != nil {
		if os.IsNotExist(err) {
			return nil
		}
		t.Fatalf("reading state dir: %v", err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	return names
}

// TestReliability200: 200 hello tasks (half long-running, half exiting at
// random moments with distinct exit codes), the host SIGKILLed, a fresh
// host recovers every stored handle: running tasks are still the same
// processes (never restarted), exited tasks report their exact exit code
// whether they ended before the kill, while no host ran, or after the
// recovery; and StopTask + DestroyTask leave no supervisor, task process
// or state record behind.
func TestReliability200(t *testing.T) {
	testStart := time.Now()
	phase := testStart
	lap := func(what string) {
		t.Logf("phase %-28s %v (total %v)", what, time.Since(phase).Round(time.Millisecond), time.Since(testStart).Round(time.Millisecond))
		phase = time.Now()
	}
	requireArtifacts(t)
	stateDir := filepath.Join(t.TempDir(), "state")

	// --- plugin instance 1, 200 tasks ------------------------------------
	h1 := launchKillableHost(t, "--state-dir", stateDir)

	rng := rand.New(rand.NewSource(relSeed))
	exitCodes := rng.Perm(255) // distinct exit codes 1..255 for every task
	tasks := make([]*relTask, relTaskCount)
	var longs, shorts []*relTask
	for i := range tasks {
		rt := &relTask{idx: i, long: i%2 == 0 && len(longs) < relLongCount, exitCode: exitCodes[i] + 1}
		rt.greeting = fmt.Sprintf("hello #%d from the reliability test", i)
		if rt.long {
			rt.sleep = relLongSleep
			longs = append(longs, rt)
		} else {
			rt.sleep = 1 + rng.Intn(relMaxSleep)
			shorts = append(shorts, rt)
		}
		rt.tk = newTask(t, exampleTask)
		h1.mustConfigure(t, rt.tk, fmt.Sprintf("greeting  = %s\nsleep     = %d\nexit_code = %d\n", hclString(rt.greeting), rt.sleep, rt.exitCode))
		tasks[i] = rt
	}
	if len(longs) != relLongCount || len(shorts) != relTaskCount-relLongCount {
		t.Fatalf("harness: %d long and %d short tasks", len(longs), len(shorts))
	}

	// Whatever happens, no task or supervisor of this test survives it.
	// (Registered after the FIFOs, so it runs before their cleanups.)
	var pidsMu sync.Mutex
	taskPids := map[int]uint64{}
	t.Cleanup(func() {
		pidsMu.Lock()
		defer pidsMu.Unlock()
		killLeftovers(t, stateDir, taskPids)
	})
	lap("launch + prepare 200 tasks")

	forEachParallel(tasks, relConcurrency, func(rt *relTask) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		resp, err := h1.Driver.StartTask(ctx, &drivers.StartTaskRequest{Task: rt.tk.Config})
		rt.startedAt = time.Now()
		if err != nil {
			t.Errorf("StartTask %v: %v", rt, err)
			return
		}
		if resp.GetResult() != drivers.StartTaskResponse_SUCCESS || resp.GetHandle() == nil {
			t.Errorf("StartTask %v: result %v, handle %v, error %q", rt, resp.GetResult(), resp.GetHandle(), resp.GetDriverErrorMsg())
			return
		}
		rt.handle = storedHandle(resp.GetHandle())
		var ds handleDriverState
		if err := json.Unmarshal(rt.handle.GetDriverState(), &ds); err != nil {
			t.Errorf("StartTask %v: driver_state is not the host's JSON handle state: %v", rt, err)
			return
		}
		if ds.MainPid == nil || *ds.MainPid <= 0 || ds.MainProcess == nil || *ds.MainProcess == "" {
			t.Errorf("StartTask %v: driver_state has no main_pid / main_process: %s", rt, rt.handle.GetDriverState())
			return
		}
		rt.pid, rt.mainProcess = *ds.MainPid, *ds.MainProcess
		var rec supervisorRecord
		if err := readJSONFile(filepath.Join(stateDir, rt.mainProcess, "started.json"), &rec); err != nil {
			t.Errorf("StartTask %v: supervisor record %s: %v", rt, rt.mainProcess, err)
			return
		}
		if rec.Pid != rt.pid {
			t.Errorf("StartTask %v: handle main_pid %d but started.json says pid %d", rt, rt.pid, rec.Pid)
		}
		rt.supPid, rt.supStartTime = rec.SupervisorPid, rec.SupervisorStartTime
		rt.startTime = rec.StartTime
		if st, ok := readProcStat(rt.pid); ok && st.State != 'Z' {
			if st.StartTime != rec.StartTime {
				t.Errorf("StartTask %v: /proc/%d start time %d, started.json %d", rt, rt.pid, st.StartTime, rec.StartTime)
			}
		} else if rt.long {
			t.Errorf("StartTask %v: long-running task process %d is not alive right after start", rt, rt.pid)
		}
		pidsMu.Lock()
		taskPids[rt.pid] = rt.startTime
		pidsMu.Unlock()
	})
	if t.Failed() {
		t.FailNow()
	}
	lap("StartTask x200")

	// Every task is up: its greeting arrived, exactly once.
	for _, rt := range tasks {
		want := rt.greeting + "\n"
		if got := rt.tk.Stdout.WaitContent(want, 10*time.Second); got != want {
			t.Errorf("%v: stdout FIFO = %q, want %q", rt, got, want)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	if recs := stateRecords(t, stateDir); len(recs) != relTaskCount {
		t.Fatalf("state dir has %d records for %d tasks: %v", len(recs), relTaskCount, recs)
	}

	// --- SIGKILL instance 1 ---------------------------------------------
	exitedNow := func(rt *relTask) bool {
		_, err := os.Stat(filepath.Join(stateDir, rt.mainProcess, "exited.json"))
		return err == nil
	}
	// Let the first short tasks end under instance 1 (it sees their exit,
	// then dies without telling anyone).
	time.Sleep(relBeforeKill)
	for _, rt := range shorts {
		if exitedNow(rt) {
			rt.phase = "before-kill"
		}
	}
	h1.sigkill(t)
	killedAt := time.Now()
	lap("greetings, 1.5 s, SIGKILL host 1")
	for _, rt := range longs {
		if !sameProcessAlive(rt.pid, rt.startTime) {
			t.Errorf("%v: task process %d died with the SIGKILLed host", rt, rt.pid)
		}
		if !sameProcessAlive(rt.supPid, rt.supStartTime) {
			t.Errorf("%v: supervisor %d died with the SIGKILLed host", rt, rt.supPid)
		}
		if rt.tk.Stdout.AtEOF() {
			t.Errorf("%v: stdout FIFO closed when the host was SIGKILLed", rt)
		}
	}
	// The leak check at the end looks for exactly these processes: make
	// sure it sees them while they run.
	supSeen := map[int]bool{}
	for _, s := range supervisorsUnder(stateDir) {
		supSeen[s.Pid] = true
	}
	for _, rt := range longs {
		if !supSeen[rt.supPid] {
			t.Errorf("%v: harness: supervisor %d not found by its record or command line (under %s)", rt, rt.supPid, stateDir)
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	// Some short tasks end while no host runs.
	time.Sleep(relDowntime)
	for _, rt := range shorts {
		if rt.phase == "" && exitedNow(rt) {
			rt.phase = "downtime"
		}
	}
	lap("downtime")

	// --- instance 2 recovers every handle -------------------------------
	h2 := launchKillableHost(t, "--state-dir", stateDir)
	lap("launch host 2")
	recoverStart := time.Now()
	forEachParallel(tasks, relConcurrency, func(rt *relTask) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		// Nomad leaves task_id empty; the id is in the handle.
		if _, err := h2.Driver.RecoverTask(ctx, &drivers.RecoverTaskRequest{TaskId: "", Handle: rt.handle}); err != nil {
			t.Errorf("RecoverTask %v: %v", rt, err)
		}
	})
	if t.Failed() {
		t.FailNow()
	}
	for _, rt := range shorts {
		if rt.phase == "" {
			rt.phase = "after-recovery"
		}
	}
	lap("RecoverTask x200")
	waiters := map[*relTask]*waiter{}
	for _, rt := range tasks {
		waiters[rt] = h2.waitAsync(rt.tk.ID)
	}

	// Short tasks: each reports exactly its own exit code.
	shortDeadline := time.Now().Add(15 * time.Second)
	if last := killedAt.Add(relDowntime + relMaxSleep*time.Second + 10*time.Second); last.After(shortDeadline) {
		shortDeadline = last
	}
	phases := map[string]int{}
	for _, rt := range shorts {
		w := waiters[rt]
		select {
		case <-w.done:
		case <-time.After(time.Until(shortDeadline)):
			t.Errorf("%v: WaitTask has not returned %v after recovery (the task slept %d s)", rt, time.Since(recoverStart).Round(time.Millisecond), rt.sleep)
			continue
		}
		phases[rt.phase]++
		if w.err != nil {
			t.Errorf("%v (exited %s): WaitTask: %v", rt, rt.phase, w.err)
			continue
		}
		r := w.resp.GetResult()
		if r == nil || r.GetExitCode() != int32(rt.exitCode) || r.GetSignal() != 0 || r.GetOomKilled() || w.resp.GetErr() != "" {
			var rec exitRecord
			recErr := readJSONFile(filepath.Join(stateDir, rt.mainProcess, "exited.json"), &rec)
			t.Errorf("%v (exited %s): WaitTask = %v err %q, want exit_code %d signal 0 (supervisor's exited.json: %+v, read error %v)",
				rt, rt.phase, r, w.resp.GetErr(), rt.exitCode, rec, recErr)
		}
		want := rt.greeting + "\n"
		if !rt.tk.Stdout.WaitEOF(3 * time.Second) {
			t.Errorf("%v: stdout FIFO still open 3 s after the task exited", rt)
		}
		if got := rt.tk.Stdout.Content(); got != want {
			t.Errorf("%v: stdout FIFO = %q, want exactly one greeting %q (restarted?)", rt, got, want)
		}
	}
	t.Logf("short tasks exited: %d before the kill, %d while no host ran, %d after recovery",
		phases["before-kill"], phases["downtime"], phases["after-recovery"])
	lap("short tasks' exit codes")

	// Long tasks: still running, the same processes, never restarted.
	checkLong := func(when string) {
		t.Helper()
		for _, rt := range longs {
			select {
			case <-waiters[rt].done:
				t.Errorf("%v %s: WaitTask returned while the task should still run: %v, err %v", rt, when, waiters[rt].resp, waiters[rt].err)
			default:
			}
			if !sameProcessAlive(rt.pid, rt.startTime) {
				st, ok := readProcStat(rt.pid)
				t.Errorf("%v %s: task process %d (start time %d) is gone or was replaced (now: %+v, exists %v)", rt, when, rt.pid, rt.startTime, st, ok)
			}
			if !sameProcessAlive(rt.supPid, rt.supStartTime) {
				t.Errorf("%v %s: its supervisor %d is gone", rt, when, rt.supPid)
			}
			if got, want := rt.tk.Stdout.Content(), rt.greeting+"\n"; got != want {
				t.Errorf("%v %s: stdout FIFO = %q, want exactly one greeting %q (restarted?)", rt, when, got, want)
			}
			if rt.tk.Stdout.AtEOF() {
				t.Errorf("%v %s: stdout FIFO closed", rt, when)
			}
		}
		var mu sync.Mutex
		blocked, cancelled := 0, 0
		forEachParallel(longs, relConcurrency*4, func(rt *relTask) {
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			start := time.Now()
			resp, err := h2.Driver.WaitTask(ctx, &drivers.WaitTaskRequest{TaskId: rt.tk.ID})
			took := time.Since(start)
			st := status.Convert(err)
			// tonic ends a call whose grpc-timeout expired on the server
			// side with CANCELLED "Timeout expired" (not DEADLINE_EXCEEDED);
			// either way the deadline passed without a result.
			serverTimeout := st.Code() == codes.Canceled && st.Message() == "Timeout expired" && took >= 250*time.Millisecond
			if st.Code() != codes.DeadlineExceeded && !serverTimeout {
				t.Errorf("%v %s: WaitTask with a 300 ms deadline = %v, err %v after %v; want the deadline to pass (task still running)", rt, when, resp, err, took.Round(time.Millisecond))
				return
			}
			mu.Lock()
			blocked++
			if serverTimeout {
				cancelled++
			}
			mu.Unlock()
		})
		t.Logf("%s: %d/%d long-running tasks still running, same pid and start time (%d WaitTask deadlines ended as tonic's CANCELLED \"Timeout expired\")", when, blocked, len(longs), cancelled)
	}
	checkLong("after recovery")
	if recs := stateRecords(t, stateDir); len(recs) != relTaskCount {
		t.Errorf("state dir has %d records after recovery, want the %d from the start (nothing restarted)", len(recs), relTaskCount)
	}
	lap("long tasks still running")

	// --- recovering again is a no-op ------------------------------------
	again := append(append([]*relTask{}, longs[:5]...), shorts[:5]...)
	for _, rt := range again {
		if _, err := h2.Driver.RecoverTask(rpcCtx(t, 10*time.Second), &drivers.RecoverTaskRequest{Handle: rt.handle}); err != nil {
			t.Errorf("second RecoverTask %v: %v", rt, err)
		}
	}
	for _, rt := range shorts[:5] {
		w, _ := h2.waitTask(t, rt.tk.ID, 5*time.Second)
		requireResult(t, w, int32(rt.exitCode), 0)
	}
	checkLong("after a second RecoverTask")
	if recs := stateRecords(t, stateDir); len(recs) != relTaskCount {
		t.Errorf("state dir has %d records after a second RecoverTask, want %d", len(recs), relTaskCount)
	}
	if t.Failed() {
		t.FailNow()
	}
	lap("second RecoverTask")

	// --- StopTask + DestroyTask everything ------------------------------
	forEachParallel(tasks, relConcurrency, func(rt *relTask) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := h2.Driver.StopTask(ctx, &drivers.StopTaskRequest{TaskId: rt.tk.ID, Timeout: dur(2 * time.Second)}); err != nil {
			t.Errorf("StopTask %v: %v", rt, err)
		}
		if _, err := h2.Driver.DestroyTask(ctx, &drivers.DestroyTaskRequest{TaskId: rt.tk.ID, Force: true}); err != nil {
			t.Errorf("DestroyTask %v: %v", rt, err)
		}
	})
	lap("StopTask + DestroyTask x200")
	for _, rt := range longs {
		w := waiters[rt]
		select {
		case <-w.done:
		case <-time.After(5 * time.Second):
			t.Errorf("%v: WaitTask still blocked 5 s after StopTask + DestroyTask", rt)
			continue
		}
		if w.err != nil {
			t.Errorf("%v: WaitTask after StopTask: %v", rt, w.err)
		} else if r := w.resp.GetResult(); r == nil || (r.GetSignal() == 0 && r.GetExitCode() == 0) {
			t.Errorf("%v: stopped task reported %v, want a signal or a non-zero code", rt, r)
		}
	}

	// Nothing is left: no supervisor, no task process, no record.
	deadline := time.Now().Add(5 * time.Second)
	for {
		sups := supervisorsUnder(stateDir)
		var alive []string
		for _, rt := range tasks {
			if sameProcessAlive(rt.pid, rt.startTime) {
				alive = append(alive, fmt.Sprintf("task %d (%v)", rt.pid, rt))
			}
			if sameProcessAlive(rt.supPid, rt.supStartTime) {
				alive = append(alive, fmt.Sprintf("supervisor %d (%v)", rt.supPid, rt))
			}
		}
		if len(sups) == 0 && len(alive) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("5 s after DestroyTask, %d supervisor processes for %s remain: %v", len(sups), stateDir, sups)
			for _, a := range alive {
				t.Errorf("still alive after DestroyTask: %s", a)
			}
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, rt := range tasks {
		if !rt.tk.Stdout.WaitEOF(2 * time.Second) {
			t.Errorf("%v: stdout FIFO still has a writer after DestroyTask: %v", rt, fifoWriters(rt.tk.Stdout.Path))
		}
	}
	if recs := stateRecords(t, stateDir); len(recs) != 0 {
		t.Errorf("state dir still has %d records after every task was destroyed: %v", len(recs), recs)
	}
	for _, rt := range tasks[:3] {
		_, err := h2.Driver.WaitTask(rpcCtx(t, 5*time.Second), &drivers.WaitTaskRequest{TaskId: rt.tk.ID})
		requireNotFound(t, err, "WaitTask after DestroyTask", rt.tk.ID)
	}
	lap("leak checks")
	t.Logf("TestReliability200 took %v", time.Since(testStart).Round(time.Millisecond))
}
