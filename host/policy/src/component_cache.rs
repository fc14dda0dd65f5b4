//! Loading compiled policy components from natgw's on-disk cache.
//!
//! Compiling a component takes milliseconds (Rust) to seconds (JS, Python); the cache keeps
//! the machine code keyed by the component's content hash so a restart or a swap back to a
//! known policy skips it.

use wasmtime::component::Component;
use wasmtime::Engine;

/// Turns bytes written by `Component::serialize` back into a component.
pub fn deserialize_component(engine: &Engine, bytes: &[u8]) -> wasmtime::Result<Component> {
    // SAFETY: `Component::deserialize` trusts its input to be machine code that wasmtime
    // produced. natgw only passes bytes it read from its own cache directory, which it
    // creates with mode 0700 as root and fills by writing a temporary file and renaming it,
    // so nobody else can place or change a file there; the file name is the SHA-256 of the
    // source component plus the engine's compatibility hash. wasmtime additionally checks
    // the header (version, target, engine settings) and fails instead of loading code built
    // for another engine; the caller then compiles from source.
    unsafe { Component::deserialize(engine, bytes) }
}
