package main

import (
	"strings"
	"testing"
)

// The shared vectors (tests/vectors/egress.toml, run by `natgw policy test` on the built
// component) are the behaviour's reference; these check the Go side without a component.
func TestConfigErrorsNameTheKey(t *testing.T) {
	for text, key := range map[string]string{
		"[[rule]]\naction = \"allow\"\n[[rule]]\naction = \"perhaps\"\n": "rule[1].action",
		"[[rule]]\naction = \"allow\"\nports = \"90-80\"\n":              "rule[0].ports",
		"[[rule]]\naction = \"allow\"\ndst = \"10.0.0.0/33\"\n":          "rule[0].dst",
		"rules = 3":  "rules",
		"default = ": "config",
	} {
		if _, err := ParseConfig(text); err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("%q: got %v, want an error naming %s", text, err, key)
		}
	}
}

func TestFirstMatchingRuleDecides(t *testing.T) {
	a, err := ParseConfig("default = \"reject\"\n[[rule]]\naction = \"allow\"\ndst = \"203.0.113.0/24\"\nprotocol = \"tcp\"\nports = \"80-443\"\n")
	if err != nil {
		t.Fatal(err)
	}
	in := Addr{V4: 0xcb007150} // 203.0.113.80
	for _, c := range []struct {
		f    Flow
		want Verdict
	}{
		{Flow{Protocol: TCP, Dst: in, DstPort: 80}, Allow},
		{Flow{Protocol: TCP, Dst: in, DstPort: 443}, Allow},
		{Flow{Protocol: TCP, Dst: in, DstPort: 444}, Reject},
		{Flow{Protocol: UDP, Dst: in, DstPort: 80}, Reject},
		{Flow{Protocol: TCP, Dst: Addr{V6: true}, DstPort: 80}, Reject},
	} {
		if got := a.Check(c.f); got != c.want {
			t.Errorf("%+v: got %d, want %d", c.f, got, c.want)
		}
	}
}

func TestHostRulesAskTheGatewayOnlyWhenReached(t *testing.T) {
	a, err := ParseConfig("default = \"reject\"\n[[rule]]\naction = \"allow\"\nhost = \"github.com\"\nports = \"443\"\n[[rule]]\naction = \"allow\"\nhost = \"*.pypi.org\"\n")
	if err != nil {
		t.Fatal(err)
	}
	if len(registered) != 2 || registered[0] != "github.com" || registered[1] != "*.pypi.org" {
		t.Fatalf("registered %q", registered)
	}
	f := Flow{Protocol: TCP, Dst: Addr{V4: 0xcb007151}, DstPort: 443}
	for bits, want := range map[uint64]Verdict{0b01: Allow, 0b10: Allow, 0: Reject} {
		nativeBits = bits
		if got := a.Check(f); got != want {
			t.Errorf("matches %b: got %d, want %d", bits, got, want)
		}
	}
	nativeBits = 0b01
	if v, why := a.Explain(f); v != Allow || why != "rule[0] matched" {
		t.Errorf("explain: %d %q", v, why)
	}
}
