package app

import (
	"errors"
	"strings"
	"testing"
)

type failAfter struct {
	n   int
	err error
}

func (f *failAfter) Write(p []byte) (int, error) {
	if f.n == 0 {
		return 0, f.err
	}
	f.n--
	return len(p), nil
}

func TestReportKeepsFirstWriteError(t *testing.T) {
	first := errors.New("first")
	w := &failAfter{n: 1, err: first}
	r := &report{w: w}
	r.printf("ok\n")
	if r.err != nil {
		t.Fatalf("err after a good write = %v", r.err)
	}
	r.printf("fails\n")
	w.err = errors.New("second")
	r.printf("skipped\n")
	if !errors.Is(r.err, first) {
		t.Fatalf("err = %v, want the first write error", r.err)
	}
}

func TestReportWrites(t *testing.T) {
	var b strings.Builder
	r := &report{w: &b}
	r.printf("%s\t%d\n", "a", 1)
	if r.err != nil || b.String() != "a\t1\n" {
		t.Fatalf("wrote %q, err %v", b.String(), r.err)
	}
}
