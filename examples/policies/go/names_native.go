//go:build !wasip1

package main

import "fmt"

// Native builds (go test) have no gateway: these stand in for its names import. The
// shared vectors hold the real matching (tests/vectors/egress-names.toml).

var (
	registered []string
	nativeBits uint64
)

func setPatterns(p []string) error {
	if len(p) > 64 {
		return fmt.Errorf("%d name patterns: at most 64", len(p))
	}
	registered = append([]string(nil), p...)
	return nil
}

func dstMatches() uint64 { return nativeBits }
