//! Circle keys, links, room ids and sealed signaling payloads.

use shoal_mesh::circle::{
    CircleError, CircleKey, MAX_SIGNAL_PLAINTEXT, SIGNAL_SEAL_OVERHEAD, open_signal, room_id,
    seal_signal, signal_key,
};
use shoal_proto::MAX_PAYLOAD_LEN;
use shoal_proto::identity::Keypair;

#[test]
fn link_forms_roundtrip() {
    let k = CircleKey::generate().unwrap();
    let token = k.token();
    assert_eq!(token.len(), 43);
    for text in [
        k.link("https://shoal.example/app/"),
        k.link("https://shoal.example/app/#old=1"),
        format!("https://x.example/#foo=bar&c={token}&z=1"),
        format!("  {}  ", k.uri()),
        token.clone(),
    ] {
        assert_eq!(CircleKey::parse(&text).unwrap(), k, "{text}");
    }
    assert_eq!(
        k.link("https://shoal.example/app/#old=1"),
        format!("https://shoal.example/app/#c={token}")
    );
    assert!(k.uri().starts_with("shoal://circle#c="));
    assert!(
        format!("{k:?}").find(&token).is_none(),
        "Debug leaks the key"
    );
    for bad in [
        "",
        "https://x.example/",
        "https://x.example/#c=",
        "https://x.example/#c=AAAA",
        &format!("https://x.example/#d={token}"),
        &"A".repeat(44),
        &format!("{}!", &token[..42]),
    ] {
        assert!(
            matches!(CircleKey::parse(bad), Err(CircleError::BadLink(_))),
            "{bad}"
        );
    }
}

#[test]
fn derivations_are_distinct_and_deterministic() {
    let k = CircleKey::from_bytes([9; 32]);
    let k2 = CircleKey::from_bytes([10; 32]);
    assert_eq!(room_id(&k), room_id(&k.clone()));
    assert_ne!(room_id(&k), room_id(&k2));
    assert_ne!(room_id(&k).0, signal_key(&k));
    assert_ne!(room_id(&k).0, *k.as_bytes());
    assert_eq!(k.circle().room(), room_id(&k));
}

#[test]
fn seal_open_and_every_rejection() {
    let c = CircleKey::generate().unwrap().circle();
    let (a, b, m) = (
        Keypair::generate().unwrap().peer_id(),
        Keypair::generate().unwrap().peer_id(),
        Keypair::generate().unwrap().peer_id(),
    );
    let sdp = br#"{"type":"offer","sdp":"v=0\r\no=- 1 2 IN IP4 127.0.0.1"}"#;
    let sealed = seal_signal(&c, &a, &b, sdp).unwrap();
    assert_eq!(sealed.len(), sdp.len() + SIGNAL_SEAL_OVERHEAD);
    assert!(!sealed.windows(5).any(|w| w == b"offer"));
    assert_eq!(open_signal(&c, &a, &b, &sealed).unwrap(), sdp);
    // Random nonces: same payload seals differently.
    assert_ne!(seal_signal(&c, &a, &b, sdp).unwrap(), sealed);
    // Wrong circle key.
    let other = CircleKey::generate().unwrap().circle();
    assert!(matches!(
        open_signal(&other, &a, &b, &sealed),
        Err(CircleError::Rejected(_))
    ));
    // Redirected to another recipient, or sender spoofed by the relay.
    assert!(open_signal(&c, &a, &m, &sealed).is_err());
    assert!(open_signal(&c, &m, &b, &sealed).is_err());
    assert!(open_signal(&c, &b, &a, &sealed).is_err());
    // Tampering and truncation anywhere.
    for i in 0..sealed.len() {
        let mut bad = sealed.clone();
        bad[i] ^= 1;
        assert!(open_signal(&c, &a, &b, &bad).is_err(), "flip at {i}");
    }
    for n in 0..sealed.len() {
        assert!(open_signal(&c, &a, &b, &sealed[..n]).is_err(), "cut at {n}");
    }
    // A member with the wrong key cannot inject: its seal does not open for real members.
    let injected = seal_signal(&other, &m, &b, b"{}").unwrap();
    assert!(open_signal(&c, &m, &b, &injected).is_err());
}

#[test]
fn size_limits() {
    let c = CircleKey::from_bytes([1; 32]).circle();
    let a = Keypair::from_seed([1; 32]).unwrap().peer_id();
    let b = Keypair::from_seed([2; 32]).unwrap().peer_id();
    let max = vec![b'x'; MAX_SIGNAL_PLAINTEXT];
    let sealed = seal_signal(&c, &a, &b, &max).unwrap();
    assert_eq!(sealed.len(), MAX_PAYLOAD_LEN);
    assert_eq!(open_signal(&c, &a, &b, &sealed).unwrap(), max);
    assert_eq!(
        seal_signal(&c, &a, &b, &[0; MAX_SIGNAL_PLAINTEXT + 1]),
        Err(CircleError::TooLarge(MAX_SIGNAL_PLAINTEXT + 1))
    );
    assert!(open_signal(&c, &a, &b, &vec![1u8; MAX_PAYLOAD_LEN + 1]).is_err());
}
