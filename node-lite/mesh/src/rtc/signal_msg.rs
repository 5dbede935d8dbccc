//! The signaling messages two members exchange through the relay, sealed with the circle's
//! signaling key ([`crate::circle::Circle::seal_signal`]): the relay sees only their size.
//!
//! Wire (inside the seal): `version(1) ‖ postcard(SignalMsg)`. SDP travels as the JSON of an
//! `RTCSessionDescriptionInit` (`{"type":"offer","sdp":"…"}`), the shape both browsers and
//! webrtc-rs produce and accept. ICE is not trickled: each side waits for gathering to finish
//! (bounded) and sends one description with its candidates, so a pair needs exactly one offer
//! and one answer.

use serde::{Deserialize, Serialize};
use shoal_proto::envelope::{Envelope, EnvelopeError};

use crate::circle::MAX_SIGNAL_PLAINTEXT;

/// Version byte of signaling messages.
pub const SIGNAL_MSG_VERSION: u8 = 1;
/// The envelope of signaling messages: [`SIGNAL_MSG_VERSION`], at most
/// [`MAX_SIGNAL_PLAINTEXT`] bytes (what one sealed signaling payload carries).
pub const ENVELOPE: Envelope = Envelope::new(SIGNAL_MSG_VERSION, MAX_SIGNAL_PLAINTEXT);

/// One signaling message. `session` is a random id the offerer picks per connection attempt:
/// an answer or bye for another session is ignored, and a replayed offer (a session already
/// answered) is dropped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SignalMsg {
    /// Offerer → answerer: a new connection.
    Offer {
        /// Connection attempt id.
        session: u64,
        /// `RTCSessionDescriptionInit` JSON.
        sdp: String,
    },
    /// Answerer → offerer.
    Answer {
        /// The offer's session id.
        session: u64,
        /// `RTCSessionDescriptionInit` JSON.
        sdp: String,
    },
    /// Either side: this connection attempt is over.
    Bye {
        /// Session id.
        session: u64,
    },
}

/// A signaling message that could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum SignalMsgError {
    /// Unknown version, malformed postcard or trailing bytes.
    #[error("malformed signaling message: {0}")]
    Malformed(String),
    /// Over the sealed payload limit.
    #[error("signaling message of {0} bytes over the limit of {MAX_SIGNAL_PLAINTEXT}")]
    TooLarge(usize),
}

impl From<EnvelopeError> for SignalMsgError {
    fn from(e: EnvelopeError) -> Self {
        match e {
            EnvelopeError::TooLarge { len, .. } => SignalMsgError::TooLarge(len),
            e => SignalMsgError::Malformed(e.to_string()),
        }
    }
}

impl SignalMsg {
    /// `version ‖ postcard(self)` ([`ENVELOPE`]), at most [`MAX_SIGNAL_PLAINTEXT`] bytes.
    pub fn encode(&self) -> Result<Vec<u8>, SignalMsgError> {
        Ok(ENVELOPE.encode(self)?)
    }

    /// Parse one message ([`ENVELOPE`]: length, version, the whole body).
    pub fn decode(bytes: &[u8]) -> Result<Self, SignalMsgError> {
        Ok(ENVELOPE.decode(bytes)?)
    }

    /// The session id.
    pub fn session(&self) -> u64 {
        match self {
            SignalMsg::Offer { session, .. }
            | SignalMsg::Answer { session, .. }
            | SignalMsg::Bye { session } => *session,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_limits() {
        let m = SignalMsg::Offer {
            session: 7,
            sdp: "{\"type\":\"offer\",\"sdp\":\"v=0\"}".into(),
        };
        assert_eq!(SignalMsg::decode(&m.encode().unwrap()).unwrap(), m);
        let mut bad = m.encode().unwrap();
        bad[0] = 9;
        assert!(SignalMsg::decode(&bad).is_err());
        let mut long = m.encode().unwrap();
        long.push(0);
        assert!(SignalMsg::decode(&long).is_err());
        let huge = SignalMsg::Answer {
            session: 1,
            sdp: "x".repeat(MAX_SIGNAL_PLAINTEXT),
        };
        assert!(matches!(huge.encode(), Err(SignalMsgError::TooLarge(_))));
        assert!(SignalMsg::decode(&[]).is_err());
    }
}
