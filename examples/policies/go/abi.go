// The component glue: the core-Wasm exports that `wasm-tools component new` lifts into the
// natgw:policy@0.1.0 egress-policy world, written by hand against the canonical ABI (there
// is no wit-bindgen for the main Go toolchain). Each signature is the WIT function's
// flattened one; the comments show how.

//go:build wasip1

package main

import (
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
//go:wasmexport natgw:policy/lifecycle@0.1.0#init
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

// check: func(f: flow) -> verdict
// flow flattens to protocol, src (case, i64, i64), src-port, dst (case, i64, i64),
// dst-port, ingress: 10 values, under the 16 that go in registers.
//
//go:wasmexport natgw:policy/egress@0.1.0#check
func egressCheck(protocol, srcTag uint32, src0, src1 uint64, srcPort, dstTag uint32, dst0, dst1 uint64,
	dstPort, ingress uint32) uint32 {
	return uint32(policy.Check(Flow{
		Protocol: Protocol(protocol),
		Src:      address(srcTag, src0),
		Dst:      address(dstTag, dst0),
		DstPort:  uint16(dstPort),
	}))
}
