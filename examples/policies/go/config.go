// egress-allowlist in Go: the same rules and config format as the built-in Rust policy
// (policies/egress-allowlist), held to the same behaviour by tests/vectors/egress.toml.
//
//	default = "reject"          # allow | deny | reject (default: deny)
//	[[rule]]
//	action = "allow"
//	dst = "203.0.113.80/32"     # an IPv4 address or CIDR, or any (default: any)
//	protocol = "tcp"            # tcp | udp | icmp | any (default: any)
//	ports = "80"                # a port or range, destination side, or any (default: any)
//	src = "10.10.1.0/24"        # optional: the inside source
//
// This file is plain Go (it has unit tests: go test); abi.go is the component glue.
// Build: ./build.sh -> target/policies/egress_allowlist_go.wasm
package main

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"
)

// Verdict and Protocol values are the WIT enums' case numbers.
type Verdict int32

const (
	Allow Verdict = iota
	Deny
	Reject
)

type Protocol int32

const (
	TCP Protocol = iota
	UDP
	ICMP
	AnyProtocol Protocol = -1
)

// Addr is a flow address: IPv4 (V6 false, V4 in host order) or IPv6.
type Addr struct {
	V6 bool
	V4 uint32
}

// Flow is a new flow as the inside host sent it.
type Flow struct {
	Protocol Protocol
	Src, Dst Addr
	DstPort  uint16
}

// Cidr is an IPv4 prefix; Any matches every address, IPv4 or IPv6.
type Cidr struct {
	Any       bool
	Net, Mask uint32
}

// Contains: an IPv4 prefix never contains an IPv6 address.
func (c Cidr) Contains(a Addr) bool {
	return c.Any || (!a.V6 && a.V4&c.Mask == c.Net)
}

type Rule struct {
	Action   Verdict
	Dst, Src Cidr
	Protocol Protocol
	Lo, Hi   uint16
	// Host is -1 for any destination, else the index of the rule's host pattern among those
	// registered with the gateway (its bit in dstMatches).
	Host int
}

type Allowlist struct {
	Default Verdict
	Rules   []Rule
}

// decidingRule is the index of the rule that decides f, or -1 (the default). The gateway is
// asked which host patterns match once, and only when a host rule is reached.
func (a *Allowlist) decidingRule(f Flow) int {
	asked, matches := false, uint64(0)
	for i, r := range a.Rules {
		if !((r.Protocol == AnyProtocol || r.Protocol == f.Protocol) && r.Dst.Contains(f.Dst) && r.Src.Contains(f.Src) &&
			(f.Protocol == ICMP || (r.Lo <= f.DstPort && f.DstPort <= r.Hi))) {
			continue
		}
		if r.Host >= 0 {
			if !asked {
				matches, asked = dstMatches(), true
			}
			if matches&(1<<uint(r.Host)) == 0 {
				continue
			}
		}
		return i
	}
	return -1
}

func (a *Allowlist) Check(f Flow) Verdict {
	if i := a.decidingRule(f); i >= 0 {
		return a.Rules[i].Action
	}
	return a.Default
}

// Explain is Check's verdict and the rule that gave it, for `natgw explain`.
func (a *Allowlist) Explain(f Flow) (Verdict, string) {
	i := a.decidingRule(f)
	if i < 0 {
		return a.Default, fmt.Sprintf("no rule of %d matched: the default", len(a.Rules))
	}
	return a.Rules[i].Action, fmt.Sprintf("rule[%d] matched", i)
}

type rawRule struct {
	Action   *string `toml:"action"`
	Dst      *string `toml:"dst"`
	Src      *string `toml:"src"`
	Protocol *string `toml:"protocol"`
	Ports    *string `toml:"ports"`
	Host     *string `toml:"host"`
}

type rawConfig struct {
	Default *string   `toml:"default"`
	Rule    []rawRule `toml:"rule"`
}

func parseVerdict(key, s string) (Verdict, error) {
	switch strings.ToLower(s) {
	case "allow":
		return Allow, nil
	case "deny":
		return Deny, nil
	case "reject":
		return Reject, nil
	}
	return 0, fmt.Errorf("%s = %q: must be allow, deny or reject", key, s)
}

func parseIPv4(s string) (uint32, bool) {
	parts := strings.Split(s, ".")
	if len(parts) != 4 {
		return 0, false
	}
	var a uint32
	for _, p := range parts {
		if len(p) == 0 || len(p) > 3 || (len(p) > 1 && p[0] == '0') || strings.Trim(p, "0123456789") != "" {
			return 0, false
		}
		o, _ := strconv.Atoi(p)
		if o > 255 {
			return 0, false
		}
		a = a<<8 | uint32(o)
	}
	return a, true
}

func parseAddress(key string, s *string) (Cidr, error) {
	if s == nil || strings.EqualFold(strings.TrimSpace(*s), "any") {
		return Cidr{Any: true}, nil
	}
	t := strings.TrimSpace(*s)
	a, p, hasPrefix := strings.Cut(t, "/")
	addr, ok := parseIPv4(a)
	if !ok {
		return Cidr{}, fmt.Errorf("%s: %q is not an IPv4 address or CIDR", key, t)
	}
	prefix := 32
	if hasPrefix {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 || n > 32 || strings.Trim(p, "0123456789") != "" {
			return Cidr{}, fmt.Errorf("%s: %q has a prefix length that is not 0-32", key, t)
		}
		prefix = n
	}
	var mask uint32
	if prefix > 0 {
		mask = ^uint32(0) << (32 - prefix)
	}
	return Cidr{Net: addr & mask, Mask: mask}, nil
}

func parsePort(s string) (uint16, bool) {
	s = strings.TrimSpace(s)
	if s == "" || len(s) > 5 || strings.Trim(s, "0123456789") != "" {
		return 0, false
	}
	n, _ := strconv.Atoi(s)
	return uint16(n), n <= 65535
}

func parsePorts(key string, s *string) (uint16, uint16, error) {
	if s == nil || strings.EqualFold(strings.TrimSpace(*s), "any") || strings.TrimSpace(*s) == "*" {
		return 0, 65535, nil
	}
	t := strings.TrimSpace(*s)
	l, h, isRange := strings.Cut(t, "-")
	if !isRange {
		h = l
	}
	lo, okLo := parsePort(l)
	hi, okHi := parsePort(h)
	if !okLo || !okHi || lo > hi {
		return 0, 0, fmt.Errorf("%s: %q is not a port or port range like 80 or 1024-65535", key, t)
	}
	return lo, hi, nil
}

// ParseConfig reads the config text init gets; errors name the key.
func ParseConfig(text string) (*Allowlist, error) {
	var raw rawConfig
	md, err := toml.Decode(text, &raw)
	if err != nil {
		return nil, fmt.Errorf("config: %v", err)
	}
	if undecoded := md.Undecoded(); len(undecoded) > 0 {
		k := undecoded[0]
		if len(k) == 1 {
			return nil, fmt.Errorf("config: unknown field `%s`, expected `default` or `rule`", k[0])
		}
		return nil, fmt.Errorf("config: unknown field `%s`", k)
	}
	def := "deny"
	if raw.Default != nil {
		def = *raw.Default
	}
	a := &Allowlist{}
	if a.Default, err = parseVerdict("default", def); err != nil {
		return nil, err
	}
	var patterns []string
	for i, r := range raw.Rule {
		at := func(k string) string { return fmt.Sprintf("rule[%d].%s", i, k) }
		if r.Action == nil {
			return nil, fmt.Errorf("config: %s: missing field `action`", at("action"))
		}
		rule := Rule{Protocol: AnyProtocol, Host: -1}
		if rule.Action, err = parseVerdict(at("action"), *r.Action); err != nil {
			return nil, err
		}
		if r.Protocol != nil {
			switch strings.ToLower(*r.Protocol) {
			case "any":
			case "tcp":
				rule.Protocol = TCP
			case "udp":
				rule.Protocol = UDP
			case "icmp":
				rule.Protocol = ICMP
			default:
				return nil, fmt.Errorf("%s = %q: must be tcp, udp, icmp or any", at("protocol"), *r.Protocol)
			}
		}
		if rule.Dst, err = parseAddress(at("dst"), r.Dst); err != nil {
			return nil, err
		}
		if rule.Src, err = parseAddress(at("src"), r.Src); err != nil {
			return nil, err
		}
		if rule.Lo, rule.Hi, err = parsePorts(at("ports"), r.Ports); err != nil {
			return nil, err
		}
		if r.Host != nil {
			// Checked one at a time, so that an error names its rule.
			if err := setPatterns([]string{*r.Host}); err != nil {
				return nil, fmt.Errorf("config: %s: %v", at("host"), err)
			}
			patterns = append(patterns, *r.Host)
			rule.Host = len(patterns) - 1
		}
		a.Rules = append(a.Rules, rule)
	}
	if err := setPatterns(patterns); err != nil {
		return nil, fmt.Errorf("config: rule[].host: %v", err)
	}
	return a, nil
}
