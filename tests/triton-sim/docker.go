package main

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Container is an sdc-docker container; each one is also a CloudAPI
// machine whose UUID is the first 32 hex digits of the Docker id.
type Container struct {
	ID         string
	Name       string
	Image      string
	Created    time.Time
	Config     map[string]interface{}
	HostConfig map[string]interface{}
	Machine    *Machine
	Status     string // created | running | exited | removed
	ExitCode   int
	StartedAt  time.Time
	FinishedAt time.Time
	done       chan struct{}
	gen        int
	// Behaviour read from the command (see README): how long it runs, the
	// code it exits with, whether it ignores SIGTERM.
	runFor     time.Duration // 0: until stopped
	exitWith   int
	ignoreTerm bool
}

var signals = map[string]int{
	"HUP": 1, "INT": 2, "QUIT": 3, "ABRT": 6, "KILL": 9, "USR1": 10, "USR2": 12, "TERM": 15,
}

func parseSignal(s string) (int, bool) {
	if s == "" {
		return 9, true
	}
	if n, err := strconv.Atoi(s); err == nil && n > 0 && n < 65 {
		return n, true
	}
	n, ok := signals[strings.TrimPrefix(strings.ToUpper(s), "SIG")]
	return n, ok
}

func stringList(v interface{}) []string {
	out := []string{}
	switch l := v.(type) {
	case string:
		out = append(out, l)
	case []interface{}:
		for _, e := range l {
			if s, ok := e.(string); ok {
				out = append(out, s)
			}
		}
	}
	return out
}

// behaviour reads `sleep N`, `exit N` and `trap ” TERM` out of the
// entrypoint and command, and SIM_IGNORE_SIGTERM=1 out of the environment.
func (c *Container) behaviour(delay time.Duration) {
	words := append(stringList(c.Config["Entrypoint"]), stringList(c.Config["Cmd"])...)
	text := strings.Join(words, " ")
	toks := strings.FieldsFunc(text, func(r rune) bool { return r == ' ' || r == ';' || r == '&' || r == '|' || r == '\n' })
	hasExit := false
	for i := 0; i+1 < len(toks); i++ {
		switch toks[i] {
		case "sleep":
			if f, err := strconv.ParseFloat(toks[i+1], 64); err == nil {
				c.runFor = time.Duration(f * float64(time.Second))
			}
		case "exit":
			if n, err := strconv.Atoi(toks[i+1]); err == nil {
				c.exitWith = n
				hasExit = true
			}
		case "trap":
			if i+2 < len(toks) && (toks[i+1] == "''" || toks[i+1] == `""`) && strings.Contains(strings.ToUpper(toks[i+2]), "TERM") {
				c.ignoreTerm = true
			}
		}
	}
	if hasExit && c.runFor == 0 {
		c.runFor = delay
	}
	if c.runFor == 0 && len(words) > 0 && !strings.Contains(text, "sleep") {
		// A command with neither sleep nor exit (e.g. `date`) finishes at once, exit 0.
		switch words[0] {
		case "date", "true", "echo", "hostname", "env":
			c.runFor = delay
		}
	}
	for _, e := range stringList(c.Config["Env"]) {
		if e == "SIM_IGNORE_SIGTERM=1" {
			c.ignoreTerm = true
		}
	}
}

func (s *Sim) findContainerLocked(ref string) *Container {
	if c, ok := s.containers[ref]; ok {
		return c
	}
	for _, c := range s.containers {
		if c.Name == strings.TrimPrefix(ref, "/") || (len(ref) >= 12 && strings.HasPrefix(c.ID, ref)) {
			return c
		}
	}
	return nil
}

func (s *Sim) startContainerLocked(c *Container) {
	c.Status = "running"
	c.ExitCode = 0
	c.StartedAt = time.Now().UTC()
	c.FinishedAt = time.Time{}
	c.done = make(chan struct{})
	c.gen++
	if c.Machine != nil {
		s.assignIPsLocked(c.Machine)
		c.Machine.setState("running")
	}
	if c.runFor > 0 {
		gen := c.gen
		time.AfterFunc(c.runFor, func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			if c.gen == gen && c.Status == "running" {
				s.exitContainerLocked(c, c.exitWith)
			}
		})
	}
}

func (s *Sim) exitContainerLocked(c *Container, code int) {
	if c.Status != "running" {
		return
	}
	c.Status = "exited"
	c.ExitCode = code
	c.FinishedAt = time.Now().UTC()
	c.gen++
	close(c.done)
	if c.Machine != nil && c.Machine.State != "deleted" {
		c.Machine.setState("stopped")
	}
}

func (s *Sim) removeContainerLocked(c *Container) {
	s.exitContainerLocked(c, 137)
	c.Status = "removed"
	delete(s.containers, c.ID)
	if c.Machine != nil {
		c.Machine.container = nil
	}
}

func normalizeImage(name string) string {
	last := name[strings.LastIndex(name, "/")+1:]
	if !strings.Contains(last, ":") && !strings.Contains(last, "@") {
		return name + ":latest"
	}
	return name
}

func (c *Container) stateName() string {
	switch c.Status {
	case "running":
		return "running"
	case "created":
		return "created"
	}
	return "exited"
}

func (c *Container) inspectLocked() map[string]interface{} {
	fmtTime := func(t time.Time) string {
		if t.IsZero() {
			return "0001-01-01T00:00:00Z"
		}
		return t.Format(time.RFC3339Nano)
	}
	ip := ""
	if c.Machine != nil {
		ip = c.Machine.PrimaryIP
	}
	return map[string]interface{}{
		"Id": c.ID, "Name": "/" + c.Name, "Image": c.Image, "Created": c.Created.Format(time.RFC3339Nano),
		"State": map[string]interface{}{
			"Status": c.stateName(), "Running": c.Status == "running", "Paused": false, "Restarting": false,
			"OOMKilled": false, "Dead": false, "Pid": 0, "ExitCode": c.ExitCode, "Error": "",
			"StartedAt": fmtTime(c.StartedAt), "FinishedAt": fmtTime(c.FinishedAt),
		},
		"Config": c.Config, "HostConfig": c.HostConfig,
		"NetworkSettings": map[string]interface{}{"IPAddress": ip},
	}
}

func (s *Sim) serveDocker(w http.ResponseWriter, r *http.Request, path string) {
	parts := strings.Split(strings.Trim(path, "/"), "/")
	switch {
	case path == "/_ping":
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write([]byte("OK"))
	case path == "/version":
		writeJSON(w, http.StatusOK, map[string]string{"Version": "1.9.0", "ApiVersion": "1.24", "Os": "solaris", "Arch": "amd64", "GoVersion": "n/a (triton-sim)"})
	case path == "/info":
		s.mu.Lock()
		n := len(s.containers)
		s.mu.Unlock()
		writeJSON(w, http.StatusOK, map[string]interface{}{"Containers": n, "Driver": "sdc", "Name": "triton-sim", "OperatingSystem": "SmartDataCenter"})
	case parts[0] == "images":
		s.serveDockerImages(w, r, parts[1:])
	case len(parts) == 2 && parts[1] == "json" && r.Method == http.MethodGet:
		s.listContainers(w, r)
	case len(parts) == 2 && parts[1] == "create" && r.Method == http.MethodPost:
		s.createContainer(w, r)
	case len(parts) >= 2:
		s.containerOp(w, r, parts[1], parts[2:])
	default:
		dockerError(w, http.StatusNotFound, "page not found")
	}
}

func (s *Sim) serveDockerImages(w http.ResponseWriter, r *http.Request, rest []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case len(rest) == 1 && rest[0] == "create" && r.Method == http.MethodPost:
		from := r.URL.Query().Get("fromImage")
		if from == "" {
			dockerError(w, http.StatusBadRequest, "fromImage is required")
			return
		}
		name := from
		if tag := r.URL.Query().Get("tag"); tag != "" {
			name = from + ":" + tag
		}
		name = normalizeImage(name)
		if strings.HasPrefix(from, "private/") || strings.Contains(from, ".example.com/") {
			user := ""
			if raw := r.Header.Get("X-Registry-Auth"); raw != "" {
				var auth map[string]interface{}
				for _, dec := range []*base64.Encoding{base64.URLEncoding, base64.StdEncoding, base64.RawURLEncoding, base64.RawStdEncoding} {
					if b, err := dec.DecodeString(raw); err == nil && json.Unmarshal(b, &auth) == nil {
						break
					}
				}
				user, _ = auth["username"].(string)
			}
			if user == "" {
				dockerError(w, http.StatusInternalServerError, "unauthorized: authentication required to pull %s", name)
				return
			}
		}
		if strings.HasPrefix(from, "missing/") {
			dockerError(w, http.StatusNotFound, "Error: image %s not found", name)
			return
		}
		s.dockerImgs[name] = true
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		for _, line := range []string{"Pulling from " + from, "Digest: sha256:" + strings.Repeat("0", 64), "Status: Downloaded newer image for " + name} {
			b, _ := json.Marshal(map[string]string{"status": line})
			_, _ = w.Write(append(b, '\n'))
		}
	case len(rest) == 1 && rest[0] == "json" && r.Method == http.MethodGet:
		out := []map[string]interface{}{}
		names := []string{}
		for n := range s.dockerImgs {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			out = append(out, map[string]interface{}{"Id": imageID(n), "RepoTags": []string{n}})
		}
		writeJSON(w, http.StatusOK, out)
	case len(rest) >= 2 && rest[len(rest)-1] == "json" && r.Method == http.MethodGet:
		name := normalizeImage(strings.Join(rest[:len(rest)-1], "/"))
		if !s.dockerImgs[name] {
			dockerError(w, http.StatusNotFound, "No such image: %s", name)
			return
		}
		writeJSON(w, http.StatusOK, map[string]interface{}{"Id": imageID(name), "RepoTags": []string{name}})
	default:
		dockerError(w, http.StatusNotFound, "page not found")
	}
}

func imageID(name string) string {
	sum := 0
	for _, c := range name {
		sum = sum*31 + int(c)
	}
	return fmt.Sprintf("sha256:%064x", uint64(sum))
}

func (s *Sim) listContainers(w http.ResponseWriter, r *http.Request) {
	all := r.URL.Query().Get("all")
	s.mu.Lock()
	defer s.mu.Unlock()
	out := []map[string]interface{}{}
	ids := []string{}
	for id := range s.containers {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		c := s.containers[id]
		if c.Status != "running" && all != "1" && all != "true" {
			continue
		}
		out = append(out, map[string]interface{}{"Id": c.ID, "Names": []string{"/" + c.Name}, "Image": c.Image,
			"Command": strings.Join(stringList(c.Config["Cmd"]), " "), "Created": c.Created.Unix(),
			"State": c.stateName(), "Status": c.stateName(), "Labels": c.Config["Labels"]})
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Sim) createContainer(w http.ResponseWriter, r *http.Request) {
	var cfg map[string]interface{}
	dec := json.NewDecoder(r.Body)
	dec.UseNumber()
	if err := dec.Decode(&cfg); err != nil {
		dockerError(w, http.StatusBadRequest, "body is not a JSON object: %v", err)
		return
	}
	image, _ := cfg["Image"].(string)
	if image == "" {
		dockerError(w, http.StatusBadRequest, "Config.Image is required")
		return
	}
	hostCfg, _ := cfg["HostConfig"].(map[string]interface{})
	if hostCfg == nil {
		hostCfg = map[string]interface{}{}
	}
	delete(cfg, "HostConfig")
	labels := map[string]string{}
	if raw, ok := cfg["Labels"]; ok && raw != nil {
		obj, ok := raw.(map[string]interface{})
		if !ok {
			dockerError(w, http.StatusBadRequest, "Labels must be an object of strings")
			return
		}
		for k, v := range obj {
			sv, ok := v.(string)
			if !ok {
				dockerError(w, http.StatusBadRequest, "label %s must be a string", k)
				return
			}
			labels[k] = sv
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	name := r.URL.Query().Get("name")
	if name != "" {
		if other := s.findContainerLocked(name); other != nil {
			dockerError(w, http.StatusConflict, "Conflict. The name %q is already in use by container %s.", name, other.ID)
			return
		}
	}
	img := normalizeImage(image)
	if !s.dockerImgs[img] {
		dockerError(w, http.StatusNotFound, "No such image: %s", img)
		return
	}
	var pkg *Package
	if ref, ok := labels["com.joyent.package"]; ok {
		pkg = s.findPackageLocked(ref)
		if pkg == nil {
			dockerError(w, http.StatusBadRequest, "package %q (label com.joyent.package) not found", ref)
			return
		}
	} else {
		for _, p := range s.packages {
			if p.Default {
				pkg = p
			}
		}
	}
	networks := []string{NetFabric}
	if mode, _ := hostCfg["NetworkMode"].(string); mode != "" && mode != "default" && mode != "bridge" {
		found := ""
		for _, n := range s.networks {
			if (n.Name == mode || n.ID == mode) && !n.Public {
				found = n.ID
			}
		}
		if found == "" {
			dockerError(w, http.StatusNotFound, "network %s not found", mode)
			return
		}
		networks = []string{found}
	}
	publish := false
	if b, ok := hostCfg["PublishAllPorts"].(bool); ok && b {
		publish = true
	}
	if pb, ok := hostCfg["PortBindings"].(map[string]interface{}); ok && len(pb) > 0 {
		publish = true
	}
	if pub, ok := labels["triton.network.public"]; ok {
		found := ""
		for _, n := range s.networks {
			if (n.Name == pub || n.ID == pub) && n.Public {
				found = n.ID
			}
		}
		if found == "" {
			dockerError(w, http.StatusNotFound, "public network %s (label triton.network.public) not found", pub)
			return
		}
		networks = append(networks, found)
	} else if publish {
		networks = append(networks, NetPublic)
	}
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		dockerError(w, http.StatusInternalServerError, "random: %v", err)
		return
	}
	raw[6] = (raw[6] & 0x0f) | 0x40
	raw[8] = (raw[8] & 0x3f) | 0x80
	id := hex.EncodeToString(raw[:])
	uuid := id[0:8] + "-" + id[8:12] + "-" + id[12:16] + "-" + id[16:20] + "-" + id[20:32]
	if name == "" {
		name = "sim-" + id[:8]
	}
	c := &Container{ID: id, Name: name, Image: img, Created: time.Now().UTC(), Config: cfg, HostConfig: hostCfg, Status: "created"}
	c.behaviour(s.cfg.TransitionDelay)
	m := &Machine{ID: uuid, Name: name, Brand: "lx", Type: "smartmachine", Package: pkg, Image: imageID(img),
		Metadata: map[string]string{}, Tags: map[string]interface{}{}, Created: nowISO(), Docker: true, Networks: networks, container: c}
	m.Updated = m.Created
	for k, v := range labels {
		if strings.HasPrefix(k, "triton.") {
			m.Tags[k] = v
		} else {
			m.Tags["docker:label:"+k] = v
		}
	}
	m.State = "stopped"
	c.Machine = m
	s.machines[m.ID] = m
	s.containers[c.ID] = c
	writeJSON(w, http.StatusCreated, map[string]interface{}{"Id": c.ID, "Warnings": []string{}})
}

func (s *Sim) containerOp(w http.ResponseWriter, r *http.Request, ref string, rest []string) {
	s.mu.Lock()
	c := s.findContainerLocked(ref)
	if c == nil {
		s.mu.Unlock()
		dockerError(w, http.StatusNotFound, "No such container: %s", ref)
		return
	}
	op := ""
	if len(rest) > 0 {
		op = rest[0]
	}
	q := r.URL.Query()
	switch {
	case op == "" && r.Method == http.MethodDelete:
		force := q.Get("force") == "1" || q.Get("force") == "true"
		if c.Status == "running" && !force {
			s.mu.Unlock()
			dockerError(w, http.StatusConflict, "You cannot remove a running container %s. Stop the container before attempting removal or use -f", c.ID)
			return
		}
		s.removeContainerLocked(c)
		if m := c.Machine; m != nil {
			m.setState("deleted")
			m.IPs, m.PrimaryIP = nil, ""
		}
		s.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	case op == "json" && r.Method == http.MethodGet:
		out := c.inspectLocked()
		s.mu.Unlock()
		writeJSON(w, http.StatusOK, out)
	case op == "start" && r.Method == http.MethodPost:
		if c.Status == "running" {
			s.mu.Unlock()
			w.WriteHeader(http.StatusNotModified)
			return
		}
		s.startContainerLocked(c)
		s.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	case op == "stop" && r.Method == http.MethodPost:
		if c.Status != "running" {
			s.mu.Unlock()
			w.WriteHeader(http.StatusNotModified)
			return
		}
		t := 10
		if v := q.Get("t"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				s.mu.Unlock()
				dockerError(w, http.StatusBadRequest, "t must be a non-negative number of seconds, got %q", v)
				return
			}
			t = n
		}
		done := c.done
		if !c.ignoreTerm {
			s.exitContainerLocked(c, 143)
		}
		s.mu.Unlock()
		select {
		case <-done:
		case <-time.After(time.Duration(t) * time.Second):
			s.mu.Lock()
			s.exitContainerLocked(c, 137)
			s.mu.Unlock()
		case <-r.Context().Done():
			return
		}
		w.WriteHeader(http.StatusNoContent)
	case op == "kill" && r.Method == http.MethodPost:
		sig, ok := parseSignal(q.Get("signal"))
		if !ok {
			s.mu.Unlock()
			dockerError(w, http.StatusBadRequest, "Invalid signal: %s", q.Get("signal"))
			return
		}
		if c.Status != "running" {
			s.mu.Unlock()
			dockerError(w, http.StatusConflict, "Container %s is not running", c.ID)
			return
		}
		if !(sig == 15 && c.ignoreTerm) && sig != 10 && sig != 12 {
			s.exitContainerLocked(c, 128+sig)
		}
		s.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	case op == "wait" && r.Method == http.MethodPost:
		if c.Status == "created" {
			// Waiting on a never-started container blocks until it starts and ends;
			// the simulator answers with its current code instead of hanging forever.
			code := c.ExitCode
			s.mu.Unlock()
			writeJSON(w, http.StatusOK, map[string]int{"StatusCode": code})
			return
		}
		done := c.done
		s.mu.Unlock()
		select {
		case <-done:
		case <-r.Context().Done():
			return
		}
		s.mu.Lock()
		code := c.ExitCode
		s.mu.Unlock()
		writeJSON(w, http.StatusOK, map[string]int{"StatusCode": code})
	case op == "stats" && r.Method == http.MethodGet:
		stream := q.Get("stream") != "0" && q.Get("stream") != "false"
		s.mu.Unlock()
		s.serveStats(w, r, c, stream)
	default:
		s.mu.Unlock()
		dockerError(w, http.StatusNotFound, "%s %s is not implemented by the simulator", r.Method, r.URL.Path)
	}
}

// serveStats writes Docker stats documents: a running container uses a
// quarter of one CPU (three quarters of that in user mode), so its CPU time
// grows with the time it has run; memory is a fixed share of its package.
// As in API 1.24 (what sdc-docker speaks), each document has cpu_stats and
// precpu_stats, the reading one second earlier (as Docker's one-shot stats
// give), and no online_cpus: the CPU count is the length of percpu_usage
// (one). A running container's sample thus says 25 % CPU, 18.75 % user,
// 6.25 % system; a stopped one's 0 %.
func (s *Sim) serveStats(w http.ResponseWriter, r *http.Request, c *Container, stream bool) {
	cpuAt := func(at time.Time) map[string]interface{} {
		var ran time.Duration
		if !c.StartedAt.IsZero() && at.After(c.StartedAt) {
			end := at
			if c.Status != "running" && c.FinishedAt.Before(end) {
				end = c.FinishedAt
			}
			ran = end.Sub(c.StartedAt)
		}
		total := uint64(ran.Nanoseconds() / 4)
		return map[string]interface{}{
			"cpu_usage":        map[string]interface{}{"total_usage": total, "percpu_usage": []uint64{total}, "usage_in_kernelmode": total / 4, "usage_in_usermode": total - total/4},
			"system_cpu_usage": uint64(at.UnixNano()),
			"throttling_data":  map[string]interface{}{"periods": 0, "throttled_periods": 0, "throttled_time": 0},
		}
	}
	sample := func() map[string]interface{} {
		s.mu.Lock()
		defer s.mu.Unlock()
		now := time.Now().UTC()
		limit := uint64(1024) << 20
		if c.Machine != nil && c.Machine.Package != nil {
			limit = uint64(c.Machine.Package.Memory) << 20
		}
		usage := uint64(0)
		if c.Status == "running" {
			usage = limit / 8
		}
		pre := now.Add(-time.Second)
		return map[string]interface{}{
			"read":         now.Format(time.RFC3339Nano),
			"preread":      pre.Format(time.RFC3339Nano),
			"cpu_stats":    cpuAt(now),
			"precpu_stats": cpuAt(pre),
			"memory_stats": map[string]interface{}{"usage": usage, "max_usage": usage, "limit": limit},
		}
	}
	if !stream {
		writeJSON(w, http.StatusOK, sample())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	enc := json.NewEncoder(w)
	for i := 0; i < 600; i++ {
		if err := enc.Encode(sample()); err != nil {
			return
		}
		if f, ok := w.(http.Flusher); ok {
			f.Flush()
		}
		select {
		case <-time.After(time.Second):
		case <-r.Context().Done():
			return
		}
	}
}
