//! Pure-Rust primitives (RustCrypto `chacha20poly1305`, `blake2`; `ed25519-dalek` /
//! `curve25519-dalek` for X25519). Used in the browser and wherever libsodium is not built;
//! natively it is also compiled so the tests can prove it byte-identical to [`super::sodium`].

use blake2::Blake2bMac;
use blake2::digest::Mac as _;
use blake2::digest::consts::U32;
use chacha20poly1305::XChaCha20Poly1305;
use chacha20poly1305::aead::{Aead as _, KeyInit as _, Payload};
use curve25519_dalek::montgomery::MontgomeryPoint;
use ed25519_dalek::{SigningKey, VerifyingKey};

use super::{KEY_LEN, NONCE_LEN, SealError};

/// Nothing to initialise.
pub fn init() -> Result<(), SealError> {
    Ok(())
}

/// `crypto_generichash(out = 32 bytes, in = parts concatenated, key)`: keyed BLAKE2b-256.
pub fn blake2b256_keyed(key: &[u8; KEY_LEN], parts: &[&[u8]]) -> [u8; 32] {
    // A 32-byte key is always a valid BLAKE2b key (1..=64 bytes), so this cannot fail; fall
    // back to an all-zero output type-wise rather than panic.
    let Ok(mut mac) = <Blake2bMac<U32> as blake2::digest::KeyInit>::new_from_slice(key) else {
        return [0u8; 32];
    };
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// `crypto_aead_xchacha20poly1305_ietf_encrypt`: ciphertext ‖ 16-byte tag.
pub fn aead_seal(
    key: &[u8; KEY_LEN],
    nonce: &[u8; NONCE_LEN],
    ad: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, SealError> {
    let cipher = XChaCha20Poly1305::new(&(*key).into());
    cipher
        .encrypt(
            &(*nonce).into(),
            Payload {
                msg: plaintext,
                aad: ad,
            },
        )
        .map_err(|_| SealError::Backend("xchacha20poly1305 encrypt"))
}

/// `crypto_aead_xchacha20poly1305_ietf_decrypt`.
pub fn aead_open(
    key: &[u8; KEY_LEN],
    nonce: &[u8; NONCE_LEN],
    ad: &[u8],
    ciphertext: &[u8],
) -> Result<Vec<u8>, SealError> {
    let cipher = XChaCha20Poly1305::new(&(*key).into());
    cipher
        .decrypt(
            &(*nonce).into(),
            Payload {
                msg: ciphertext,
                aad: ad,
            },
        )
        .map_err(|_| SealError::Forged)
}

/// `crypto_sign_ed25519_sk_to_curve25519`: the clamped first half of SHA-512(seed).
pub fn x25519_sk_from_ed_seed(seed: &[u8; 32]) -> Result<[u8; 32], SealError> {
    let mut s = SigningKey::from_bytes(seed).to_scalar_bytes();
    s[0] &= 248;
    s[31] &= 127;
    s[31] |= 64;
    Ok(s)
}

/// `crypto_sign_ed25519_pk_to_curve25519`: the birational map, refusing what libsodium refuses
/// (not a point, small order, not in the prime-order subgroup).
pub fn x25519_pk_from_ed_pk(pk: &[u8; 32]) -> Result<[u8; 32], SealError> {
    let vk = VerifyingKey::from_bytes(pk).map_err(|_| SealError::BadPublicKey)?;
    if vk.is_weak() || !vk.to_edwards().is_torsion_free() {
        return Err(SealError::BadPublicKey);
    }
    Ok(vk.to_montgomery().to_bytes())
}

/// `crypto_scalarmult`: X25519, refusing an all-zero result (a low-order peer point).
pub fn x25519(sk: &[u8; 32], pk: &[u8; 32]) -> Result<[u8; 32], SealError> {
    let q = MontgomeryPoint(*pk).mul_clamped(*sk).to_bytes();
    if q.iter().fold(0u8, |acc, b| acc | b) == 0 {
        return Err(SealError::BadPublicKey);
    }
    Ok(q)
}
