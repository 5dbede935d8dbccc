//! Shared test vectors for the sealing constructions (`tests/data/seal_vectors.json`), checked
//! against both primitive sets: RustCrypto (what the browser runs) and — natively with feature
//! `sodium` — libsodium, with cross-decryption in both directions.
//!
//! Regenerate (only when the construction deliberately changes):
//! `SHOAL_WRITE_SEAL_VECTORS=1 cargo test -p shoal-mesh --test seal_vectors`

use serde::{Deserialize, Serialize};
use shoal_mesh::circle::{CircleKey, SIGNAL_SEAL_VERSION};
use shoal_mesh::seal::{self, PairSecret, SealError};
use shoal_proto::identity::Keypair;

type B2 = fn(&[u8; 32], &[&[u8]]) -> [u8; 32];
type Aead = fn(&[u8; 32], &[u8; 24], &[u8], &[u8]) -> Result<Vec<u8>, SealError>;
type Conv = fn(&[u8; 32]) -> Result<[u8; 32], SealError>;
type Dh = fn(&[u8; 32], &[u8; 32]) -> Result<[u8; 32], SealError>;

#[derive(Clone, Copy)]
struct Prims {
    b2: B2,
    seal: Aead,
    open: Aead,
    xsk: Conv,
    xpk: Conv,
    dh: Dh,
}

fn rust() -> Prims {
    use seal::rust as r;
    Prims {
        b2: r::blake2b256_keyed,
        seal: r::aead_seal,
        open: r::aead_open,
        xsk: r::x25519_sk_from_ed_seed,
        xpk: r::x25519_pk_from_ed_pk,
        dh: r::x25519,
    }
}

#[cfg(feature = "sodium")]
fn sodium() -> Prims {
    use seal::sodium as s;
    Prims {
        b2: s::blake2b256_keyed,
        seal: s::aead_seal,
        open: s::aead_open,
        xsk: s::x25519_sk_from_ed_seed,
        xpk: s::x25519_pk_from_ed_pk,
        dh: s::x25519,
    }
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct RecordVector {
    plaintext: String,
    record: String,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Vectors {
    comment: String,
    seed_a: String,
    seed_b: String,
    pk_a: String,
    pk_b: String,
    x25519_sk_a: String,
    x25519_pk_a: String,
    x25519_sk_b: String,
    x25519_pk_b: String,
    shared: String,
    hello_random_a: String,
    hello_random_b: String,
    key_a_to_b: String,
    key_b_to_a: String,
    /// Consecutive single-record messages A → B (counters 0, 1, 2, …).
    records_a_to_b: Vec<RecordVector>,
    circle_key: String,
    circle_token: String,
    room: String,
    signal_key: String,
    signal_nonce: String,
    signal_payload: String,
    /// Sealed from A to B.
    signal_sealed: String,
}

fn h(b: &[u8]) -> String {
    hex::encode(b)
}

fn arr<const N: usize>(s: &str) -> [u8; N] {
    hex::decode(s).unwrap().try_into().unwrap()
}

const SEED_A: [u8; 32] = [0x11; 32];
const SEED_B: [u8; 32] = [0x22; 32];
const R_A: [u8; 32] = [0xa1; 32];
const R_B: [u8; 32] = [0xb2; 32];
const K: [u8; 32] = [0x5c; 32];
const SIGNAL_NONCE: [u8; 24] = [0x07; 24];

fn plaintexts() -> Vec<Vec<u8>> {
    vec![
        Vec::new(),
        b"hello".to_vec(),
        (0..300u32).map(|i| (i * 7 % 256) as u8).collect(),
    ]
}

/// The whole construction written out from the primitives alone.
fn compute(p: Prims) -> Vectors {
    let pk_a = Keypair::from_seed(SEED_A).unwrap().peer_id().0;
    let pk_b = Keypair::from_seed(SEED_B).unwrap().peer_id().0;
    let xsk_a = (p.xsk)(&SEED_A).unwrap();
    let xsk_b = (p.xsk)(&SEED_B).unwrap();
    let xpk_a = (p.xpk)(&pk_a).unwrap();
    let xpk_b = (p.xpk)(&pk_b).unwrap();
    let shared = (p.dh)(&xsk_a, &xpk_b).unwrap();
    assert_eq!(shared, (p.dh)(&xsk_b, &xpk_a).unwrap(), "DH disagrees");
    let ctx: &[u8] = b"shoal/seal/v1/key";
    let k_ab = (p.b2)(&shared, &[ctx, &pk_a, &pk_b, &R_A, &R_B]);
    let k_ba = (p.b2)(&shared, &[ctx, &pk_b, &pk_a, &R_B, &R_A]);
    let records_a_to_b = plaintexts()
        .into_iter()
        .enumerate()
        .map(|(i, pt)| {
            let counter = i as u64;
            let mut nonce = [0u8; 24];
            nonce[..8].copy_from_slice(&counter.to_le_bytes());
            let mut inner = vec![0x01];
            inner.extend_from_slice(&pt);
            let ct = (p.seal)(&k_ab, &nonce, &[1, 2], &inner).unwrap();
            let mut rec = vec![1u8, 2];
            rec.extend_from_slice(&counter.to_le_bytes());
            rec.extend_from_slice(&ct);
            RecordVector {
                plaintext: h(&pt),
                record: h(&rec),
            }
        })
        .collect();
    let room = (p.b2)(&K, &[b"shoal/room"]);
    let signal_key = (p.b2)(&K, &[b"shoal/signal-seal"]);
    let payload = br#"{"type":"offer","sdp":"v=0..."}"#;
    let mut ad = b"shoal/signal/v1".to_vec();
    ad.push(SIGNAL_SEAL_VERSION);
    ad.extend_from_slice(&room);
    ad.extend_from_slice(&pk_a);
    ad.extend_from_slice(&pk_b);
    let mut sealed = vec![SIGNAL_SEAL_VERSION];
    sealed.extend_from_slice(&SIGNAL_NONCE);
    sealed.extend_from_slice(&(p.seal)(&signal_key, &SIGNAL_NONCE, &ad, payload).unwrap());
    Vectors {
        comment:
            "Shoal seal/circle vectors; see node-lite/ARCHITECTURE-circles.md. Hex throughout."
                .into(),
        seed_a: h(&SEED_A),
        seed_b: h(&SEED_B),
        pk_a: h(&pk_a),
        pk_b: h(&pk_b),
        x25519_sk_a: h(&xsk_a),
        x25519_pk_a: h(&xpk_a),
        x25519_sk_b: h(&xsk_b),
        x25519_pk_b: h(&xpk_b),
        shared: h(&shared),
        hello_random_a: h(&R_A),
        hello_random_b: h(&R_B),
        key_a_to_b: h(&k_ab),
        key_b_to_a: h(&k_ba),
        records_a_to_b,
        circle_key: h(&K),
        circle_token: CircleKey::from_bytes(K).token(),
        room: h(&room),
        signal_key: h(&signal_key),
        signal_nonce: h(&SIGNAL_NONCE),
        signal_payload: h(payload),
        signal_sealed: h(&sealed),
    }
}

fn path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/seal_vectors.json")
}

fn file() -> Vectors {
    if std::env::var_os("SHOAL_WRITE_SEAL_VECTORS").is_some() {
        let v = compute(rust());
        std::fs::write(path(), serde_json::to_string_pretty(&v).unwrap() + "\n").unwrap();
    }
    serde_json::from_str(&std::fs::read_to_string(path()).unwrap()).unwrap()
}

#[test]
fn rustcrypto_matches_vector_file() {
    assert_eq!(compute(rust()), file());
}

#[cfg(feature = "sodium")]
#[test]
fn libsodium_matches_vector_file() {
    assert_eq!(compute(sodium()), file());
}

/// Every record and the signaling seal in the file opens under both backends.
#[test]
fn vector_ciphertexts_open_under_every_backend() {
    let v = file();
    let mut all = vec![rust()];
    #[cfg(feature = "sodium")]
    all.push(sodium());
    for p in all {
        let k_ab: [u8; 32] = arr(&v.key_a_to_b);
        for (i, r) in v.records_a_to_b.iter().enumerate() {
            let rec = hex::decode(&r.record).unwrap();
            let mut nonce = [0u8; 24];
            nonce[..8].copy_from_slice(&(i as u64).to_le_bytes());
            let pt = (p.open)(&k_ab, &nonce, &[1, 2], &rec[10..]).unwrap();
            assert_eq!(h(&pt[1..]), r.plaintext);
        }
    }
}

/// The library's own `Channel` and `Circle` produce exactly the file's bytes and open them.
#[test]
fn channel_and_circle_produce_vector_bytes() {
    let v = file();
    let a = Keypair::from_seed(SEED_A).unwrap();
    let b = Keypair::from_seed(SEED_B).unwrap();
    let sa = PairSecret::new(&a, &b.peer_id()).unwrap();
    let sb = PairSecret::new(&b, &a.peer_id()).unwrap();
    let (ha, hello_a) = sa.handshake_with_random(R_A);
    let (hb, hello_b) = sb.handshake_with_random(R_B);
    let mut ca = ha.finish(&hello_b).unwrap();
    let mut cb = hb.finish(&hello_a).unwrap();
    for r in &v.records_a_to_b {
        let pt = hex::decode(&r.plaintext).unwrap();
        let recs = ca.seal_message(&pt).unwrap();
        assert_eq!(recs.len(), 1);
        assert_eq!(h(&recs[0]), r.record);
        assert_eq!(cb.open_record(&recs[0]).unwrap(), Some(pt));
    }
    let circle = CircleKey::from_bytes(K).circle();
    assert_eq!(h(&circle.room().0), v.room);
    assert_eq!(CircleKey::parse(&v.circle_token).unwrap().as_bytes(), &K);
    let payload = hex::decode(&v.signal_payload).unwrap();
    let sealed = circle
        .seal_signal_with_nonce(&a.peer_id(), &b.peer_id(), &payload, &SIGNAL_NONCE)
        .unwrap();
    assert_eq!(h(&sealed), v.signal_sealed);
    assert_eq!(
        circle
            .open_signal(&a.peer_id(), &b.peer_id(), &sealed)
            .unwrap(),
        payload
    );
}

/// Random inputs: libsodium and RustCrypto give identical bytes and open each other's output.
#[cfg(feature = "sodium")]
#[test]
fn libsodium_and_rustcrypto_identical_on_random_inputs() {
    let (r, s) = (rust(), sodium());
    let rnd = |n: usize| {
        let mut v = vec![0u8; n];
        shoal_proto::identity::random_bytes(&mut v).unwrap();
        v
    };
    for i in 0..200usize {
        let key: [u8; 32] = rnd(32).try_into().unwrap();
        let nonce: [u8; 24] = rnd(24).try_into().unwrap();
        let ad = rnd(i % 70);
        let pt = rnd(i * 13 % 2000);
        let cr = (r.seal)(&key, &nonce, &ad, &pt).unwrap();
        let cs = (s.seal)(&key, &nonce, &ad, &pt).unwrap();
        assert_eq!(cr, cs);
        assert_eq!((s.open)(&key, &nonce, &ad, &cr).unwrap(), pt);
        assert_eq!((r.open)(&key, &nonce, &ad, &cs).unwrap(), pt);
        let mut bad = cs.clone();
        let at = i % bad.len();
        bad[at] ^= 0x80;
        assert_eq!((r.open)(&key, &nonce, &ad, &bad), Err(SealError::Forged));
        assert_eq!((s.open)(&key, &nonce, &ad, &bad), Err(SealError::Forged));
        assert_eq!((r.b2)(&key, &[&ad, &pt]), (s.b2)(&key, &[&ad, &pt]));
        let seed: [u8; 32] = rnd(32).try_into().unwrap();
        let pk = Keypair::from_seed(seed).unwrap().peer_id().0;
        assert_eq!((r.xsk)(&seed).unwrap(), (s.xsk)(&seed).unwrap());
        assert_eq!((r.xpk)(&pk).unwrap(), (s.xpk)(&pk).unwrap());
        let other: [u8; 32] = rnd(32).try_into().unwrap();
        let xpk = (s.xpk)(&pk).unwrap();
        assert_eq!((r.dh)(&other, &xpk).unwrap(), (s.dh)(&other, &xpk).unwrap());
        // Random 32-byte strings: both refuse or both accept the same ones, with the same result.
        let junk: [u8; 32] = rnd(32).try_into().unwrap();
        assert_eq!((r.xpk)(&junk), (s.xpk)(&junk), "{}", h(&junk));
    }
    // Small-order Montgomery points give an all-zero DH: both refuse.
    let zero = [0u8; 32];
    let mut one = [0u8; 32];
    one[0] = 1;
    for p in [zero, one] {
        assert!((r.dh)(&[9u8; 32], &p).is_err());
        assert!((s.dh)(&[9u8; 32], &p).is_err());
    }
}
