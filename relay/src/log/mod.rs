//! The receipt transparency log served by a relay (issue 6): durable storage with group
//! commit ([`store`]), the HTTP routes ([`http`]), and witnessing other relays' logs
//! ([`witness`]). Formats and proof logic live in `shoal_tlog` (shared with the
//! browser's light client). [`peers`] runs witnessing between relays. See `relay/ARCHITECTURE-relay.md`.

/// `From<redb::*Error>` for an error enum with a `Storage(redb::Error)` variant, so `?` works on
/// every redb call.
macro_rules! redb_errors_into {
    ($target:ident) => {
        redb_errors_into!(
            $target: redb::DatabaseError,
            redb::TransactionError,
            redb::TableError,
            redb::StorageError,
            redb::CommitError
        );
    };
    ($target:ident: $($t:ty),*) => {$(
        impl From<$t> for $target {
            fn from(e: $t) -> Self {
                $target::Storage(e.into())
            }
        }
    )*};
}

pub mod http;
pub mod peers;
pub mod store;
pub mod witness;

pub use http::{Equivocate, LogState, SubmitError, routes};
pub use store::{Log, LogConfig, LogError};
pub use witness::{AddCheckpoint, Witness, WitnessError};
