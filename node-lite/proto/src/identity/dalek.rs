//! Pure-Rust Ed25519 (`ed25519-dalek`): used in the browser and wherever libsodium is not built.

use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};

use super::{IdentityError, PUBLIC_KEY_LEN, SEED_LEN, SIGNATURE_LEN};

/// The secret half as the backend keeps it.
pub type Secret = SigningKey;

/// Derive the public key and backend secret from a seed.
pub fn from_seed(seed: &[u8; SEED_LEN]) -> Result<([u8; PUBLIC_KEY_LEN], Secret), IdentityError> {
    let sk = SigningKey::from_bytes(seed);
    Ok((sk.verifying_key().to_bytes(), sk))
}

/// Detached signature.
pub fn sign(sk: &Secret, msg: &[u8]) -> [u8; SIGNATURE_LEN] {
    sk.sign(msg).to_bytes()
}

/// Verify with the strict rules (canonical S, no small-order keys), as libsodium does.
pub fn verify(
    pk: &[u8; PUBLIC_KEY_LEN],
    msg: &[u8],
    sig: &[u8; SIGNATURE_LEN],
) -> Result<(), IdentityError> {
    let vk = VerifyingKey::from_bytes(pk).map_err(|_| IdentityError::BadSignature)?;
    let sig = ed25519_dalek::Signature::from_bytes(sig);
    vk.verify_strict(msg, &sig)
        .map_err(|_| IdentityError::BadSignature)
}
