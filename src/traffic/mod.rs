//! Traffic management primitives: I/O-free state machines that decide whether work
//! may go ahead, driven by the caller's clock and outcomes. Today the circuit
//! [`breaker`], the load [`shed`]der and the GCRA rate [`limit`]er.
//!
//! Nothing here performs I/O or knows what it guards, and every decision takes
//! the time from its caller (an `Instant`, or for the limiter nanoseconds since its
//! creation, which `Limiter::now` reads for callers): every rule is unit-tested with
//! made-up times.

pub(crate) mod breaker;
pub(crate) mod limit;
pub(crate) mod shed;
