package conformance

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"conformancepb/drivers"
)

// TestFingerprintWithoutTheShell: with `shell = "fish"` the driver is not
// usable here: UNDETECTED when fish is not installed (as on a fresh
// machine), and UNHEALTHY naming the missing grant when it is installed but
// not granted (the harness grants bash only). Never HEALTHY.
func TestFingerprintWithoutTheShell(t *testing.T) {
	c := launchConfigured(t)
	c.setConfig(t, map[string]interface{}{"shell": "fish"}, true)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, err := c.Driver.Fingerprint(ctx, &drivers.FingerprintRequest{})
	if err != nil {
		t.Fatalf("Fingerprint: %v", err)
	}
	fp := recvWithin(t, func() (interface{}, error) { return stream.Recv() }, 2*time.Second, "first FingerprintResponse").(*drivers.FingerprintResponse)
	fish := ""
	for _, dir := range strings.Split(os.Getenv("PATH"), ":") {
		if _, err := os.Stat(dir + "/fish"); err == nil {
			fish = dir + "/fish"
			break
		}
	}
	if fish == "" {
		if fp.GetHealth() != drivers.FingerprintResponse_UNDETECTED {
			t.Errorf("fish is not installed: health = %v (%q), want UNDETECTED", fp.GetHealth(), fp.GetHealthDescription())
		}
		if !strings.Contains(fp.GetHealthDescription(), "fish") {
			t.Errorf("health description %q does not name the missing shell", fp.GetHealthDescription())
		}
	} else {
		if fp.GetHealth() != drivers.FingerprintResponse_UNHEALTHY || !strings.Contains(fp.GetHealthDescription(), "--allow-exec") {
			t.Errorf("fish installed but not granted: health = %v (%q), want UNHEALTHY naming the grant", fp.GetHealth(), fp.GetHealthDescription())
		}
	}
	if _, ok := fp.GetAttributes()["driver.hello.shell_version"]; ok {
		t.Errorf("a shell that cannot run has no version attribute: %v", fp.GetAttributes())
	}
	cancel()
}
