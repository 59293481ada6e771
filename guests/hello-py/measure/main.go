// Command measure times hello guests in the real host, launched the way
// Nomad launches a driver plugin (go-plugin client, Nomad's handshake):
//
//   - launch to first answered RPC with an empty precompile cache (the host
//     compiles the component) and with a warm cache (it deserializes it);
//   - SetConfig RPCs: each is one guest call on a fresh instance (the host
//     instantiates the component, then `set-config` decodes the msgpack);
//   - PluginInfo RPCs, answered by the host from what it asked the guest once
//     at load: the gRPC round trip without a guest call, as the baseline.
//
// Usage (see measure.sh, which builds the stubs and sets GOPATH):
//
//	measure -host target/debug/nomad-driver-wasm GUEST.wasm [GUEST.wasm ...]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"sort"
	"time"

	"conformancepb/base"

	hclog "github.com/hashicorp/go-hclog"
	plugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
)

var handshake = plugin.HandshakeConfig{
	ProtocolVersion:  2,
	MagicCookieKey:   "NOMAD_PLUGIN_MAGIC_COOKIE",
	MagicCookieValue: "e4327c2e01eabfd75a8a67adb114fb34a757d57eee7728d857a8cec6e91a7255",
}

// {"shell": "bash"} as cty-msgpack.
var agentConfig = []byte{0x81, 0xa5, 's', 'h', 'e', 'l', 'l', 0xa4, 'b', 'a', 's', 'h'}

type driverPlugin struct{ plugin.NetRPCUnsupportedPlugin }

func (driverPlugin) GRPCServer(*plugin.GRPCBroker, *grpc.Server) error {
	return errors.New("client only")
}

func (driverPlugin) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, conn *grpc.ClientConn) (interface{}, error) {
	return base.NewBasePluginClient(conn), nil
}

type launched struct {
	client *plugin.Client
	base   base.BasePluginClient
}

func launch(host, guest, cacheDir string) (*launched, time.Duration, error) {
	start := time.Now()
	client := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  handshake,
		Plugins:          map[string]plugin.Plugin{"driver": driverPlugin{}},
		Cmd:              exec.Command(host, "--guest", guest, "--allow-exec", "/usr/bin/bash", "--cache-dir", cacheDir),
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		Logger:           hclog.New(&hclog.LoggerOptions{Output: io.Discard}),
		StartTimeout:     5 * time.Minute,
	})
	rpc, err := client.Client()
	if err != nil {
		client.Kill()
		return nil, 0, fmt.Errorf("launch: %w", err)
	}
	raw, err := rpc.Dispense("driver")
	if err != nil {
		client.Kill()
		return nil, 0, fmt.Errorf("dispense: %w", err)
	}
	l := &launched{client: client, base: raw.(base.BasePluginClient)}
	if _, err := l.base.PluginInfo(context.Background(), &base.PluginInfoRequest{}); err != nil {
		client.Kill()
		return nil, 0, fmt.Errorf("PluginInfo: %w", err)
	}
	return l, time.Since(start), nil
}

type stats []time.Duration

func (s stats) String() string {
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	// Nearest rank: the smallest value with at least p of the runs at or below it.
	at := func(p float64) time.Duration {
		i := int(math.Ceil(p*float64(len(s)))) - 1
		if i < 0 {
			i = 0
		}
		return s[i]
	}
	return fmt.Sprintf("n=%-4d median %10v  p10 %10v  p90 %10v", len(s), at(0.5).Round(time.Microsecond), at(0.1).Round(time.Microsecond), at(0.9).Round(time.Microsecond))
}

func measure(host, guest string, coldRuns, warmRuns, calls int) error {
	st, err := os.Stat(guest)
	if err != nil {
		return err
	}
	fmt.Printf("%s: %d bytes\n", guest, st.Size())

	var cold, warm stats
	warmDir, err := os.MkdirTemp("", "hello-measure-cache-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(warmDir)
	for i := 0; i < coldRuns; i++ {
		dir, err := os.MkdirTemp("", "hello-measure-cold-")
		if err != nil {
			return err
		}
		l, d, err := launch(host, guest, dir)
		os.RemoveAll(dir)
		if err != nil {
			return err
		}
		l.client.Kill()
		cold = append(cold, d)
	}
	// Fill the warm cache once, then time launches that deserialize it.
	l, _, err := launch(host, guest, warmDir)
	if err != nil {
		return err
	}
	l.client.Kill()
	for i := 0; i < warmRuns; i++ {
		l, d, err := launch(host, guest, warmDir)
		if err != nil {
			return err
		}
		l.client.Kill()
		warm = append(warm, d)
	}

	l, _, err = launch(host, guest, warmDir)
	if err != nil {
		return err
	}
	defer l.client.Kill()
	var setConfig, info stats
	ctx := context.Background()
	for i := 0; i < calls; i++ {
		// Interleaved, so load on the machine hits both alike.
		t0 := time.Now()
		if _, err := l.base.SetConfig(ctx, &base.SetConfigRequest{MsgpackConfig: agentConfig, PluginApiVersion: "v0.1.0"}); err != nil {
			return fmt.Errorf("SetConfig: %w", err)
		}
		setConfig = append(setConfig, time.Since(t0))
		t0 = time.Now()
		if _, err := l.base.PluginInfo(ctx, &base.PluginInfoRequest{}); err != nil {
			return fmt.Errorf("PluginInfo: %w", err)
		}
		info = append(info, time.Since(t0))
	}
	fmt.Printf("  launch to first RPC, cold cache (compiles)  %v\n", cold)
	fmt.Printf("  launch to first RPC, warm cache             %v\n", warm)
	fmt.Printf("  SetConfig RPC (fresh instance + set-config) %v\n", setConfig)
	fmt.Printf("  PluginInfo RPC (no guest call; baseline)    %v\n", info)
	return nil
}

func main() {
	host := flag.String("host", "target/debug/nomad-driver-wasm", "host binary")
	coldRuns := flag.Int("cold", 3, "launches with an empty cache")
	warmRuns := flag.Int("warm", 10, "launches with a warm cache")
	calls := flag.Int("calls", 200, "SetConfig and PluginInfo RPCs each")
	flag.Parse()
	if flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: measure [-host PATH] [-cold N] [-warm N] [-calls N] GUEST.wasm...")
		os.Exit(2)
	}
	for _, guest := range flag.Args() {
		if err := measure(*host, guest, *coldRuns, *warmRuns, *calls); err != nil {
			fmt.Fprintf(os.Stderr, "measure %s: %v\n", guest, err)
			os.Exit(1)
		}
	}
}
