// The component glue: the core-Wasm exports that `wasm-tools component new` lifts into the
// natgw:policy@0.2.0 egress-policy world (and the imports it lowers), written by hand against the canonical ABI (there
// is no wit-bindgen for the main Go toolchain). Each signature is the WIT function's
// flattened one; the comments show how.

//go:build wasip1

package main

import (
	"errors"
	"runtime"
	"runtime/debug"
	"unsafe"
)

func init() {
	// A panic prints its message and no goroutine dump: the gateway quotes the last few
	// hundred characters a policy wrote when it refuses it, and the message is what the
	// operator needs there. (abi.go's init runs before those of files that sort after it.)
	debug.SetTraceback("none")
}

var (
	policy = &Allowlist{Default: Deny}
	// Buffers the host asked for with cabi_realloc (the config string): held here so the
	// garbage collector does not free them before init has copied the config.
	hostBuffers [][]uint64
	// init's return area, result<_, string>: the case (0 ok, 1 err) at offset 0, the
	// error's pointer at 4 and its length at 8.
	initResult [3]uint32
	initError  []byte
)

//go:wasmexport cabi_realloc
func cabiRealloc(oldPtr, oldSize, align, newSize uint32) uint32 {
	if newSize == 0 {
		return align // any non-null, aligned pointer will do for an empty buffer
	}
	buf := make([]uint64, (newSize+7)/8) // 8-byte aligned, which covers every align in this world
	p := unsafe.Pointer(&buf[0])
	if oldPtr != 0 {
		copy(unsafe.Slice((*byte)(p), newSize), unsafe.Slice((*byte)(unsafe.Pointer(uintptr(oldPtr))), min(oldSize, newSize)))
	}
	hostBuffers = append(hostBuffers, buf)
	return uint32(uintptr(p))
}

// init: func(config: string) -> result<_, string>
// The string flattens to (pointer, length); the result does not fit in one value, so the
// function returns a pointer to its return area.
//
//go:wasmexport natgw:policy/lifecycle@0.2.0#init
func lifecycleInit(ptr, length uint32) uint32 {
	config := ""
	if length > 0 {
		config = string(unsafe.Slice((*byte)(unsafe.Pointer(uintptr(ptr))), length)) // a copy
	}
	hostBuffers = nil
	a, err := ParseConfig(config)
	if err != nil {
		initError = []byte(err.Error())
		initResult = [3]uint32{1, uint32(uintptr(unsafe.Pointer(unsafe.SliceData(initError)))), uint32(len(initError))}
	} else {
		policy = a
		initResult = [3]uint32{0, 0, 0}
	}
	return uint32(uintptr(unsafe.Pointer(&initResult)))
}

func address(tag uint32, lo uint64) Addr {
	// ip-address: v4(u32) | v6(tuple<u64, u64>) flattens to (case, i64, i64): a v4
	// address is the low 32 bits of the first i64.
	return Addr{V6: tag == 1, V4: uint32(lo)}
}

// check: func(f: flow) -> decision
// flow flattens to protocol, src (case, i64, i64), src-port, dst (case, i64, i64),
// dst-port, ingress: 10 values, under the 16 that go in registers. decision { verdict,
// hold-ms: option<u32> } is three values, over the one a result may be: it is returned in
// memory (checkResult).
//
//go:wasmexport natgw:policy/egress@0.2.0#check
func egressCheck(protocol, srcTag uint32, src0, src1 uint64, srcPort, dstTag uint32, dst0, dst1 uint64,
	dstPort, ingress uint32) uint32 {
	v := policy.Check(flowOf(protocol, srcTag, src0, dstTag, dst0, dstPort))
	// hold-ms none: a refusal holds as long as the gateway's policy.refusal_cache_ms.
	checkResult = [3]uint32{uint32(v), 0, 0}
	return uint32(uintptr(unsafe.Pointer(&checkResult)))
}

func flowOf(protocol, srcTag uint32, src0 uint64, dstTag uint32, dst0 uint64, dstPort uint32) Flow {
	return Flow{Protocol: Protocol(protocol), Src: address(srcTag, src0), Dst: address(dstTag, dst0), DstPort: uint16(dstPort)}
}

var (
	// check's return area, decision { verdict, hold-ms: option<u32> }: the verdict at
	// offset 0, the option's case at 4 (0: none) and its value at 8.
	checkResult [3]uint32
	// explain's return area, explanation { verdict, reason: string }: the verdict at
	// offset 0, the reason's pointer at 4 and its length at 8.
	explainResult [3]uint32
	explainReason []byte
	// export-state's return area, list<u8>: pointer and length (nothing to carry).
	stateResult [2]uint32
	// import-state's return area, result<_, string>: always ok.
	importResult [3]uint32
)

// explain: func(f: flow) -> explanation
//
//go:wasmexport natgw:policy/egress@0.2.0#explain
func egressExplain(protocol, srcTag uint32, src0, src1 uint64, srcPort, dstTag uint32, dst0, dst1 uint64,
	dstPort, ingress uint32) uint32 {
	v, why := policy.Explain(flowOf(protocol, srcTag, src0, dstTag, dst0, dstPort))
	explainReason = []byte(why)
	explainResult = [3]uint32{uint32(v), uint32(uintptr(unsafe.Pointer(unsafe.SliceData(explainReason)))), uint32(len(explainReason))}
	return uint32(uintptr(unsafe.Pointer(&explainResult)))
}

// export-state: func() -> list<u8>: the rules come from the config; nothing to carry.
//
//go:wasmexport natgw:policy/lifecycle@0.2.0#export-state
func lifecycleExportState() uint32 {
	stateResult = [2]uint32{0, 0}
	return uint32(uintptr(unsafe.Pointer(&stateResult)))
}

// import-state: func(state: list<u8>) -> result<_, string>: accepted, and dropped.
//
//go:wasmexport natgw:policy/lifecycle@0.2.0#import-state
func lifecycleImportState(ptr, length uint32) uint32 {
	hostBuffers = nil
	importResult = [3]uint32{0, 0, 0}
	return uint32(uintptr(unsafe.Pointer(&importResult)))
}

// set-patterns: func(patterns: list<string>) -> result<_, string>
// The list lowers to (pointer, length) of (pointer, length) pairs; the result does not fit
// in one value, so the caller passes a return area: the case at offset 0, the error's
// pointer at 4 and its length at 8 (the host allocates it with cabi_realloc).
//
//go:wasmimport natgw:policy/names@0.2.0 set-patterns
func wasmSetPatterns(ptr, length, ret uint32)

// dst-matches: func() -> u64
//
//go:wasmimport natgw:policy/names@0.2.0 dst-matches
func wasmDstMatches() uint64

func setPatterns(p []string) error {
	bytes := make([][]byte, len(p))
	pairs := make([]uint32, 2*len(p)+1)
	for i, s := range p {
		bytes[i] = []byte(s)
		if len(s) > 0 {
			pairs[2*i] = uint32(uintptr(unsafe.Pointer(unsafe.SliceData(bytes[i]))))
		}
		pairs[2*i+1] = uint32(len(s))
	}
	var ret [3]uint32
	wasmSetPatterns(uint32(uintptr(unsafe.Pointer(&pairs[0]))), uint32(len(p)), uint32(uintptr(unsafe.Pointer(&ret))))
	runtime.KeepAlive(bytes)
	runtime.KeepAlive(pairs)
	if ret[0]&0xff == 0 {
		return nil
	}
	msg := ""
	if ret[2] > 0 {
		msg = string(unsafe.Slice((*byte)(unsafe.Pointer(uintptr(ret[1]))), ret[2])) // a copy
	}
	return errors.New(msg)
}

func dstMatches() uint64 { return wasmDstMatches() }
