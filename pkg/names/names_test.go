package names

import (
	"strings"
	"testing"
)

func TestCheckNetwork(t *testing.T) {
	for _, ok := range []string{"a", "web", "my_net.v2-x", "0net", "A"} {
		if err := CheckNetwork(ok); err != nil {
			t.Errorf("CheckNetwork(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", "_net", ".net", "-net", "a b", "a/b", "a:b", "nét", "a\x00"} {
		if err := CheckNetwork(bad); err == nil || !strings.Contains(err.Error(), "Docker network name") {
			t.Errorf("CheckNetwork(%q) = %v, want an error", bad, err)
		}
	}
}

func TestCheckHost(t *testing.T) {
	for _, ok := range []string{"a", "node-1", "n1.example.com", strings.Repeat("a", 63)} {
		if err := CheckHost(ok); err != nil {
			t.Errorf("CheckHost(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", "_hosts", "a_b", "a/b", "-a", "a-", "a..b", ".a", strings.Repeat("a", 64), "nöde", strings.Repeat("abcdefg.", 32) + "ab"} {
		if err := CheckHost(bad); err == nil {
			t.Errorf("CheckHost(%q) accepted", bad)
		}
	}
}
