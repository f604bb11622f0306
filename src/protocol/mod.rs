//! Sans-IO protocol code: byte framing and command parsing, pure functions over buffers.
//!
//! Nothing here touches a socket or the runtime, so every rule is unit-tested with byte
//! literals. Transports feed bytes in and get typed values out.

pub mod command;
pub mod envelope;
pub mod line;
pub mod mqtt;
pub mod names;
pub mod topic;
