package main

// Package, image and network fixtures, shaped like CloudAPI's ListPackages,
// ListImages and ListNetworks responses.

// Package is a CloudAPI package.
type Package struct {
	ID          string `json:"id"`
	Name        string `json:"name"`
	Memory      int    `json:"memory"`
	Disk        int    `json:"disk"`
	Swap        int    `json:"swap"`
	Lwps        int    `json:"lwps"`
	Vcpus       int    `json:"vcpus"`
	Version     string `json:"version"`
	Group       string `json:"group"`
	Description string `json:"description"`
	Default     bool   `json:"default"`
}

// Image is a CloudAPI image.
type Image struct {
	ID           string                 `json:"id"`
	Name         string                 `json:"name"`
	OS           string                 `json:"os"`
	Version      string                 `json:"version"`
	Type         string                 `json:"type"`
	Requirements map[string]interface{} `json:"requirements"`
	PublishedAt  string                 `json:"published_at"`
	Owner        string                 `json:"owner"`
	Public       bool                   `json:"public"`
	State        string                 `json:"state"`
}

// Network is a CloudAPI network.
type Network struct {
	ID          string   `json:"id"`
	Name        string   `json:"name"`
	Public      bool     `json:"public"`
	Fabric      bool     `json:"fabric"`
	Description string   `json:"description"`
	Subnet      string   `json:"subnet"`
	Gateway     string   `json:"gateway"`
	Resolvers   []string `json:"resolvers"`
	StartIP     string   `json:"provision_start_ip"`
	EndIP       string   `json:"provision_end_ip"`
	prefix      string   // first three octets, for handing out addresses
}

// Fixed ids so tests and examples can name them.
const (
	PkgSmall      = "7b17343c-94af-6266-e0e8-893a3b9993d0"
	PkgMedium     = "4dad8aa6-2c7c-e20a-be26-c7f4f1925a9a"
	PkgMediumV2   = "a5b4a4e6-4a7b-11ea-8b4e-0f0d1c2e3a4b"
	ImgBaseOld    = "2f1dc911-6401-4fa4-8e9d-67ea2e39c271"
	ImgBaseNew    = "1f32508c-e6e9-11e6-9e40-5c3fbc8a2b5d"
	ImgUbuntu     = "7b5981c4-1889-11e7-b4c5-3f3bdfc9b88b"
	NetPublic     = "9ec60129-9034-47b4-b111-3026f9b1a10f"
	NetFabric     = "7326787b-8039-436c-a533-5038f7280f04"
	NetFabricData = "c8cde927-6277-49ca-82a3-741e8b23b02f"
)

func (s *Sim) loadDefaultFixtures() {
	s.packages = []*Package{
		{ID: PkgSmall, Name: "g4-highcpu-512M", Memory: 512, Disk: 20480, Swap: 2048, Lwps: 4000, Vcpus: 1, Version: "1.0.3", Group: "Standard", Description: "Compute Optimized 512M RAM - 0.25 vCPU - 20 GB Disk"},
		{ID: PkgMedium, Name: "g4-highcpu-1G", Memory: 1024, Disk: 25600, Swap: 4096, Lwps: 4000, Vcpus: 1, Version: "1.0.3", Group: "Standard", Description: "Compute Optimized 1G RAM - 0.5 vCPU - 25 GB Disk", Default: true},
		{ID: PkgMediumV2, Name: "g4-highcpu-1G", Memory: 1024, Disk: 25600, Swap: 4096, Lwps: 4000, Vcpus: 1, Version: "2.0.0", Group: "Standard", Description: "Compute Optimized 1G RAM - 0.5 vCPU - 25 GB Disk (v2)"},
	}
	s.images = []*Image{
		{ID: ImgBaseOld, Name: "base-64-lts", OS: "smartos", Version: "19.4.0", Type: "zone-dataset", Requirements: map[string]interface{}{}, PublishedAt: "2020-01-07T15:40:03Z", Owner: "00000000-0000-0000-0000-000000000000", Public: true, State: "active"},
		{ID: ImgBaseNew, Name: "base-64-lts", OS: "smartos", Version: "20.4.0", Type: "zone-dataset", Requirements: map[string]interface{}{}, PublishedAt: "2021-01-11T17:36:15Z", Owner: "00000000-0000-0000-0000-000000000000", Public: true, State: "active"},
		{ID: ImgUbuntu, Name: "ubuntu-certified-20.04", OS: "linux", Version: "20210413", Type: "zvol", Requirements: map[string]interface{}{"brand": "bhyve"}, PublishedAt: "2021-04-13T20:12:40Z", Owner: "00000000-0000-0000-0000-000000000000", Public: true, State: "active"},
	}
	// Documentation address ranges (RFC 5737) and a private fabric range:
	// the simulator only reports these addresses, nothing ever connects to them.
	s.networks = []*Network{
		{ID: NetPublic, Name: "Joyent-SDC-Public", Public: true, Description: "Public internet", Subnet: "198.51.100.0/24", Gateway: "198.51.100.1", Resolvers: []string{"198.51.100.2"}, StartIP: "198.51.100.10", EndIP: "198.51.100.250", prefix: "198.51.100."},
		{ID: NetFabric, Name: "My-Fabric-Network", Fabric: true, Description: "default fabric", Subnet: "192.168.128.0/22", Gateway: "192.168.128.1", Resolvers: []string{"198.51.100.2"}, StartIP: "192.168.128.5", EndIP: "192.168.131.250", prefix: "192.168.128."},
		{ID: NetFabricData, Name: "data", Fabric: true, Description: "second fabric", Subnet: "192.168.200.0/24", Gateway: "192.168.200.1", Resolvers: []string{"198.51.100.2"}, StartIP: "192.168.200.5", EndIP: "192.168.200.250", prefix: "192.168.200."},
	}
}
