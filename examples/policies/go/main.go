package main

// A reactor (go build -buildmode=c-shared): the runtime starts in _initialize, which
// wasm-tools component new calls before any export; main never runs.
func main() {}
