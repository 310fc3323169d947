package logging

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

func TestFormats(t *testing.T) {
	var b bytes.Buffer
	New(&b, "auto", false).Info("reconciled", "key", "app1")
	var m map[string]any
	if err := json.Unmarshal(b.Bytes(), &m); err != nil || m["key"] != "app1" || m["msg"] != "reconciled" {
		t.Fatalf("auto on a non-terminal must be JSON, got %q (%v)", b.String(), err)
	}
	b.Reset()
	New(&b, "text", false).Info("reconciled", "key", "app1")
	if s := b.String(); !strings.Contains(s, "reconciled") || !strings.Contains(s, "key=app1") || strings.HasPrefix(s, "{") {
		t.Fatalf("text format: %q", s)
	}
	b.Reset()
	New(&b, "json", false).Debug("hidden")
	New(&b, "json", true).Debug("shown")
	if s := b.String(); strings.Contains(s, "hidden") || !strings.Contains(s, "shown") {
		t.Fatalf("debug level: %q", s)
	}
}
