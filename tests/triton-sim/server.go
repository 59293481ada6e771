package main

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// APIVersion is the CloudAPI version the simulator answers as.
const APIVersion = "9.20.0"

// Config holds the simulator's settings.
type Config struct {
	Account                string
	Datacenter             string
	TransitionDelay        time.Duration // provisioning->running, stopping->stopped, ...
	RequireDockerTLSClient bool          // docker routes need a verified TLS client certificate
}

// FaultRule makes matching requests fail with Status before they reach the API.
type FaultRule struct {
	Method     string `json:"method,omitempty"`      // empty: any
	PathPrefix string `json:"path_prefix,omitempty"` // empty: any
	Status     int    `json:"status"`                // 503, 429, 420, ...
	Code       string `json:"code,omitempty"`        // CloudAPI error code in the body
	Count      int    `json:"count"`                 // how many requests to fail (<=0: 1)
	RetryAfter int    `json:"retry_after,omitempty"` // seconds, sent as Retry-After
	Reset      bool   `json:"reset,omitempty"`       // drop the connection instead of answering
}

// Faults are the injected faults, set through POST /__sim/faults.
type Faults struct {
	LatencyMS int         `json:"latency_ms"`
	Errors    []FaultRule `json:"errors"`
	// Machines whose name starts with one of these go provisioning -> failed.
	FailProvision []string `json:"fail_provision"`
}

// LoggedRequest is one entry of the request log (GET /__sim/requests).
type LoggedRequest struct {
	Seq       int               `json:"seq"`
	Time      string            `json:"time"`
	API       string            `json:"api"` // cloudapi | docker
	Method    string            `json:"method"`
	Path      string            `json:"path"`
	Query     string            `json:"query"`
	Headers   map[string]string `json:"headers"`
	Body      string            `json:"body"`
	Status    int               `json:"status"`
	Fault     bool              `json:"fault,omitempty"`
	KeyID     string            `json:"key_id,omitempty"`
	Algorithm string            `json:"algorithm,omitempty"`
	Signed    []string          `json:"signed_headers,omitempty"`
	AuthOK    bool              `json:"auth_ok"`
	AuthError string            `json:"auth_error,omitempty"`
}

// Sim is the whole simulated datacenter.
type Sim struct {
	cfg  Config
	auth *Authenticator

	mu         sync.Mutex
	faults     Faults
	log        []LoggedRequest
	seq        int
	packages   []*Package
	images     []*Image
	networks   []*Network
	machines   map[string]*Machine
	fwrules    map[string]*FWRule
	containers map[string]*Container
	dockerImgs map[string]bool
	nextIP     int
}

// NewSim builds a simulator with the default fixtures.
func NewSim(cfg Config, auth *Authenticator) *Sim {
	s := &Sim{
		cfg:        cfg,
		auth:       auth,
		machines:   map[string]*Machine{},
		fwrules:    map[string]*FWRule{},
		containers: map[string]*Container{},
		dockerImgs: map[string]bool{},
		nextIP:     10,
	}
	s.loadDefaultFixtures()
	return s
}

func newUUID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	b[6] = (b[6] & 0x0f) | 0x40
	b[8] = (b[8] & 0x3f) | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

func nowISO() string { return time.Now().UTC().Format("2006-01-02T15:04:05.000Z") }

// cloudError writes CloudAPI's error body.
func cloudError(w http.ResponseWriter, status int, code, format string, args ...interface{}) {
	writeJSON(w, status, map[string]string{"code": code, "message": fmt.Sprintf(format, args...)})
}

// dockerError writes the Docker Remote API's error body.
func dockerError(w http.ResponseWriter, status int, format string, args ...interface{}) {
	writeJSON(w, status, map[string]string{"message": fmt.Sprintf(format, args...)})
}

func writeJSON(w http.ResponseWriter, status int, v interface{}) {
	b, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		b = []byte(`{"code":"InternalError","message":"encoding failed"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

func (s *statusRecorder) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// isDockerPath tells the sdc-docker routes from CloudAPI's (/:login/...).
func isDockerPath(p string) (string, bool) {
	rest := p
	if strings.HasPrefix(rest, "/v1.") {
		if i := strings.IndexByte(rest[1:], '/'); i >= 0 {
			rest = rest[1+i:]
		}
	}
	for _, prefix := range []string{"/containers/", "/images/", "/_ping", "/version", "/info"} {
		if strings.HasPrefix(rest, prefix) || rest == strings.TrimSuffix(prefix, "/") {
			return rest, true
		}
	}
	return p, false
}

func (s *Sim) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, "/__sim/") {
		s.serveAdmin(w, r)
		return
	}
	body, _ := io.ReadAll(io.LimitReader(r.Body, 4<<20))
	r.Body = io.NopCloser(bytes.NewReader(body))
	dockerPath, docker := isDockerPath(r.URL.Path)
	entry := LoggedRequest{
		Time:    time.Now().UTC().Format(time.RFC3339Nano),
		API:     "cloudapi",
		Method:  r.Method,
		Path:    r.URL.Path,
		Query:   r.URL.RawQuery,
		Headers: map[string]string{},
		Body:    string(body),
	}
	if docker {
		entry.API = "docker"
	}
	for k, v := range r.Header {
		entry.Headers[strings.ToLower(k)] = strings.Join(v, ", ")
	}
	rec := &statusRecorder{ResponseWriter: w}
	defer func() {
		entry.Status = rec.status
		s.mu.Lock()
		s.seq++
		entry.Seq = s.seq
		s.log = append(s.log, entry)
		s.mu.Unlock()
	}()

	s.mu.Lock()
	latency := time.Duration(s.faults.LatencyMS) * time.Millisecond
	s.mu.Unlock()
	if latency > 0 {
		select {
		case <-time.After(latency):
		case <-r.Context().Done():
			return
		}
	}
	if rule := s.takeFault(r); rule != nil {
		entry.Fault = true
		if rule.Reset {
			if hj, ok := w.(http.Hijacker); ok {
				if conn, _, err := hj.Hijack(); err == nil {
					_ = conn.Close()
					rec.status = -1
					return
				}
			}
		}
		if rule.RetryAfter > 0 {
			rec.Header().Set("Retry-After", strconv.Itoa(rule.RetryAfter))
		}
		code := rule.Code
		if code == "" {
			switch rule.Status {
			case 420, 429:
				code = "RequestThrottled"
			case 503:
				code = "ServiceUnavailable"
			default:
				code = "InternalError"
			}
		}
		cloudError(rec, rule.Status, code, "injected fault: %d %s", rule.Status, code)
		return
	}

	if docker {
		if s.cfg.RequireDockerTLSClient && (r.TLS == nil || len(r.TLS.VerifiedChains) == 0) {
			dockerError(rec, http.StatusUnauthorized, "sdc-docker needs a TLS client certificate signed by the configured CA")
			return
		}
		entry.AuthOK = true
		s.serveDocker(rec, r, dockerPath)
		return
	}

	rec.Header().Set("Server", "cloudapi/"+APIVersion)
	rec.Header().Set("Api-Version", APIVersion)
	rec.Header().Set("Request-Id", newUUID())
	if s.cfg.Datacenter != "" {
		rec.Header().Set("Triton-Datacenter-Name", s.cfg.Datacenter)
	}
	if r.URL.Path == "/--ping" {
		writeJSON(rec, http.StatusOK, map[string]interface{}{
			"ping":     "pong",
			"cloudapi": map[string]interface{}{"versions": []string{"7.0.0", "7.1.0", "7.2.0", "7.3.0", "8.0.0", "9.0.0"}},
		})
		return
	}
	if v := acceptVersion(r); v != "" && !versionSupported(v) {
		cloudError(rec, http.StatusBadRequest, "InvalidVersion", "%s is not supported by %s %s", v, r.Method, r.URL.Path)
		return
	}
	principal, params, aerr := s.auth.Authenticate(r)
	if params != nil {
		entry.KeyID, entry.Algorithm, entry.Signed = params.KeyID, params.Algorithm, params.Headers
	}
	if aerr != nil {
		entry.AuthError = aerr.Error()
		cloudError(rec, aerr.Status, aerr.Code, "%s", aerr.Message)
		return
	}
	entry.AuthOK = true
	s.serveCloudAPI(rec, r, principal)
}

func acceptVersion(r *http.Request) string {
	if v := r.Header.Get("Accept-Version"); v != "" {
		return v
	}
	return r.Header.Get("Api-Version")
}

// versionSupported accepts the semver ranges clients send (`~9||~8`, `~8`,
// `*`, `9.x`, `8.3.0`, `>=7.0.0`) when one alternative admits 7, 8 or 9.
func versionSupported(v string) bool {
	for _, alt := range strings.Split(v, "||") {
		alt = strings.TrimSpace(alt)
		if alt == "*" || alt == "" {
			return true
		}
		alt = strings.TrimLeft(alt, "~^>=v ")
		major := alt
		if i := strings.IndexByte(alt, '.'); i >= 0 {
			major = alt[:i]
		}
		if major == "7" || major == "8" || major == "9" {
			return true
		}
	}
	return false
}

func (s *Sim) takeFault(r *http.Request) *FaultRule {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range s.faults.Errors {
		f := &s.faults.Errors[i]
		if f.Count <= 0 {
			continue
		}
		if f.Method != "" && !strings.EqualFold(f.Method, r.Method) {
			continue
		}
		if f.PathPrefix != "" && !strings.HasPrefix(r.URL.Path, f.PathPrefix) {
			continue
		}
		f.Count--
		out := *f
		return &out
	}
	return nil
}

// serveAdmin is the unauthenticated control surface for tests:
//
//	GET    /__sim/requests            request log (JSON array); ?since=SEQ
//	DELETE /__sim/requests            clear the log
//	GET    /__sim/faults, POST /__sim/faults   read / replace injected faults
//	POST   /__sim/machines/:id/state  {"state":"failed"|"stopped"|"running"} force a state
//	POST   /__sim/containers/:id/exit {"code":N} end a container with exit code N
//	GET    /__sim/state               machines, fwrules, containers (JSON)
func (s *Sim) serveAdmin(w http.ResponseWriter, r *http.Request) {
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	switch {
	case len(parts) == 2 && parts[1] == "requests" && r.Method == http.MethodGet:
		since, _ := strconv.Atoi(r.URL.Query().Get("since"))
		s.mu.Lock()
		out := []LoggedRequest{}
		for _, e := range s.log {
			if e.Seq > since {
				out = append(out, e)
			}
		}
		s.mu.Unlock()
		writeJSON(w, http.StatusOK, out)
	case len(parts) == 2 && parts[1] == "requests" && r.Method == http.MethodDelete:
		s.mu.Lock()
		s.log = nil
		s.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	case len(parts) == 2 && parts[1] == "faults" && r.Method == http.MethodGet:
		s.mu.Lock()
		f := s.faults
		s.mu.Unlock()
		writeJSON(w, http.StatusOK, f)
	case len(parts) == 2 && parts[1] == "faults" && r.Method == http.MethodPost:
		var f Faults
		dec := json.NewDecoder(r.Body)
		dec.DisallowUnknownFields()
		if err := dec.Decode(&f); err != nil {
			cloudError(w, http.StatusBadRequest, "BadRequest", "faults: %v", err)
			return
		}
		for i := range f.Errors {
			if f.Errors[i].Count <= 0 {
				f.Errors[i].Count = 1
			}
			if f.Errors[i].Status == 0 && !f.Errors[i].Reset {
				cloudError(w, http.StatusBadRequest, "BadRequest", "faults: errors[%d].status is required", i)
				return
			}
		}
		s.mu.Lock()
		s.faults = f
		s.mu.Unlock()
		writeJSON(w, http.StatusOK, f)
	case len(parts) == 4 && parts[1] == "machines" && parts[3] == "state" && r.Method == http.MethodPost:
		var body struct {
			State string `json:"state"`
		}
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			cloudError(w, http.StatusBadRequest, "BadRequest", "state: %v", err)
			return
		}
		if err := s.forceMachineState(parts[2], body.State); err != nil {
			cloudError(w, http.StatusNotFound, "ResourceNotFound", "%v", err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	case len(parts) == 4 && parts[1] == "containers" && parts[3] == "exit" && r.Method == http.MethodPost:
		var body struct {
			Code int `json:"code"`
		}
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			cloudError(w, http.StatusBadRequest, "BadRequest", "exit: %v", err)
			return
		}
		s.mu.Lock()
		c := s.findContainerLocked(parts[2])
		if c != nil {
			s.exitContainerLocked(c, body.Code)
		}
		s.mu.Unlock()
		if c == nil {
			cloudError(w, http.StatusNotFound, "ResourceNotFound", "no such container %s", parts[2])
			return
		}
		w.WriteHeader(http.StatusNoContent)
	case len(parts) == 2 && parts[1] == "state" && r.Method == http.MethodGet:
		s.mu.Lock()
		ms := []map[string]interface{}{}
		ids := make([]string, 0, len(s.machines))
		for id := range s.machines {
			ids = append(ids, id)
		}
		sort.Strings(ids)
		for _, id := range ids {
			ms = append(ms, s.machines[id].toJSON())
		}
		rules := []*FWRule{}
		for _, fr := range s.fwrules {
			rules = append(rules, fr)
		}
		cs := []map[string]interface{}{}
		for _, c := range s.containers {
			cs = append(cs, c.inspectLocked())
		}
		s.mu.Unlock()
		writeJSON(w, http.StatusOK, map[string]interface{}{"machines": ms, "fwrules": rules, "containers": cs})
	default:
		cloudError(w, http.StatusNotFound, "ResourceNotFound", "%s %s is not an admin route", r.Method, r.URL.Path)
	}
}
