// Command triton-sim is a small stand-in for a Triton datacenter: CloudAPI
// (with HTTP Signature authentication) and the sdc-docker container subset,
// for testing the Triton driver without a real cloud. See README.md.
package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"strings"
	"time"
)

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "triton-sim:", err)
		os.Exit(2)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("triton-sim", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:0", "address to serve on; the chosen address is printed on stdout")
	account := fs.String("account", "sim-user", "account login")
	datacenter := fs.String("datacenter", "sim-1", "datacenter name (Triton-Datacenter-Name header)")
	delay := fs.Duration("delay", 200*time.Millisecond, "time each machine state transition takes")
	skew := fs.Duration("clock-skew", 300*time.Second, "largest accepted difference between Date and now")
	tlsCert := fs.String("tls-cert", "", "serve HTTPS with this PEM certificate")
	tlsKey := fs.String("tls-key", "", "key of -tls-cert")
	clientCA := fs.String("docker-client-ca", "", "PEM CA: docker routes then need a TLS client certificate it signed (needs -tls-cert)")
	var keys, userKeys, dockerImages, failProvision listFlag
	fs.Var(&keys, "key", "public key file of the account (OpenSSH line or PEM; repeatable)")
	fs.Var(&userKeys, "user-key", "USER=FILE: public key of an RBAC sub-user (repeatable)")
	fs.Var(&dockerImages, "docker-image", "image already present for sdc-docker, name[:tag] (repeatable; default busybox:latest)")
	fs.Var(&failProvision, "fail-provision", "machines whose name starts with this go to failed (repeatable)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if len(keys) == 0 && len(userKeys) == 0 {
		return errors.New("at least one -key or -user-key is required")
	}
	auth := &Authenticator{Account: *account, UserKeys: map[string][]*PublicKey{}, ClockSkew: *skew, Now: time.Now}
	for _, k := range keys {
		pk, err := LoadPublicKey(k)
		if err != nil {
			return err
		}
		auth.AcctKeys = append(auth.AcctKeys, pk)
		fmt.Fprintf(os.Stderr, "triton-sim: key /%s/keys/%s (%s)\n", *account, pk.Fingerprint, pk.Name)
	}
	for _, uk := range userKeys {
		user, path, ok := strings.Cut(uk, "=")
		if !ok || user == "" {
			return fmt.Errorf("-user-key %q: expected USER=FILE", uk)
		}
		pk, err := LoadPublicKey(path)
		if err != nil {
			return err
		}
		auth.UserKeys[user] = append(auth.UserKeys[user], pk)
		fmt.Fprintf(os.Stderr, "triton-sim: key /%s/users/%s/keys/%s\n", *account, user, pk.Fingerprint)
	}
	cfg := Config{Account: *account, Datacenter: *datacenter, TransitionDelay: *delay, RequireDockerTLSClient: *clientCA != ""}
	sim := NewSim(cfg, auth)
	if len(dockerImages) == 0 {
		dockerImages = listFlag{"busybox:latest"}
	}
	for _, img := range dockerImages {
		sim.dockerImgs[normalizeImage(img)] = true
	}
	sim.faults.FailProvision = failProvision

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: sim, ReadHeaderTimeout: 10 * time.Second}
	scheme := "http"
	if *tlsCert != "" {
		cert, err := tls.LoadX509KeyPair(*tlsCert, *tlsKey)
		if err != nil {
			return err
		}
		tc := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		if *clientCA != "" {
			pem, err := os.ReadFile(*clientCA)
			if err != nil {
				return err
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return fmt.Errorf("%s: no PEM certificates", *clientCA)
			}
			tc.ClientCAs = pool
			tc.ClientAuth = tls.VerifyClientCertIfGiven
		}
		ln = tls.NewListener(ln, tc)
		scheme = "https"
	} else if *clientCA != "" {
		return errors.New("-docker-client-ca needs -tls-cert and -tls-key")
	}
	fmt.Printf("%s://%s\n", scheme, ln.Addr().String())
	log.SetOutput(os.Stderr)
	return srv.Serve(ln)
}
