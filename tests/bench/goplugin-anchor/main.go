// goplugin-anchor is the launch-time anchor for the host's first benchmark
// bar (host/benches/bars.rs): the smallest HashiCorp go-plugin gRPC server
// with Nomad's handshake config — the shape every Go task driver has before
// any driver logic runs. It serves one trivial plugin that registers no
// services of its own (go-plugin still registers health, controller, stdio
// and broker), prints the handshake line and waits.
//
// Built offline in GOPATH mode from Debian's packages by the benchmark:
//
//	GOPATH=<dir>:/usr/share/gocode GO111MODULE=off GOPROXY=off go build
package main

import (
	"context"

	plugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
)

// Nomad's plugin handshake (nomad/plugins/base/plugin.go).
var handshake = plugin.HandshakeConfig{
	ProtocolVersion:  2,
	MagicCookieKey:   "NOMAD_PLUGIN_MAGIC_COOKIE",
	MagicCookieValue: "e4327c2e01eabfd75a8a67adb114fb34a757d57eee7728d857a8cec6e91a7255",
}

// trivial is a gRPC plugin with nothing behind it.
type trivial struct {
	plugin.NetRPCUnsupportedPlugin
}

func (trivial) GRPCServer(*plugin.GRPCBroker, *grpc.Server) error { return nil }

func (trivial) GRPCClient(context.Context, *plugin.GRPCBroker, *grpc.ClientConn) (interface{}, error) {
	return nil, nil
}

func main() {
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: handshake,
		Plugins:         map[string]plugin.Plugin{"driver": trivial{}},
		GRPCServer:      plugin.DefaultGRPCServer,
	})
}
