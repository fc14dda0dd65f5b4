//go:build natgw_fixture_panic_at_start

package main

// A test fixture, not part of the example: built with -tags natgw_fixture_panic_at_start
// (scripts/setup.sh writes target/policies/go_panics_at_start.wasm), it shows how the gateway
// reports a language runtime that fails while the instance starts: the refusal names the
// policy as at fault and quotes the runtime's own message.
func init() {
	panic("egress-allowlist fixture: this runtime fails at start")
}
