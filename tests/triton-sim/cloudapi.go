package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Machine is a CloudAPI instance.
type Machine struct {
	ID                 string
	Name               string
	Brand              string
	Type               string
	State              string
	Image              string
	Package            *Package
	Metadata           map[string]string
	Tags               map[string]interface{}
	Affinity           []string
	Created, Updated   string
	Docker             bool
	FirewallEnabled    bool
	DeletionProtection bool
	Networks           []string
	IPs                []string
	PrimaryIP          string
	failProvision      bool
	gen                int // bumped on every transition; stale timers check it
	container          *Container
}

// FWRule is a CloudAPI firewall rule.
type FWRule struct {
	ID          string `json:"id"`
	Rule        string `json:"rule"`
	Enabled     bool   `json:"enabled"`
	Global      bool   `json:"global"`
	Log         bool   `json:"log"`
	Description string `json:"description"`
}

func (m *Machine) toJSON() map[string]interface{} {
	nics := []map[string]interface{}{}
	for i, ip := range m.IPs {
		nics = append(nics, map[string]interface{}{
			"ip": ip, "network": m.Networks[i], "primary": ip == m.PrimaryIP,
			"mac": fmt.Sprintf("90:b8:d0:%02x:%02x:%02x", i, len(m.ID), len(m.Name)%256), "state": "running",
		})
	}
	tags := m.Tags
	if tags == nil {
		tags = map[string]interface{}{}
	}
	md := map[string]string{}
	for k, v := range m.Metadata {
		if k != "credentials" {
			md[k] = v
		}
	}
	out := map[string]interface{}{
		"id": m.ID, "name": m.Name, "type": m.Type, "brand": m.Brand, "state": m.State,
		"image": m.Image, "ips": append([]string{}, m.IPs...), "memory": m.Package.Memory, "disk": m.Package.Disk,
		"metadata": md, "tags": tags, "created": m.Created, "updated": m.Updated, "docker": m.Docker,
		"firewall_enabled": m.FirewallEnabled, "deletion_protection": m.DeletionProtection,
		"compute_node": "44454c4c-5400-1034-8052-b5c04f383432", "package": m.Package.Name,
		"networks": append([]string{}, m.Networks...), "nics": nics, "dns_names": m.dnsNames(),
	}
	if m.PrimaryIP != "" {
		out["primaryIp"] = m.PrimaryIP
	}
	return out
}

func (m *Machine) dnsNames() []string {
	names := []string{}
	if m.State != "running" {
		return names
	}
	names = append(names, m.ID+".inst.sim.triton.zone", m.Name+".inst.sim.triton.zone")
	if svcs, ok := m.Tags["triton.cns.services"].(string); ok {
		for _, svc := range strings.Split(svcs, ",") {
			name := strings.SplitN(strings.TrimSpace(svc), ":", 2)[0]
			if name != "" {
				names = append(names, name+".svc.sim.triton.zone")
			}
		}
	}
	return names
}

// schedule runs fn under the lock after the transition delay unless the
// machine changed state in between.
func (s *Sim) schedule(m *Machine, fn func()) {
	m.gen++
	gen := m.gen
	time.AfterFunc(s.cfg.TransitionDelay, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if m.gen == gen {
			fn()
		}
	})
}

func (m *Machine) setState(state string) {
	m.State = state
	m.Updated = nowISO()
	m.gen++
}

func (s *Sim) assignIPsLocked(m *Machine) {
	if len(m.IPs) > 0 {
		return
	}
	for _, nid := range m.Networks {
		for _, n := range s.networks {
			if n.ID == nid {
				s.nextIP++
				ip := fmt.Sprintf("%s%d", n.prefix, 10+s.nextIP%240)
				m.IPs = append(m.IPs, ip)
				if m.PrimaryIP == "" || n.Public {
					m.PrimaryIP = ip
				}
			}
		}
	}
}

func (s *Sim) forceMachineState(id, state string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.machines[id]
	if m == nil {
		return fmt.Errorf("no such machine %s", id)
	}
	switch state {
	case "failed", "stopped", "running", "deleted", "offline", "unknown":
	default:
		return fmt.Errorf("state %q cannot be forced", state)
	}
	m.setState(state)
	if state == "running" {
		s.assignIPsLocked(m)
	}
	if m.container != nil && state != "running" {
		s.exitContainerLocked(m.container, 137)
	}
	return nil
}

// readBody decodes a JSON object or a form body into a flat map.
func readBody(r *http.Request) (map[string]interface{}, error) {
	out := map[string]interface{}{}
	ct := r.Header.Get("Content-Type")
	if strings.HasPrefix(ct, "application/x-www-form-urlencoded") {
		if err := r.ParseForm(); err != nil {
			return nil, err
		}
		for k, v := range r.PostForm {
			if len(v) == 1 {
				out[k] = v[0]
			} else {
				out[k] = v
			}
		}
		return out, nil
	}
	dec := json.NewDecoder(r.Body)
	dec.UseNumber()
	if err := dec.Decode(&out); err != nil {
		if err.Error() == "EOF" {
			return out, nil
		}
		return nil, fmt.Errorf("body is not a JSON object: %v", err)
	}
	return out, nil
}

func asBool(v interface{}) (bool, bool) {
	switch b := v.(type) {
	case bool:
		return b, true
	case string:
		switch b {
		case "true":
			return true, true
		case "false":
			return false, true
		}
	}
	return false, false
}

func asStringList(v interface{}) ([]string, bool) {
	switch l := v.(type) {
	case string:
		if l == "" {
			return nil, true
		}
		return strings.Split(l, ","), true
	case []string:
		return l, true
	case []interface{}:
		out := []string{}
		for _, e := range l {
			switch x := e.(type) {
			case string:
				out = append(out, x)
			case map[string]interface{}:
				id, ok := x["ipv4_uuid"].(string)
				if !ok {
					return nil, false
				}
				out = append(out, id)
			default:
				return nil, false
			}
		}
		return out, true
	}
	return nil, false
}

func tagValue(v interface{}) (interface{}, bool) {
	switch x := v.(type) {
	case string, bool:
		return x, true
	case json.Number:
		if f, err := x.Float64(); err == nil {
			return f, true
		}
	}
	return nil, false
}

func (s *Sim) findPackageLocked(ref string) *Package {
	for _, p := range s.packages {
		if p.ID == ref {
			return p
		}
	}
	var found *Package
	for _, p := range s.packages {
		if p.Name == ref || (len(ref) == 8 && strings.HasPrefix(p.ID, ref)) {
			found = p // the last listed (newest version) wins, as for names
		}
	}
	return found
}

func (s *Sim) serveCloudAPI(w http.ResponseWriter, r *http.Request, who *Principal) {
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	for i, p := range parts {
		if u, err := url.PathUnescape(p); err == nil {
			parts[i] = u
		}
	}
	login := parts[0]
	if login != "my" && login != who.Account {
		cloudError(w, http.StatusForbidden, "NotAuthorized", "You do not have permission to access %s", login)
		return
	}
	if len(parts) == 1 {
		if r.Method != http.MethodGet {
			cloudError(w, http.StatusMethodNotAllowed, "BadMethod", "%s is not allowed", r.Method)
			return
		}
		writeJSON(w, http.StatusOK, map[string]interface{}{"id": "cc71f8bb-f310-4746-8e36-afd7c6dd2895",
			"login": who.Account, "email": who.Account + "@example.com", "triton_cns_enabled": true})
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	rest := parts[1:]
	q := r.URL.Query()
	switch rest[0] {
	case "packages":
		s.listOrGet(w, r, rest, func() []interface{} {
			out := []interface{}{}
			for _, p := range s.packages {
				if match(q, "name", p.Name) && match(q, "version", p.Version) && match(q, "memory", strconv.Itoa(p.Memory)) &&
					match(q, "group", p.Group) && match(q, "vcpus", strconv.Itoa(p.Vcpus)) {
					out = append(out, p)
				}
			}
			return out
		}, func(id string) interface{} {
			if p := s.findPackageLocked(id); p != nil {
				return p
			}
			return nil
		})
	case "images":
		s.listOrGet(w, r, rest, func() []interface{} {
			out := []interface{}{}
			for _, im := range s.images {
				state := q.Get("state")
				if state == "" {
					state = "active"
				}
				if match(q, "name", im.Name) && match(q, "version", im.Version) && match(q, "os", im.OS) &&
					match(q, "type", im.Type) && (state == "all" || state == im.State) &&
					match(q, "public", strconv.FormatBool(im.Public)) {
					out = append(out, im)
				}
			}
			return out
		}, func(id string) interface{} {
			for _, im := range s.images {
				if im.ID == id {
					return im
				}
			}
			return nil
		})
	case "networks":
		s.listOrGet(w, r, rest, func() []interface{} {
			out := []interface{}{}
			for _, n := range s.networks {
				out = append(out, n)
			}
			return out
		}, func(id string) interface{} {
			for _, n := range s.networks {
				if n.ID == id {
					return n
				}
			}
			return nil
		})
	case "machines":
		s.serveMachines(w, r, rest[1:])
	case "fwrules":
		s.serveFWRules(w, r, rest[1:])
	default:
		cloudError(w, http.StatusNotFound, "ResourceNotFound", "%s does not exist", r.URL.Path)
	}
}

func match(q url.Values, key, value string) bool {
	want, ok := q[key]
	if !ok || len(want) == 0 || want[0] == "" {
		return true
	}
	w := want[0]
	if strings.Contains(w, "*") {
		prefix := strings.TrimSuffix(w, "*")
		return strings.HasPrefix(value, prefix)
	}
	return w == value
}

func (s *Sim) listOrGet(w http.ResponseWriter, r *http.Request, rest []string, list func() []interface{}, get func(string) interface{}) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		cloudError(w, http.StatusMethodNotAllowed, "BadMethod", "%s is not allowed on %s", r.Method, r.URL.Path)
		return
	}
	switch len(rest) {
	case 1:
		items := list()
		w.Header().Set("x-resource-count", strconv.Itoa(len(items)))
		writeJSON(w, http.StatusOK, items)
	case 2:
		item := get(rest[1])
		if item == nil {
			cloudError(w, http.StatusNotFound, "ResourceNotFound", "%s not found", rest[1])
			return
		}
		writeJSON(w, http.StatusOK, item)
	default:
		cloudError(w, http.StatusNotFound, "ResourceNotFound", "%s does not exist", r.URL.Path)
	}
}

func (s *Sim) serveMachines(w http.ResponseWriter, r *http.Request, rest []string) {
	if len(rest) == 0 {
		switch r.Method {
		case http.MethodGet, http.MethodHead:
			s.listMachines(w, r)
		case http.MethodPost:
			s.createMachine(w, r)
		default:
			cloudError(w, http.StatusMethodNotAllowed, "BadMethod", "%s is not allowed on %s", r.Method, r.URL.Path)
		}
		return
	}
	m := s.machines[rest[0]]
	if m == nil {
		cloudError(w, http.StatusNotFound, "ResourceNotFound", "%s not found", rest[0])
		return
	}
	if len(rest) == 1 {
		switch r.Method {
		case http.MethodGet, http.MethodHead:
			if m.State == "deleted" {
				writeJSON(w, http.StatusGone, m.toJSON())
				return
			}
			writeJSON(w, http.StatusOK, m.toJSON())
		case http.MethodPost:
			s.machineAction(w, r, m)
		case http.MethodDelete:
			s.deleteMachine(w, m)
		default:
			cloudError(w, http.StatusMethodNotAllowed, "BadMethod", "%s is not allowed on %s", r.Method, r.URL.Path)
		}
		return
	}
	if m.State == "deleted" {
		cloudError(w, http.StatusGone, "ResourceNotFound", "%s has been deleted", m.ID)
		return
	}
	switch rest[1] {
	case "tags":
		s.serveTags(w, r, m, rest[2:])
	case "metadata":
		s.serveMetadata(w, r, m, rest[2:])
	case "fwrules":
		out := []*FWRule{}
		for _, fr := range s.sortedRules() {
			if s.ruleAffects(fr, m) {
				out = append(out, fr)
			}
		}
		writeJSON(w, http.StatusOK, out)
	default:
		cloudError(w, http.StatusNotFound, "ResourceNotFound", "%s does not exist", r.URL.Path)
	}
}

func (s *Sim) sortedMachines() []*Machine {
	out := make([]*Machine, 0, len(s.machines))
	for _, m := range s.machines {
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Created != out[j].Created {
			return out[i].Created < out[j].Created
		}
		return out[i].ID < out[j].ID
	})
	return out
}

func (s *Sim) listMachines(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	out := []interface{}{}
	for _, m := range s.sortedMachines() {
		if m.State == "deleted" && q.Get("tombstone") == "" {
			continue
		}
		if !match(q, "name", m.Name) || !match(q, "state", m.State) || !match(q, "image", m.Image) ||
			!match(q, "brand", m.Brand) || !match(q, "docker", strconv.FormatBool(m.Docker)) {
			continue
		}
		ok := true
		for k, v := range q {
			if strings.HasPrefix(k, "tag.") && len(v) > 0 && fmt.Sprint(m.Tags[strings.TrimPrefix(k, "tag.")]) != v[0] {
				ok = false
			}
		}
		if ok {
			out = append(out, m.toJSON())
		}
	}
	total := len(out)
	offset, _ := strconv.Atoi(q.Get("offset"))
	limit, err := strconv.Atoi(q.Get("limit"))
	if err != nil || limit <= 0 || limit > 1000 {
		limit = 1000
	}
	if offset > len(out) {
		offset = len(out)
	}
	out = out[offset:]
	if len(out) > limit {
		out = out[:limit]
	}
	w.Header().Set("x-resource-count", strconv.Itoa(total))
	w.Header().Set("x-query-limit", strconv.Itoa(limit))
	writeJSON(w, http.StatusOK, out)
}

func (s *Sim) createMachine(w http.ResponseWriter, r *http.Request) {
	body, err := readBody(r)
	if err != nil {
		cloudError(w, http.StatusBadRequest, "BadRequest", "%v", err)
		return
	}
	imageID, _ := body["image"].(string)
	if imageID == "" {
		cloudError(w, http.StatusConflict, "MissingParameter", "image is a required argument")
		return
	}
	var img *Image
	for _, im := range s.images {
		if im.ID == imageID {
			img = im
		}
	}
	if img == nil {
		cloudError(w, http.StatusNotFound, "ResourceNotFound", "image %s not found", imageID)
		return
	}
	pkgRef, _ := body["package"].(string)
	if pkgRef == "" {
		cloudError(w, http.StatusConflict, "MissingParameter", "package is a required argument")
		return
	}
	pkg := s.findPackageLocked(pkgRef)
	if pkg == nil {
		cloudError(w, http.StatusNotFound, "ResourceNotFound", "package %s not found", pkgRef)
		return
	}
	m := &Machine{ID: newUUID(), Package: pkg, Image: img.ID, Metadata: map[string]string{},
		Tags: map[string]interface{}{}, Created: nowISO()}
	m.Updated = m.Created
	m.Name, _ = body["name"].(string)
	if m.Name == "" {
		m.Name = m.ID[:8]
	}
	m.Name = strings.ReplaceAll(m.Name, "{{shortId}}", m.ID[:8])
	for _, other := range s.machines {
		if other.Name == m.Name && other.State != "deleted" {
			cloudError(w, http.StatusConflict, "InvalidArgument", "name %s is already in use by instance %s", m.Name, other.ID)
			return
		}
	}
	switch img.Type {
	case "zvol":
		m.Brand, m.Type = "bhyve", "virtualmachine"
	case "lx-dataset":
		m.Brand, m.Type = "lx", "smartmachine"
	default:
		m.Brand, m.Type = "joyent", "smartmachine"
	}
	if v, ok := body["networks"]; ok {
		nets, ok := asStringList(v)
		if !ok {
			cloudError(w, http.StatusConflict, "InvalidArgument", "networks must be a list of network ids or {ipv4_uuid} objects")
			return
		}
		for _, n := range nets {
			found := false
			for _, known := range s.networks {
				if known.ID == n {
					found = true
				}
			}
			if !found {
				cloudError(w, http.StatusConflict, "InvalidArgument", "network %s does not exist", n)
				return
			}
			m.Networks = append(m.Networks, n)
		}
	} else {
		m.Networks = []string{NetPublic, NetFabric}
	}
	if v, ok := body["affinity"]; ok {
		aff, ok := asStringList(v)
		if !ok {
			cloudError(w, http.StatusConflict, "InvalidArgument", "affinity must be a list of strings")
			return
		}
		for _, rule := range aff {
			if !strings.Contains(rule, "==") && !strings.Contains(rule, "!=") {
				cloudError(w, http.StatusConflict, "InvalidArgument", "invalid affinity rule %q: expected <key>==<value> or <key>!=<value>", rule)
				return
			}
		}
		m.Affinity = aff
	}
	for k, v := range body {
		switch {
		case strings.HasPrefix(k, "tag."):
			tv, ok := tagValue(v)
			if !ok {
				cloudError(w, http.StatusConflict, "InvalidArgument", "tag %s must be a string, number or boolean", k)
				return
			}
			m.Tags[strings.TrimPrefix(k, "tag.")] = tv
		case strings.HasPrefix(k, "metadata."):
			sv, ok := v.(string)
			if !ok {
				cloudError(w, http.StatusConflict, "InvalidArgument", "metadata %s must be a string", k)
				return
			}
			m.Metadata[strings.TrimPrefix(k, "metadata.")] = sv
		case k == "tags" || k == "metadata":
			obj, ok := v.(map[string]interface{})
			if !ok {
				cloudError(w, http.StatusConflict, "InvalidArgument", "%s must be an object", k)
				return
			}
			for tk, tv := range obj {
				if k == "tags" {
					val, ok := tagValue(tv)
					if !ok {
						cloudError(w, http.StatusConflict, "InvalidArgument", "tag %s must be a string, number or boolean", tk)
						return
					}
					m.Tags[tk] = val
				} else {
					sv, ok := tv.(string)
					if !ok {
						cloudError(w, http.StatusConflict, "InvalidArgument", "metadata %s must be a string", tk)
						return
					}
					m.Metadata[tk] = sv
				}
			}
		case k == "firewall_enabled" || k == "deletion_protection":
			b, ok := asBool(v)
			if !ok {
				cloudError(w, http.StatusConflict, "InvalidArgument", "%s must be a boolean", k)
				return
			}
			if k == "firewall_enabled" {
				m.FirewallEnabled = b
			} else {
				m.DeletionProtection = b
			}
		}
	}
	for _, prefix := range s.faults.FailProvision {
		if strings.HasPrefix(m.Name, prefix) {
			m.failProvision = true
		}
	}
	m.State = "provisioning"
	s.machines[m.ID] = m
	s.schedule(m, func() { s.finishProvisionLocked(m) })
	w.Header().Set("Location", "/"+s.cfg.Account+"/machines/"+m.ID)
	writeJSON(w, http.StatusCreated, m.toJSON())
}

func (s *Sim) finishProvisionLocked(m *Machine) {
	if m.failProvision {
		m.setState("failed")
		return
	}
	s.assignIPsLocked(m)
	m.setState("running")
}

func (s *Sim) machineAction(w http.ResponseWriter, r *http.Request, m *Machine) {
	q := r.URL.Query()
	action := q.Get("action")
	if action == "" {
		if body, err := readBody(r); err == nil {
			action, _ = body["action"].(string)
		}
	}
	if action == "" {
		cloudError(w, http.StatusConflict, "MissingParameter", "action is required")
		return
	}
	invalidState := func() {
		cloudError(w, http.StatusConflict, "InvalidState", "cannot %s instance %s in state %s", action, m.ID, m.State)
	}
	switch action {
	case "stop":
		switch m.State {
		case "stopped", "stopping":
		case "running":
			m.setState("stopping")
			if m.container != nil {
				s.exitContainerLocked(m.container, 143)
				m.setState("stopping")
			}
			s.schedule(m, func() { m.setState("stopped") })
		default:
			invalidState()
			return
		}
	case "start":
		switch m.State {
		case "running":
		case "stopped":
			if m.container != nil {
				s.startContainerLocked(m.container)
				break
			}
			s.schedule(m, func() { s.assignIPsLocked(m); m.setState("running") })
		default:
			invalidState()
			return
		}
	case "reboot":
		if m.State != "running" {
			invalidState()
			return
		}
		m.setState("stopping")
		s.schedule(m, func() { m.setState("running") })
	case "enable_firewall", "disable_firewall":
		m.FirewallEnabled = action == "enable_firewall"
	case "enable_deletion_protection", "disable_deletion_protection":
		m.DeletionProtection = action == "enable_deletion_protection"
	case "rename":
		name := q.Get("name")
		if name == "" {
			cloudError(w, http.StatusConflict, "MissingParameter", "name is required to rename")
			return
		}
		m.Name = name
	case "resize":
		pkg := s.findPackageLocked(q.Get("package"))
		if pkg == nil {
			cloudError(w, http.StatusConflict, "InvalidArgument", "package %q not found", q.Get("package"))
			return
		}
		m.Package = pkg
	default:
		cloudError(w, http.StatusConflict, "InvalidArgument", "%s is not a valid action", action)
		return
	}
	m.Updated = nowISO()
	w.WriteHeader(http.StatusAccepted)
}

func (s *Sim) deleteMachine(w http.ResponseWriter, m *Machine) {
	if m.DeletionProtection {
		cloudError(w, http.StatusConflict, "CannotDestroyMachine", "Instance has \"deletion_protection\" enabled, preventing deletion")
		return
	}
	if m.State == "deleted" {
		cloudError(w, http.StatusGone, "ResourceNotFound", "%s has been deleted", m.ID)
		return
	}
	if m.container != nil {
		s.removeContainerLocked(m.container)
	}
	if m.State == "running" {
		m.setState("stopping")
	}
	s.schedule(m, func() { m.setState("deleted"); m.IPs = nil; m.PrimaryIP = "" })
	w.WriteHeader(http.StatusNoContent)
}

func (s *Sim) serveTags(w http.ResponseWriter, r *http.Request, m *Machine, rest []string) {
	if len(rest) == 1 {
		v, ok := m.Tags[rest[0]]
		switch r.Method {
		case http.MethodGet:
			if !ok {
				cloudError(w, http.StatusNotFound, "ResourceNotFound", "tag %s not found", rest[0])
				return
			}
			writeJSON(w, http.StatusOK, v)
		case http.MethodDelete:
			if !ok {
				cloudError(w, http.StatusNotFound, "ResourceNotFound", "tag %s not found", rest[0])
				return
			}
			delete(m.Tags, rest[0])
			w.WriteHeader(http.StatusNoContent)
		default:
			cloudError(w, http.StatusMethodNotAllowed, "BadMethod", "%s is not allowed on %s", r.Method, r.URL.Path)
		}
		return
	}
	switch r.Method {
	case http.MethodGet:
		writeJSON(w, http.StatusOK, m.Tags)
	case http.MethodPost, http.MethodPut:
		body, err := readBody(r)
		if err != nil {
			cloudError(w, http.StatusBadRequest, "BadRequest", "%v", err)
			return
		}
		next := map[string]interface{}{}
		if r.Method == http.MethodPost {
			for k, v := range m.Tags {
				next[k] = v
			}
		}
		for k, v := range body {
			tv, ok := tagValue(v)
			if !ok {
				cloudError(w, http.StatusConflict, "InvalidArgument", "tag %s must be a string, number or boolean", k)
				return
			}
			next[k] = tv
		}
		m.Tags = next
		writeJSON(w, http.StatusOK, m.Tags)
	case http.MethodDelete:
		m.Tags = map[string]interface{}{}
		w.WriteHeader(http.StatusNoContent)
	default:
		cloudError(w, http.StatusMethodNotAllowed, "BadMethod", "%s is not allowed on %s", r.Method, r.URL.Path)
	}
}

func (s *Sim) serveMetadata(w http.ResponseWriter, r *http.Request, m *Machine, rest []string) {
	if len(rest) == 1 {
		v, ok := m.Metadata[rest[0]]
		switch r.Method {
		case http.MethodGet:
			if !ok {
				cloudError(w, http.StatusNotFound, "ResourceNotFound", "metadata key %s not found", rest[0])
				return
			}
			writeJSON(w, http.StatusOK, v)
		case http.MethodDelete:
			if rest[0] == "credentials" {
				cloudError(w, http.StatusConflict, "InvalidArgument", "credentials is a reserved metadata key")
				return
			}
			delete(m.Metadata, rest[0])
			w.WriteHeader(http.StatusNoContent)
		default:
			cloudError(w, http.StatusMethodNotAllowed, "BadMethod", "%s is not allowed on %s", r.Method, r.URL.Path)
		}
		return
	}
	switch r.Method {
	case http.MethodGet:
		out := map[string]string{}
		for k, v := range m.Metadata {
			if k != "credentials" || r.URL.Query().Get("credentials") == "true" {
				out[k] = v
			}
		}
		writeJSON(w, http.StatusOK, out)
	case http.MethodPost:
		body, err := readBody(r)
		if err != nil {
			cloudError(w, http.StatusBadRequest, "BadRequest", "%v", err)
			return
		}
		for k, v := range body {
			sv, ok := v.(string)
			if !ok {
				cloudError(w, http.StatusConflict, "InvalidArgument", "metadata %s must be a string", k)
				return
			}
			if k == "credentials" {
				cloudError(w, http.StatusConflict, "InvalidArgument", "credentials is a reserved metadata key")
				return
			}
			m.Metadata[k] = sv
		}
		writeJSON(w, http.StatusOK, m.Metadata)
	case http.MethodDelete:
		for k := range m.Metadata {
			if k != "credentials" {
				delete(m.Metadata, k)
			}
		}
		w.WriteHeader(http.StatusNoContent)
	default:
		cloudError(w, http.StatusMethodNotAllowed, "BadMethod", "%s is not allowed on %s", r.Method, r.URL.Path)
	}
}

func (s *Sim) sortedRules() []*FWRule {
	out := make([]*FWRule, 0, len(s.fwrules))
	for _, fr := range s.fwrules {
		out = append(out, fr)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// validateRule checks the outline of the firewall rule language:
// FROM <targets> TO <targets> ALLOW|BLOCK <protocol> <ports>.
func validateRule(rule string) error {
	up := strings.ToUpper(strings.Join(strings.Fields(rule), " "))
	if !strings.HasPrefix(up, "FROM ") {
		return fmt.Errorf("Error at character 0: '%s', expected: 'FROM'", firstWord(rule))
	}
	to := strings.Index(up, " TO ")
	if to < 0 {
		return fmt.Errorf("rule has no TO clause")
	}
	after := up[to+4:]
	action := ""
	for _, a := range []string{" ALLOW ", " BLOCK "} {
		if i := strings.Index(" "+after, a); i >= 0 {
			action = strings.TrimSpace(a)
			after = (" " + after)[i+len(a):]
		}
	}
	if action == "" {
		return fmt.Errorf("rule has no ALLOW or BLOCK action")
	}
	proto := firstWord(after)
	if proto != "TCP" && proto != "UDP" && proto != "ICMP" && proto != "ICMP6" {
		return fmt.Errorf("unknown protocol %q: expected tcp, udp, icmp or icmp6", strings.ToLower(proto))
	}
	return nil
}

func firstWord(s string) string {
	f := strings.Fields(s)
	if len(f) == 0 {
		return ""
	}
	return f[0]
}

// ruleAffects tells whether a rule names the machine: `vm <uuid>`,
// `tag <k>`, `tag <k> = <v>` or `all vms`.
func (s *Sim) ruleAffects(fr *FWRule, m *Machine) bool {
	text := strings.NewReplacer("(", " ", ")", " ", "\"", " ").Replace(fr.Rule)
	toks := strings.Fields(text)
	for i := 0; i < len(toks); i++ {
		switch strings.ToLower(toks[i]) {
		case "all":
			if i+1 < len(toks) && strings.ToLower(toks[i+1]) == "vms" {
				return true
			}
		case "vm":
			if i+1 < len(toks) && toks[i+1] == m.ID {
				return true
			}
		case "tag":
			if i+1 >= len(toks) {
				continue
			}
			v, ok := m.Tags[toks[i+1]]
			if !ok {
				continue
			}
			if i+3 < len(toks) && toks[i+2] == "=" {
				if fmt.Sprint(v) == toks[i+3] {
					return true
				}
				continue
			}
			return true
		}
	}
	return false
}

func (s *Sim) serveFWRules(w http.ResponseWriter, r *http.Request, rest []string) {
	if len(rest) == 0 {
		switch r.Method {
		case http.MethodGet:
			writeJSON(w, http.StatusOK, s.sortedRules())
		case http.MethodPost:
			body, err := readBody(r)
			if err != nil {
				cloudError(w, http.StatusBadRequest, "BadRequest", "%v", err)
				return
			}
			fr := &FWRule{ID: newUUID()}
			if err := applyRuleBody(fr, body, true); err != nil {
				cloudError(w, http.StatusConflict, "InvalidArgument", "%v", err)
				return
			}
			s.fwrules[fr.ID] = fr
			writeJSON(w, http.StatusCreated, fr)
		default:
			cloudError(w, http.StatusMethodNotAllowed, "BadMethod", "%s is not allowed on %s", r.Method, r.URL.Path)
		}
		return
	}
	fr := s.fwrules[rest[0]]
	if fr == nil {
		cloudError(w, http.StatusNotFound, "ResourceNotFound", "firewall rule %s not found", rest[0])
		return
	}
	if len(rest) == 1 {
		switch r.Method {
		case http.MethodGet:
			writeJSON(w, http.StatusOK, fr)
		case http.MethodPost:
			body, err := readBody(r)
			if err != nil {
				cloudError(w, http.StatusBadRequest, "BadRequest", "%v", err)
				return
			}
			next := *fr
			if err := applyRuleBody(&next, body, false); err != nil {
				cloudError(w, http.StatusConflict, "InvalidArgument", "%v", err)
				return
			}
			*fr = next
			writeJSON(w, http.StatusOK, fr)
		case http.MethodDelete:
			delete(s.fwrules, fr.ID)
			w.WriteHeader(http.StatusNoContent)
		default:
			cloudError(w, http.StatusMethodNotAllowed, "BadMethod", "%s is not allowed on %s", r.Method, r.URL.Path)
		}
		return
	}
	switch {
	case rest[1] == "enable" && r.Method == http.MethodPost:
		fr.Enabled = true
		writeJSON(w, http.StatusOK, fr)
	case rest[1] == "disable" && r.Method == http.MethodPost:
		fr.Enabled = false
		writeJSON(w, http.StatusOK, fr)
	case rest[1] == "machines" && r.Method == http.MethodGet:
		out := []interface{}{}
		for _, m := range s.sortedMachines() {
			if m.State != "deleted" && s.ruleAffects(fr, m) {
				out = append(out, m.toJSON())
			}
		}
		writeJSON(w, http.StatusOK, out)
	default:
		cloudError(w, http.StatusNotFound, "ResourceNotFound", "%s does not exist", r.URL.Path)
	}
}

func applyRuleBody(fr *FWRule, body map[string]interface{}, create bool) error {
	if v, ok := body["rule"]; ok {
		s, ok := v.(string)
		if !ok {
			return fmt.Errorf("rule must be a string")
		}
		fr.Rule = s
	} else if create {
		return fmt.Errorf("rule is a required argument")
	}
	if err := validateRule(fr.Rule); err != nil {
		return fmt.Errorf("rule: %v", err)
	}
	if v, ok := body["enabled"]; ok {
		b, ok := asBool(v)
		if !ok {
			return fmt.Errorf("enabled must be a boolean")
		}
		fr.Enabled = b
	}
	if v, ok := body["description"]; ok {
		s, ok := v.(string)
		if !ok {
			return fmt.Errorf("description must be a string")
		}
		fr.Description = s
	}
	return nil
}
