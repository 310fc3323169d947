package e2e

import "testing"

// The matcher of the duplicate-subnet scenario must not pass on unrelated
// lines (it runs without a lab).
func TestRefusalMatcher(t *testing.T) {
	cases := []struct {
		line string
		want bool
	}{
		{`{"level":"ERROR","msg":"network not registered: subnet already claimed","network":"dupsecond","subnet":"198.19.53.0/24"}`, true},
		{`{"level":"WARN","msg":"conflict","network":"dupsecond","subnet":"198.19.53.0/24"}`, true},
		{`{"level":"INFO","msg":"conflict","network":"dupsecond","subnet":"198.19.53.0/24"}`, false},
		{`{"level":"ERROR","msg":"conflict","network":"other","subnet":"198.19.53.0/24"}`, false},
		{`{"level":"ERROR","msg":"register failed","network":"dupsecond","subnet":"198.19.53.0/24"}`, false},
		{`not json conflict dupsecond 198.19.53.0/24`, false},
		{`{"level":"ERROR","msg":"subnet not routed into the tunnel","subnet":"198.19.53.0/24","claimants":["h1"],"local":["dupsecond"]}`, false},
	}
	for _, c := range cases {
		if got := refusal(c.line, "dupsecond", "198.19.53.0/24"); got != c.want {
			t.Errorf("refusal(%s) = %v, want %v", c.line, got, c.want)
		}
	}
}
