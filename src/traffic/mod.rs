//! Traffic management primitives: I/O-free state machines that decide whether work
//! may go ahead, driven by the caller's clock and outcomes. Today the circuit
//! [`breaker`], the load [`shed`]der and the GCRA rate [`limit`]er.
//!
//! Nothing here performs I/O, reads a clock of its own or knows what it guards:
//! callers pass `Instant`s and report outcomes, so every rule is unit-tested with
//! made-up times.

pub(crate) mod breaker;
pub(crate) mod limit;
pub(crate) mod shed;
