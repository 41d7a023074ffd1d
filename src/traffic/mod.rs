//! Traffic management primitives: state machines that decide whether work may go
//! ahead, driven by the caller's clock and outcomes. Today the circuit
//! [`breaker`], the load [`shed`]der and the GCRA rate [`limit`]er.
//!
//! Nothing here does network or disk I/O or knows what it guards; the breaker and
//! the shedder log their state changes through `tracing`. Every decision takes the
//! time from its caller as an argument (an `Instant`, or for the limiter
//! nanoseconds since its creation), so every rule is unit-tested with made-up
//! times. The exceptions: the shedder and the limiter read `Instant::now()` once,
//! when they are made, as their epoch, and `Limiter::now` reads the clock for
//! callers.

pub(crate) mod breaker;
pub(crate) mod limit;
pub(crate) mod shed;
