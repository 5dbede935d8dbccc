//! The one versioned envelope of Shoal's peer-to-peer messages: `version(1) ‖ postcard(T)`,
//! bounded in length, the whole input consumed. The job engine's peer messages
//! (`shoal-mesh` `jobs::msg`) and the sealed signaling messages (`rtc::signal_msg`) are
//! envelopes with their own version byte and limit; relay frames ([`crate::Frame`]) add a tag
//! byte after the version and decode their bodies with [`take_all`].
//!
//! Decoding never panics and never reads past the limit: the length is checked before
//! anything else, then the version, then the body.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// A message kind's envelope: its version byte and its largest encoded length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Envelope {
    version: u8,
    max_len: usize,
}

/// Why an envelope could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// No version byte.
    #[error("empty message")]
    Empty,
    /// A version this build does not speak.
    #[error("unsupported version {got} (this build speaks {supported})")]
    UnsupportedVersion {
        /// The version byte received.
        got: u8,
        /// The one this build speaks.
        supported: u8,
    },
    /// Longer than the envelope's limit.
    #[error("message of {len} bytes over the limit of {max}")]
    TooLarge {
        /// Encoded length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The body is not valid postcard for the type (or could not be serialised).
    #[error("malformed body: {0}")]
    Malformed(String),
    /// The body parsed but bytes were left over.
    #[error("{0} trailing bytes")]
    Trailing(usize),
}

impl Envelope {
    /// An envelope with `version` and a limit of `max_len` encoded bytes (version included).
    pub const fn new(version: u8, max_len: usize) -> Self {
        Self { version, max_len }
    }

    /// The version byte.
    pub const fn version(&self) -> u8 {
        self.version
    }

    /// The largest encoded length.
    pub const fn max_len(&self) -> usize {
        self.max_len
    }

    /// `version ‖ postcard(msg)`, refused when over the limit.
    pub fn encode<T: Serialize>(&self, msg: &T) -> Result<Vec<u8>, EnvelopeError> {
        let out = postcard::to_extend(msg, vec![self.version])
            .map_err(|e| EnvelopeError::Malformed(e.to_string()))?;
        self.check_len(out.len())?;
        Ok(out)
    }

    /// The message in `bytes`: length, then version, then a body that must be consumed whole.
    pub fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, EnvelopeError> {
        take_all(self.open(bytes)?)
    }

    /// Checks the length and the version byte; returns what follows the version.
    pub fn open<'a>(&self, bytes: &'a [u8]) -> Result<&'a [u8], EnvelopeError> {
        self.check_len(bytes.len())?;
        let (&got, rest) = bytes.split_first().ok_or(EnvelopeError::Empty)?;
        if got != self.version {
            return Err(EnvelopeError::UnsupportedVersion {
                got,
                supported: self.version,
            });
        }
        Ok(rest)
    }

    fn check_len(&self, len: usize) -> Result<(), EnvelopeError> {
        if len > self.max_len {
            return Err(EnvelopeError::TooLarge {
                len,
                max: self.max_len,
            });
        }
        Ok(())
    }
}

/// A postcard body that must fill `body` exactly.
pub fn take_all<T: DeserializeOwned>(body: &[u8]) -> Result<T, EnvelopeError> {
    let (v, extra) = postcard::take_from_bytes::<T>(body)
        .map_err(|e| EnvelopeError::Malformed(e.to_string()))?;
    if !extra.is_empty() {
        return Err(EnvelopeError::Trailing(extra.len()));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Msg {
        id: u64,
        text: String,
    }

    const E: Envelope = Envelope::new(3, 64);

    #[test]
    fn round_trip_and_every_refusal() {
        let m = Msg {
            id: 7,
            text: "hi".into(),
        };
        let b = E.encode(&m).unwrap();
        assert_eq!(b[0], 3);
        assert_eq!(E.decode::<Msg>(&b), Ok(m));
        assert_eq!(E.decode::<Msg>(&[]), Err(EnvelopeError::Empty));
        let mut v = b.clone();
        v[0] = 4;
        assert_eq!(
            E.decode::<Msg>(&v),
            Err(EnvelopeError::UnsupportedVersion {
                got: 4,
                supported: 3
            })
        );
        let mut t = b.clone();
        t.push(0);
        assert_eq!(E.decode::<Msg>(&t), Err(EnvelopeError::Trailing(1)));
        assert!(matches!(
            E.decode::<Msg>(&b[..b.len() - 1]),
            Err(EnvelopeError::Malformed(_))
        ));
        let big = Msg {
            id: 0,
            text: "x".repeat(64),
        };
        assert!(matches!(
            E.encode(&big),
            Err(EnvelopeError::TooLarge { max: 64, .. })
        ));
        assert!(matches!(
            E.decode::<Msg>(&[3; 65]),
            Err(EnvelopeError::TooLarge { len: 65, max: 64 })
        ));
    }

    proptest! {
        #[test]
        fn decode_arbitrary_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = E.decode::<Msg>(&bytes);
        }
    }
}
