//! The sans-IO job engine shared by browser tabs and the native node.
//!
//! - [`msg`]: the peer-to-peer messages (versioned postcard, size-limited), sent sealed.
//! - [`engine`]: the requester's [`Job`]: shards, capacity-proportional assignment with bounded
//!   in-flight, deadlines, reassignment on leave / stall / error / malformed results, merge in
//!   input order, cancellation, per-member progress.
//! - [`worker`]: the worker's bounded queue.
//! - [`generate`]: generation as a job, the requester's side: who serves, the token stream, failover,
//!   verification by teacher forcing (the driver's model), stop.
//! - [`order`]: length ordering of a job's texts (less padding per shard), undone on output.
//!
//! No clock is read anywhere: time comes in as `now_ms`, so it runs the same in wasm and tests.

pub mod engine;
pub mod generate;
pub mod msg;
pub mod order;
pub mod worker;

pub use engine::{
    Action, Exclusion, Job, JobConfig, JobError, MAX_MEMBERS, MemberStatus, Progress,
};
pub use generate::{GenAction, GenAsk, GenConfig, GenExclusion, GenJob, Server};
pub use msg::{Capabilities, ChatModelCap, GenFinish, JobId, MsgError, PeerMsg};
pub use order::LengthOrder;
pub use worker::{Accepted, Task, Worker};
