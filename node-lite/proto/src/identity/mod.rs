//! Ed25519 identities: a node's long-term key, its peer id, signatures.
//!
//! One API, two byte-identical backends:
//! - native with feature `sodium`: libsodium (`crypto_sign_*`, through `libsodium-sys-stable`);
//! - everywhere else (wasm32, or native without `sodium`): `ed25519-dalek`.
//!
//! The peer id *is* the 32-byte public key; its text form is unpadded base64url (43 chars).
//! A key is stored as its 32-byte seed (libsodium's `sk[..32]` is the dalek seed).

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

pub mod dalek;
#[cfg(all(feature = "sodium", not(target_family = "wasm")))]
pub mod sodium;

#[cfg(all(feature = "sodium", not(target_family = "wasm")))]
use sodium as backend;

#[cfg(not(all(feature = "sodium", not(target_family = "wasm"))))]
use dalek as backend;

/// Length of a public key / peer id in bytes.
pub const PUBLIC_KEY_LEN: usize = 32;
/// Length of a secret seed in bytes.
pub const SEED_LEN: usize = 32;
/// Length of a detached signature in bytes.
pub const SIGNATURE_LEN: usize = 64;

/// Errors from identity operations.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum IdentityError {
    /// The signature does not verify under this key (or the key is not a valid point).
    #[error("bad signature")]
    BadSignature,
    /// A text peer id that is not 43 chars of unpadded base64url encoding 32 bytes.
    #[error("invalid peer id text: {0}")]
    BadPeerIdText(String),
    /// A seed of the wrong length.
    #[error("invalid seed length {0}, want 32")]
    BadSeedLength(usize),
    /// The operating system's random source failed.
    #[error("random source failed: {0}")]
    Random(String),
    /// The crypto backend failed (libsodium init).
    #[error("crypto backend: {0}")]
    Backend(&'static str),
}

/// A peer id: an Ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PeerId(pub [u8; PUBLIC_KEY_LEN]);

impl PeerId {
    /// The raw public key bytes.
    pub fn as_bytes(&self) -> &[u8; PUBLIC_KEY_LEN] {
        &self.0
    }

    /// Verify `sig` over `msg` under this key.
    pub fn verify(&self, msg: &[u8], sig: &Signature) -> Result<(), IdentityError> {
        backend::verify(&self.0, msg, &sig.0)
    }

    /// A short form for logs (first 8 chars of the text form).
    pub fn short(&self) -> String {
        let mut s = self.to_string();
        s.truncate(8);
        s
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&URL_SAFE_NO_PAD.encode(self.0))
    }
}

impl fmt::Debug for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerId({self})")
    }
}

impl FromStr for PeerId {
    type Err = IdentityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || IdentityError::BadPeerIdText(s.chars().take(64).collect());
        if s.len() != 43 {
            return Err(bad());
        }
        let bytes = URL_SAFE_NO_PAD.decode(s).map_err(|_| bad())?;
        let arr: [u8; PUBLIC_KEY_LEN] = bytes.try_into().map_err(|_| bad())?;
        Ok(PeerId(arr))
    }
}

/// A detached Ed25519 signature.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature(#[serde(with = "serde_bytes")] pub [u8; SIGNATURE_LEN]);

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({})", URL_SAFE_NO_PAD.encode(&self.0[..8]))
    }
}

/// An Ed25519 key pair. Holds the 32-byte seed; `Debug` never prints it.
#[derive(Clone)]
pub struct Keypair {
    seed: [u8; SEED_LEN],
    public: PeerId,
    inner: backend::Secret,
}

impl fmt::Debug for Keypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Keypair({})", self.public)
    }
}

impl Keypair {
    /// A fresh key from the operating system's random source.
    pub fn generate() -> Result<Self, IdentityError> {
        let mut seed = [0u8; SEED_LEN];
        getrandom04::fill(&mut seed).map_err(|e| IdentityError::Random(e.to_string()))?;
        Self::from_seed(seed)
    }

    /// The key pair for a 32-byte seed (deterministic).
    pub fn from_seed(seed: [u8; SEED_LEN]) -> Result<Self, IdentityError> {
        let (public, inner) = backend::from_seed(&seed)?;
        Ok(Keypair {
            seed,
            public: PeerId(public),
            inner,
        })
    }

    /// The key pair for a seed given as a byte slice (e.g. read from a file).
    pub fn from_seed_slice(seed: &[u8]) -> Result<Self, IdentityError> {
        let arr: [u8; SEED_LEN] = seed
            .try_into()
            .map_err(|_| IdentityError::BadSeedLength(seed.len()))?;
        Self::from_seed(arr)
    }

    /// The secret seed: persist this (and nothing else) to keep the identity.
    pub fn seed(&self) -> &[u8; SEED_LEN] {
        &self.seed
    }

    /// The public key / peer id.
    pub fn peer_id(&self) -> PeerId {
        self.public
    }

    /// Sign `msg` (deterministic Ed25519).
    pub fn sign(&self, msg: &[u8]) -> Signature {
        Signature(backend::sign(&self.inner, msg))
    }
}

/// Verify `sig` over `msg` under `peer`.
pub fn verify(peer: &PeerId, msg: &[u8], sig: &Signature) -> Result<(), IdentityError> {
    peer.verify(msg, sig)
}

/// Fill `buf` with random bytes from the operating system (or `crypto.getRandomValues` in a browser).
pub fn random_bytes(buf: &mut [u8]) -> Result<(), IdentityError> {
    getrandom04::fill(buf).map_err(|e| IdentityError::Random(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_roundtrip_and_text_form() {
        let kp = Keypair::generate().unwrap();
        let sig = kp.sign(b"hello");
        kp.peer_id().verify(b"hello", &sig).unwrap();
        assert_eq!(
            kp.peer_id().verify(b"hellO", &sig),
            Err(IdentityError::BadSignature)
        );
        let text = kp.peer_id().to_string();
        assert_eq!(text.len(), 43);
        assert_eq!(text.parse::<PeerId>().unwrap(), kp.peer_id());
        assert!("not a peer id".parse::<PeerId>().is_err());
        assert!("A".repeat(44).parse::<PeerId>().is_err());
    }

    /// RFC 8032 section 7.1, test 2 (one-byte message).
    #[test]
    fn rfc8032_vector() {
        let seed: [u8; 32] =
            hex::decode("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb")
                .unwrap()
                .try_into()
                .unwrap();
        let kp = Keypair::from_seed(seed).unwrap();
        assert_eq!(
            hex::encode(kp.peer_id().0),
            "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c"
        );
        let sig = kp.sign(&[0x72]);
        assert_eq!(
            hex::encode(sig.0),
            "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da\
             085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"
        );
    }

    /// libsodium and ed25519-dalek produce the same keys and signatures and accept each other's.
    #[cfg(all(feature = "sodium", not(target_family = "wasm")))]
    #[test]
    fn sodium_and_dalek_are_byte_identical_both_ways() {
        for i in 0..64u8 {
            let mut seed = [0u8; 32];
            random_bytes(&mut seed).unwrap();
            seed[0] = i;
            let msg: Vec<u8> = (0..(i as usize * 7)).map(|j| (j as u8) ^ i).collect();
            let (pk_s, sk_s) = sodium::from_seed(&seed).unwrap();
            let (pk_d, sk_d) = dalek::from_seed(&seed).unwrap();
            assert_eq!(pk_s, pk_d, "public keys differ");
            let sig_s = sodium::sign(&sk_s, &msg);
            let sig_d = dalek::sign(&sk_d, &msg);
            assert_eq!(sig_s, sig_d, "signatures differ");
            // Each verifies the other's signature ...
            dalek::verify(&pk_s, &msg, &sig_s).unwrap();
            sodium::verify(&pk_d, &msg, &sig_d).unwrap();
            // ... and both refuse the same tampered one.
            let mut bad = sig_s;
            bad[5] ^= 1;
            assert!(dalek::verify(&pk_s, &msg, &bad).is_err());
            assert!(sodium::verify(&pk_s, &msg, &bad).is_err());
        }
    }
}
