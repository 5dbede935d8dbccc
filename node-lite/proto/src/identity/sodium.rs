//! libsodium Ed25519 (`crypto_sign_*`), native only. The one place in `node-lite` with `unsafe`:
//! plain FFI calls with correctly sized, initialised buffers.
#![allow(unsafe_code)]

use std::sync::OnceLock;

use libsodium_sys as ffi;

use super::{IdentityError, PUBLIC_KEY_LEN, SEED_LEN, SIGNATURE_LEN};

/// libsodium's 64-byte secret key (seed ‖ public key).
#[derive(Clone)]
pub struct Secret([u8; 64]);

fn init() -> Result<(), IdentityError> {
    static INIT: OnceLock<bool> = OnceLock::new();
    // SAFETY: sodium_init is thread-safe and idempotent; it returns 0 (done) or 1 (already done).
    let ok = *INIT.get_or_init(|| unsafe { ffi::sodium_init() } >= 0);
    if ok {
        Ok(())
    } else {
        Err(IdentityError::Backend("sodium_init failed"))
    }
}

/// Derive the public key and secret key from a seed (`crypto_sign_seed_keypair`).
pub fn from_seed(seed: &[u8; SEED_LEN]) -> Result<([u8; PUBLIC_KEY_LEN], Secret), IdentityError> {
    init()?;
    let mut pk = [0u8; PUBLIC_KEY_LEN];
    let mut sk = [0u8; 64];
    // SAFETY: pk is crypto_sign_PUBLICKEYBYTES (32), sk crypto_sign_SECRETKEYBYTES (64), seed 32.
    let rc =
        unsafe { ffi::crypto_sign_seed_keypair(pk.as_mut_ptr(), sk.as_mut_ptr(), seed.as_ptr()) };
    if rc != 0 {
        return Err(IdentityError::Backend("crypto_sign_seed_keypair failed"));
    }
    Ok((pk, Secret(sk)))
}

/// Detached signature (`crypto_sign_detached`).
pub fn sign(sk: &Secret, msg: &[u8]) -> [u8; SIGNATURE_LEN] {
    let mut sig = [0u8; SIGNATURE_LEN];
    let mut len: std::os::raw::c_ulonglong = 0;
    // SAFETY: sig is crypto_sign_BYTES (64); msg pointer/length come from a slice; sk is 64 bytes
    // produced by crypto_sign_seed_keypair (init() already ran to construct it).
    unsafe {
        ffi::crypto_sign_detached(
            sig.as_mut_ptr(),
            &mut len,
            msg.as_ptr(),
            msg.len() as std::os::raw::c_ulonglong,
            sk.0.as_ptr(),
        );
    }
    sig
}

/// Verify a detached signature (`crypto_sign_verify_detached`).
pub fn verify(
    pk: &[u8; PUBLIC_KEY_LEN],
    msg: &[u8],
    sig: &[u8; SIGNATURE_LEN],
) -> Result<(), IdentityError> {
    init()?;
    // SAFETY: sig 64 bytes, pk 32 bytes, msg pointer/length from a slice.
    let rc = unsafe {
        ffi::crypto_sign_verify_detached(
            sig.as_ptr(),
            msg.as_ptr(),
            msg.len() as std::os::raw::c_ulonglong,
            pk.as_ptr(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(IdentityError::BadSignature)
    }
}
