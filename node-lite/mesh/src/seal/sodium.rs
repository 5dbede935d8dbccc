//! libsodium primitives (native, feature `sodium`). Plain FFI calls with correctly sized,
//! initialised buffers; the only `unsafe` besides `identity::sodium`.
#![allow(unsafe_code)]

use std::os::raw::c_ulonglong;
use std::sync::OnceLock;

use libsodium_sys as ffi;

use super::{KEY_LEN, NONCE_LEN, SealError, TAG_LEN};

/// `sodium_init`, once.
pub fn init() -> Result<(), SealError> {
    static INIT: OnceLock<bool> = OnceLock::new();
    // SAFETY: sodium_init is thread-safe and idempotent.
    let ok = *INIT.get_or_init(|| unsafe { ffi::sodium_init() } >= 0);
    if ok {
        Ok(())
    } else {
        Err(SealError::Backend("sodium_init failed"))
    }
}

/// `crypto_generichash` with a 32-byte key and output; the parts are concatenated.
pub fn blake2b256_keyed(key: &[u8; KEY_LEN], parts: &[&[u8]]) -> [u8; 32] {
    let input: Vec<u8> = parts.concat();
    let mut out = [0u8; 32];
    if init().is_err() {
        return out;
    }
    // SAFETY: out is 32 bytes (within crypto_generichash_BYTES_MIN..MAX), the key 32 bytes
    // (within KEYBYTES_MIN..MAX), input pointer/length from a Vec.
    unsafe {
        ffi::crypto_generichash(
            out.as_mut_ptr(),
            out.len(),
            input.as_ptr(),
            input.len() as c_ulonglong,
            key.as_ptr(),
            key.len(),
        );
    }
    out
}

/// `crypto_aead_xchacha20poly1305_ietf_encrypt`: ciphertext ‖ 16-byte tag.
pub fn aead_seal(
    key: &[u8; KEY_LEN],
    nonce: &[u8; NONCE_LEN],
    ad: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, SealError> {
    init()?;
    let mut out = vec![0u8; plaintext.len() + TAG_LEN];
    let mut out_len: c_ulonglong = 0;
    // SAFETY: out has mlen + ABYTES bytes; all pointer/length pairs come from slices; the
    // nonce is NPUBBYTES (24) and the key KEYBYTES (32); nsec must be NULL.
    let rc = unsafe {
        ffi::crypto_aead_xchacha20poly1305_ietf_encrypt(
            out.as_mut_ptr(),
            &mut out_len,
            plaintext.as_ptr(),
            plaintext.len() as c_ulonglong,
            ad.as_ptr(),
            ad.len() as c_ulonglong,
            std::ptr::null(),
            nonce.as_ptr(),
            key.as_ptr(),
        )
    };
    if rc != 0 {
        return Err(SealError::Backend("xchacha20poly1305 encrypt"));
    }
    out.truncate(out_len as usize);
    Ok(out)
}

/// `crypto_aead_xchacha20poly1305_ietf_decrypt`.
pub fn aead_open(
    key: &[u8; KEY_LEN],
    nonce: &[u8; NONCE_LEN],
    ad: &[u8],
    ciphertext: &[u8],
) -> Result<Vec<u8>, SealError> {
    init()?;
    if ciphertext.len() < TAG_LEN {
        return Err(SealError::Forged);
    }
    let mut out = vec![0u8; ciphertext.len() - TAG_LEN];
    let mut out_len: c_ulonglong = 0;
    // SAFETY: out has clen - ABYTES bytes (what decrypt writes at most); pointer/length pairs
    // from slices; nonce 24 bytes, key 32 bytes; nsec must be NULL.
    let rc = unsafe {
        ffi::crypto_aead_xchacha20poly1305_ietf_decrypt(
            out.as_mut_ptr(),
            &mut out_len,
            std::ptr::null_mut(),
            ciphertext.as_ptr(),
            ciphertext.len() as c_ulonglong,
            ad.as_ptr(),
            ad.len() as c_ulonglong,
            nonce.as_ptr(),
            key.as_ptr(),
        )
    };
    if rc != 0 {
        return Err(SealError::Forged);
    }
    out.truncate(out_len as usize);
    Ok(out)
}

/// `crypto_sign_ed25519_sk_to_curve25519` of the key pair for `seed`.
pub fn x25519_sk_from_ed_seed(seed: &[u8; 32]) -> Result<[u8; 32], SealError> {
    init()?;
    let mut pk = [0u8; 32];
    let mut sk = [0u8; 64];
    let mut x = [0u8; 32];
    // SAFETY: pk 32, sk 64, seed 32, x 32 bytes: the sizes libsodium documents.
    let rc = unsafe {
        let a = ffi::crypto_sign_seed_keypair(pk.as_mut_ptr(), sk.as_mut_ptr(), seed.as_ptr());
        let b = ffi::crypto_sign_ed25519_sk_to_curve25519(x.as_mut_ptr(), sk.as_ptr());
        a | b
    };
    sk.fill(0);
    if rc != 0 {
        return Err(SealError::Backend("ed25519 sk to curve25519"));
    }
    Ok(x)
}

/// `crypto_sign_ed25519_pk_to_curve25519` (refuses non-points, small order, torsion).
pub fn x25519_pk_from_ed_pk(pk: &[u8; 32]) -> Result<[u8; 32], SealError> {
    init()?;
    let mut x = [0u8; 32];
    // SAFETY: both buffers are 32 bytes.
    let rc = unsafe { ffi::crypto_sign_ed25519_pk_to_curve25519(x.as_mut_ptr(), pk.as_ptr()) };
    if rc != 0 {
        return Err(SealError::BadPublicKey);
    }
    Ok(x)
}

/// `crypto_scalarmult` (X25519); libsodium refuses an all-zero result.
pub fn x25519(sk: &[u8; 32], pk: &[u8; 32]) -> Result<[u8; 32], SealError> {
    init()?;
    let mut q = [0u8; 32];
    // SAFETY: q, sk and pk are crypto_scalarmult_BYTES / SCALARBYTES (32).
    let rc = unsafe { ffi::crypto_scalarmult(q.as_mut_ptr(), sk.as_ptr(), pk.as_ptr()) };
    if rc != 0 {
        return Err(SealError::BadPublicKey);
    }
    Ok(q)
}
