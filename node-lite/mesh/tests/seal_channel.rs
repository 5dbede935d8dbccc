//! Sealed channel behaviour: handshake, chunking, replay / reorder / truncation / forgery.

use shoal_mesh::seal::{
    Channel, MAX_CHUNK_LEN, MAX_RECORD_LEN, PairSecret, SealError, x25519_public, x25519_secret,
};
use shoal_proto::identity::Keypair;

fn kp(i: u8) -> Keypair {
    Keypair::from_seed([i; 32]).unwrap()
}

fn pair(a: &Keypair, b: &Keypair) -> (Channel, Channel) {
    let sa = PairSecret::new(a, &b.peer_id()).unwrap();
    let sb = PairSecret::new(b, &a.peer_id()).unwrap();
    let (ha, hello_a) = sa.handshake().unwrap();
    let (hb, hello_b) = sb.handshake().unwrap();
    (ha.finish(&hello_b).unwrap(), hb.finish(&hello_a).unwrap())
}

fn deliver(ch: &mut Channel, records: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for r in records {
        if let Some(m) = ch.open_record(r).unwrap() {
            out.push(m);
        }
    }
    out
}

#[test]
fn roundtrip_both_directions_and_sizes() {
    let (a, b) = (kp(1), kp(2));
    let (mut ca, mut cb) = pair(&a, &b);
    for len in [
        0usize,
        1,
        100,
        MAX_CHUNK_LEN - 1,
        MAX_CHUNK_LEN,
        MAX_CHUNK_LEN + 1,
        3 * MAX_CHUNK_LEN + 17,
        1 << 20,
    ] {
        let msg: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
        let recs = ca.seal_message(&msg).unwrap();
        assert_eq!(recs.len(), len.div_ceil(MAX_CHUNK_LEN).max(1));
        assert!(recs.iter().all(|r| r.len() <= MAX_RECORD_LEN));
        assert_eq!(deliver(&mut cb, &recs), vec![msg.clone()]);
        let back = cb.seal_message(&msg).unwrap();
        assert_eq!(deliver(&mut ca, &back), vec![msg]);
    }
    ca.finish().unwrap();
    cb.finish().unwrap();
}

#[test]
fn ciphertext_hides_plaintext_and_sessions_differ() {
    let (a, b) = (kp(1), kp(2));
    let (mut c1, _) = pair(&a, &b);
    let (mut c2, _) = pair(&a, &b);
    let msg = b"the quick brown fox jumps over the lazy dog".repeat(4);
    let r1 = c1.seal_message(&msg).unwrap();
    let r2 = c2.seal_message(&msg).unwrap();
    assert_ne!(r1, r2, "fresh hello randomness must give fresh keys");
    assert!(!r1[0].windows(9).any(|w| w == b"quick bro"));
}

#[test]
fn replay_reorder_forgery_truncation_rejected() {
    let (a, b) = (kp(3), kp(4));
    let (mut ca, mut cb) = pair(&a, &b);
    let r0 = ca.seal_message(b"zero").unwrap().remove(0);
    let r1 = ca.seal_message(b"one").unwrap().remove(0);
    let r2 = ca.seal_message(b"two").unwrap().remove(0);
    // Reordered: r1 before r0.
    assert_eq!(
        cb.open_record(&r1),
        Err(SealError::OutOfOrder {
            got: 1,
            expected: 0
        })
    );
    assert_eq!(cb.open_record(&r0).unwrap(), Some(b"zero".to_vec()));
    // Replayed.
    assert_eq!(
        cb.open_record(&r0),
        Err(SealError::Replayed {
            got: 0,
            expected: 1
        })
    );
    // Every single-bit flip of r1 is refused, and leaves the channel usable.
    for i in 0..r1.len() {
        let mut bad = r1.clone();
        bad[i] ^= 0x04;
        assert!(cb.open_record(&bad).is_err(), "flip at {i} accepted");
    }
    // Truncations of r1 are refused.
    for n in 0..r1.len() {
        assert!(
            cb.open_record(&r1[..n]).is_err(),
            "truncation to {n} accepted"
        );
    }
    assert_eq!(cb.open_record(&r1).unwrap(), Some(b"one".to_vec()));
    assert_eq!(cb.open_record(&r2).unwrap(), Some(b"two".to_vec()));
    // A record sealed A→B is not valid B→A (direction keys differ): reflection fails.
    let (mut ca, _) = pair(&a, &b);
    let reflected = ca.seal_message(b"three").unwrap().remove(0);
    assert_eq!(ca.open_record(&reflected), Err(SealError::Forged));
}

#[test]
fn truncated_chunked_message_never_delivered() {
    let (a, b) = (kp(5), kp(6));
    let (mut ca, mut cb) = pair(&a, &b);
    let msg = vec![7u8; 2 * MAX_CHUNK_LEN + 5];
    let recs = ca.seal_message(&msg).unwrap();
    assert_eq!(recs.len(), 3);
    assert_eq!(cb.open_record(&recs[0]).unwrap(), None);
    assert_eq!(cb.open_record(&recs[1]).unwrap(), None);
    // Transport closes before the final chunk.
    assert_eq!(
        cb.finish(),
        Err(SealError::TruncatedMessage(2 * MAX_CHUNK_LEN))
    );
    // Skipping the middle chunk is refused.
    let (mut ca, mut cb) = pair(&a, &b);
    let recs = ca.seal_message(&msg).unwrap();
    cb.open_record(&recs[0]).unwrap();
    assert!(matches!(
        cb.open_record(&recs[2]),
        Err(SealError::OutOfOrder { .. })
    ));
}

#[test]
fn reassembly_is_bounded() {
    let (a, b) = (kp(7), kp(8));
    let (ca, cb) = pair(&a, &b);
    let mut ca = ca.with_max_message_len(1 << 20);
    let mut cb = cb.with_max_message_len(100_000);
    let recs = ca.seal_message(&vec![1u8; 200_000]).unwrap();
    assert_eq!(cb.open_record(&recs[0]).unwrap(), None);
    assert!(matches!(
        cb.open_record(&recs[1]),
        Err(SealError::MessageTooLarge { .. })
    ));
    assert_eq!(cb.open_record(&recs[2]), Err(SealError::Poisoned));
    // And the sender refuses over its own limit.
    assert!(matches!(
        ca.seal_message(&vec![0u8; (1 << 20) + 1]),
        Err(SealError::MessageTooLarge { .. })
    ));
}

#[test]
fn wrong_identity_cannot_open() {
    let (a, b, m) = (kp(9), kp(10), kp(11));
    // A thinks it talks to B; M (not B) answers the handshake claiming to be B.
    let sa = PairSecret::new(&a, &b.peer_id()).unwrap();
    let sm = PairSecret::new(&m, &a.peer_id()).unwrap();
    let (ha, hello_a) = sa.handshake().unwrap();
    let (hm, hello_m) = sm.handshake().unwrap();
    let mut ca = ha.finish(&hello_m).unwrap();
    let mut cm = hm.finish(&hello_a).unwrap();
    let r = ca.seal_message(b"secret").unwrap().remove(0);
    assert_eq!(cm.open_record(&r), Err(SealError::Forged));
    let r = cm.seal_message(b"forged").unwrap().remove(0);
    assert_eq!(ca.open_record(&r), Err(SealError::Forged));
}

#[test]
fn bad_hello_and_versions() {
    let (a, b) = (kp(12), kp(13));
    let sa = PairSecret::new(&a, &b.peer_id()).unwrap();
    let (h, mut hello) = sa.handshake().unwrap();
    hello[0] = 9;
    assert_eq!(
        h.finish(&hello).unwrap_err(),
        SealError::UnsupportedVersion { got: 9 }
    );
    let (h, hello) = sa.handshake().unwrap();
    assert_eq!(
        h.finish(&hello[..10]).unwrap_err(),
        SealError::Truncated(10)
    );
    let (mut ca, mut cb) = pair(&a, &b);
    let mut r = ca.seal_message(b"v").unwrap().remove(0);
    r[0] = 2;
    assert_eq!(
        cb.open_record(&r),
        Err(SealError::UnsupportedVersion { got: 2 })
    );
    let (h, hello) = sa.handshake().unwrap();
    let _ = h;
    assert_eq!(cb.open_record(&hello), Err(SealError::UnexpectedKind(0x01)));
}

#[test]
fn small_order_and_invalid_keys_refused() {
    let a = kp(14);
    // The identity point (small order) and a non-point.
    let mut ident = [0u8; 32];
    ident[0] = 1;
    let bad = shoal_proto::identity::PeerId(ident);
    assert_eq!(x25519_public(&bad), Err(SealError::BadPublicKey));
    assert!(PairSecret::new(&a, &bad).is_err());
    let not_point = shoal_proto::identity::PeerId([0xff; 32]);
    assert!(x25519_public(&not_point).is_err());
    assert!(x25519_secret(&a).is_ok());
}
