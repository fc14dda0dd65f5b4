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
    // produced. natgw only passes bytes it read from its own cache directory: one it created
    // with mode 0700, or an existing one its own user owns that neither group nor others can
    // write to (checked at start and before each read; never chmod-ed), filled by creating
    // a file of an unpredictable name with O_EXCL|O_NOFOLLOW and renaming it, so nobody
    // else can place or change a file there; the file name is the SHA-256 of the
    // source component plus the engine's compatibility hash. wasmtime additionally checks
    // the header (version, target, engine settings) and fails instead of loading code built
    // for another engine; the caller then compiles from source.
    unsafe { Component::deserialize(engine, bytes) }
}
