//! Published vectors and property tests for the tlog module.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use proptest::prelude::*;

use super::checkpoint::*;
use super::client::*;
use super::note::*;
use super::tiles::*;
use super::*;

fn h(s: &str) -> Hash {
    let v = hex::decode(s).expect("test vector hex");
    v.try_into().expect("32-byte test vector")
}

// ---------------------------------------------------------------------------------------
// RFC 6962 / RFC 9162 vectors, copied from transparency-dev/merkle `proof/verify_test.go`
// (https://github.com/transparency-dev/merkle, Apache-2.0), which carries the original
// certificate-transparency test data. Leaf indices in `INCLUSION` are 1-based there; we
// subtract one as that test does.
// ---------------------------------------------------------------------------------------

const LEAVES: [&str; 8] = [
    "",
    "00",
    "10",
    "2021",
    "3031",
    "40414243",
    "5051525354555657",
    "606162636465666768696a6b6c6d6e6f",
];

const ROOTS: [&str; 8] = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];

/// (1-based leaf, size, proof)
const INCLUSION: &[(u64, u64, &[&str])] = &[
    (1, 1, &[]),
    (
        1,
        8,
        &[
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        &[
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        3,
        3,
        &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
    ),
    (
        2,
        5,
        &[
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
];

/// (size1, size2, proof)
const CONSISTENCY: &[(u64, u64, &[&str])] = &[
    (1, 1, &[]),
    (
        1,
        8,
        &[
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        &[
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        &[
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (
        6,
        7,
        &[
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
];

fn vector_tree() -> MemoryTree {
    let mut t = MemoryTree::new();
    for l in LEAVES {
        t.push(&hex::decode(l).expect("hex"));
    }
    t
}

#[test]
fn rfc6962_roots() {
    let mut t = MemoryTree::new();
    assert_eq!(t.root(), EMPTY_ROOT);
    assert_eq!(tree_root(&t, 0), Ok(EMPTY_ROOT));
    for (i, l) in LEAVES.iter().enumerate() {
        t.push(&hex::decode(l).expect("hex"));
        assert_eq!(t.root(), h(ROOTS[i]), "frontier root at size {}", i + 1);
    }
    for (i, r) in ROOTS.iter().enumerate() {
        assert_eq!(
            tree_root(&t, i as u64 + 1),
            Ok(h(r)),
            "stored root {}",
            i + 1
        );
    }
}

#[test]
fn rfc6962_inclusion_vectors() {
    let t = vector_tree();
    for &(leaf, size, proof) in INCLUSION {
        let proof: Vec<Hash> = proof.iter().map(|p| h(p)).collect();
        let index = leaf - 1;
        assert_eq!(prove_inclusion(&t, index, size), Ok(proof.clone()));
        let lh = leaf_hash(&hex::decode(LEAVES[index as usize]).expect("hex"));
        let root = h(ROOTS[size as usize - 1]);
        verify_inclusion(index, size, &lh, &proof, &root).expect("published proof verifies");
        // Corruptions from the same test file must all fail.
        let some = h("abacaba000000000000000000000000000000000000000000060061e00123456");
        let bad: Vec<(u64, u64, Hash, Vec<Hash>, Hash)> = {
            let mut v = vec![
                (index.wrapping_sub(1), size, lh, proof.clone(), root),
                (index + 1, size, lh, proof.clone(), root),
                (index ^ 2, size, lh, proof.clone(), root),
                (index, size * 2, lh, proof.clone(), root),
                (index, size / 2, lh, proof.clone(), root),
                (index, size, leaf_hash(b"WrongLeaf"), proof.clone(), root),
                (index, size, lh, proof.clone(), EMPTY_ROOT),
                (index, size, lh, proof.clone(), some),
                (index, size, lh, [proof.clone(), vec![root]].concat(), root),
                (index, size, lh, [vec![root], proof.clone()].concat(), root),
            ];
            for i in 0..proof.len() {
                let mut p = proof.clone();
                p[i][0] ^= 8;
                v.push((index, size, lh, p, root));
            }
            if !proof.is_empty() {
                v.push((index, size, lh, proof[..proof.len() - 1].to_vec(), root));
            }
            v
        };
        for (i, (idx, sz, l, p, r)) in bad.into_iter().enumerate() {
            assert!(
                verify_inclusion(idx, sz, &l, &p, &r).is_err(),
                "corruption {i} of ({leaf},{size}) verified"
            );
        }
    }
}

#[test]
fn rfc6962_consistency_vectors() {
    let t = vector_tree();
    for &(s1, s2, proof) in CONSISTENCY {
        let proof: Vec<Hash> = proof.iter().map(|p| h(p)).collect();
        assert_eq!(
            prove_consistency(&t, s1, s2),
            Ok(proof.clone()),
            "{s1}->{s2}"
        );
        let (r1, r2) = (h(ROOTS[s1 as usize - 1]), h(ROOTS[s2 as usize - 1]));
        verify_consistency(s1, s2, &r1, &r2, &proof).expect("published proof verifies");
        if proof.is_empty() {
            continue;
        }
        let mut bad = vec![
            (s1 - 1, s2, r1, r2, proof.clone()),
            (s1 + 1, s2, r1, r2, proof.clone()),
            (s1 ^ 2, s2, r1, r2, proof.clone()),
            (s1, s2 * 2, r1, r2, proof.clone()),
            (s1, s2 / 2, r1, r2, proof.clone()),
            (s1, s2, some_hash(), r2, proof.clone()),
            (s1, s2, r1, some_hash(), proof.clone()),
            (s1, s2, r2, r1, proof.clone()),
            (s1, s2, r1, r2, vec![]),
            (s1, s2, r1, r2, [proof.clone(), vec![r1]].concat()),
            (s1, s2, r1, r2, [proof.clone(), vec![r2]].concat()),
            (s1, s2, r1, r2, [vec![r1], proof.clone()].concat()),
            (s1, s2, r1, r2, [vec![r2], proof.clone()].concat()),
            (s1, s2, r1, r2, [vec![proof[0]], proof.clone()].concat()),
            (s1, s2, r1, r2, proof[..proof.len() - 1].to_vec()),
        ];
        for i in 0..proof.len() {
            let mut p = proof.clone();
            p[i][0] ^= 16;
            bad.push((s1, s2, r1, r2, p));
        }
        for (i, (a, b, ra, rb, p)) in bad.into_iter().enumerate() {
            assert!(
                verify_consistency(a, b, &ra, &rb, &p).is_err(),
                "corruption {i} of {s1}->{s2} verified"
            );
        }
    }
    // Trivial cases from the same file.
    let (x, y) = (some_hash(), leaf_hash(b"y"));
    assert!(verify_consistency(0, 0, &x, &x, &[]).is_ok());
    assert!(verify_consistency(0, 1, &x, &y, &[]).is_ok());
    assert!(verify_consistency(1, 1, &y, &y, &[]).is_ok());
    assert!(verify_consistency(1, 0, &x, &y, &[]).is_err());
    assert!(verify_consistency(2, 1, &x, &y, &[]).is_err());
    assert!(verify_consistency(1, 2, &x, &y, &[]).is_err());
    assert!(verify_consistency(1, 1, &x, &y, &[]).is_err());
    assert!(verify_consistency(0, 1, &EMPTY_ROOT, &EMPTY_ROOT, &[EMPTY_ROOT]).is_err());
    assert!(verify_consistency(1, 1, &EMPTY_ROOT, &EMPTY_ROOT, &[EMPTY_ROOT]).is_err());
}

fn some_hash() -> Hash {
    h("abacaba000000000000000000000000000000000000000000060061e00123456")
}

// ---------------------------------------------------------------------------------------
// C2SP signed-note vectors from Go's golang.org/x/mod/sumdb/note `note_test.go` (BSD-3),
// as also carried by cloudflare/azul `signed_note` (docs of `src/lib.rs`).
// ---------------------------------------------------------------------------------------

const PN_SKEY: &str =
    "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
const PN_VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
const PN_TEXT: &str = "If you think cryptography is the answer to your problem,\n\
                       then you don't know what your problem is.\n";
const PN_SIGNED: &str = "If you think cryptography is the answer to your problem,\n\
                         then you don't know what your problem is.\n\
                         \n\
                         — PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";
/// The same text signed additionally by "EnochRoot", whose seed is 32 zero bytes.
const ENOCH_LINE: &str = "— EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n";

fn pn_signer() -> Ed25519Signer {
    let raw = B64
        .decode(PN_SKEY.splitn(5, '+').nth(4).expect("key"))
        .expect("b64");
    assert_eq!(raw[0], ALG_ED25519);
    let seed: [u8; 32] = raw[1..].try_into().expect("seed");
    Ed25519Signer::from_seed("PeterNeumann", &seed).expect("signer")
}

#[test]
fn go_note_vectors() {
    let s = pn_signer();
    assert_eq!(s.verifier_key(), PN_VKEY);
    let mut n = Note::new(PN_TEXT).expect("note");
    n.sign(&s).expect("sign");
    assert_eq!(n.to_text(), PN_SIGNED);

    let enoch = Ed25519Signer::from_seed("EnochRoot", &[0u8; 32]).expect("signer");
    n.sign(&enoch).expect("sign");
    assert_eq!(n.to_text(), format!("{PN_SIGNED}{ENOCH_LINE}"));

    let parsed = Note::parse(PN_SIGNED.as_bytes()).expect("parse");
    assert_eq!(parsed.text, PN_TEXT);
    let v = NoteVerifier::from_key_text(PN_VKEY).expect("vkey");
    v.verify(&parsed).expect("verifies");
    // Unknown signer → Unsigned; tampered text → BadSignature.
    let ev = NoteVerifier::from_key_text(&enoch.verifier_key()).expect("vkey");
    assert!(matches!(ev.verify(&parsed), Err(NoteError::Unsigned(_))));
    let tampered = PN_SIGNED.replacen("cryptography", "cryptographY", 1);
    let t = Note::parse(tampered.as_bytes()).expect("parse");
    assert!(matches!(v.verify(&t), Err(NoteError::BadSignature(_))));
    // Malformed notes.
    for bad in [
        "no newline",
        "text\n",
        "text\n\n",
        "text\n\n— PeterNeumann x08go\n",
        "text\n\n- PeterNeumann x08go/ZJk=\n",
        "te\u{1}xt\n\n— a AAAAAAA=\n",
    ] {
        assert!(Note::parse(bad.as_bytes()).is_err(), "{bad:?} parsed");
    }
    assert!(
        parse_verifier_key("PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW")
            .is_err()
    );
}

fn key(name: &str, b: u8) -> Ed25519Signer {
    Ed25519Signer::from_seed(name, &[b; 32]).expect("signer")
}

#[test]
fn checkpoint_roundtrip_and_cosignature() {
    let log = key("relay.example/log", 1);
    let t = vector_tree();
    let cp = Checkpoint::new("relay.example/log", 8, t.root());
    let body = cp.to_body();
    assert_eq!(
        body,
        format!("relay.example/log\n8\n{}\n", B64.encode(h(ROOTS[7])))
    );
    assert_eq!(Checkpoint::parse_body(&body), Ok(cp.clone()));
    for bad in [
        "o\n08\nAAAA\n",
        "o\n-1\n",
        "\n1\nAAAA\n",
        "o\n1\nAAAA\n",
        "o\n1\n",
    ] {
        assert!(Checkpoint::parse_body(bad).is_err(), "{bad:?}");
    }
    let mut note = cp.sign(&log).expect("sign");
    let lv = NoteVerifier::from_key_text(&log.verifier_key()).expect("vkey");
    let sc = SignedCheckpoint::verify(note.to_text().as_bytes(), &lv, None).expect("verify");
    assert_eq!(sc.checkpoint, cp);

    let w = key("witness.example/w1", 2);
    let cos = cosign(&w, &note.text, 1_700_000_000);
    assert_eq!(cos.sig.len(), 72);
    assert_eq!(&cos.sig[..8], &1_700_000_000u64.to_be_bytes());
    note.add_signature(cos);
    let wv = CosignatureVerifier::from_key_text(&w.cosigner_key()).expect("ckey");
    assert!(w.cosigner_key().contains("+BA") || !w.cosigner_key().is_empty());
    let reparsed = Note::parse(note.to_text().as_bytes()).expect("parse");
    assert_eq!(wv.verify(&reparsed), Some(1_700_000_000));
    // The log signature still verifies with the cosignature present (unknown key ignored).
    SignedCheckpoint::verify(note.to_text().as_bytes(), &lv, None).expect("verify");
    // A cosignature does not verify as a plain note signature or for another body.
    let other = Checkpoint::new("relay.example/log", 7, t.root()).to_body();
    let sig = reparsed.sigs.last().expect("sig");
    assert_eq!(wv.verify_sig(&other, sig), None);
    assert_eq!(w.cosigner_key().split('+').count(), 3);
    assert_ne!(wv.key_id, key_id(w.name(), ALG_ED25519, &w.public_key()));
}

#[test]
fn tile_paths() {
    // Examples from C2SP tlog-tiles and Go's sumdb/tlog tile tests.
    let cases = [
        ("tile/0/000", TileKind::Hash { level: 0 }, 0, 256),
        ("tile/0/001", TileKind::Hash { level: 0 }, 1, 256),
        ("tile/1/x001/234", TileKind::Hash { level: 1 }, 1234, 256),
        (
            "tile/3/x001/x234/067.p/1",
            TileKind::Hash { level: 3 },
            1_234_067,
            1,
        ),
        (
            "tile/entries/x001/x234/067.p/255",
            TileKind::Entries,
            1_234_067,
            255,
        ),
        ("tile/entries/000.p/7", TileKind::Entries, 0, 7),
    ];
    for (p, kind, index, width) in cases {
        let t = Tile { kind, index, width };
        assert_eq!(t.path(), p);
        assert_eq!(Tile::parse(p), Ok(t));
    }
    for bad in [
        "tile/0/0",
        "tile/0/1234",
        "tile/0/x000/001",
        "tile/0/001.p/256",
        "tile/0/001.p/0",
        "tile/8/000",
        "tile/0/001.p/01",
        "tile/x/000",
        "tile/0/x001",
        "tile/entries/x018/x446/x744/x073/x709/x551/x616/000",
        "tiles/0/000",
    ] {
        assert!(Tile::parse(bad).is_err(), "{bad} parsed");
    }
    let b = encode_bundle([&b"ab"[..], &b""[..], &b"xyz"[..]]).expect("bundle");
    assert_eq!(b, b"\x00\x02ab\x00\x00\x00\x03xyz");
    assert_eq!(decode_bundle(&b, 3), Some(vec![&b"ab"[..], b"", b"xyz"]));
    assert_eq!(decode_bundle(&b, 2), None);
    assert_eq!(decode_bundle(b"\x00\x05ab", 9), None);
}

#[test]
fn tile_hashes_match_tree() {
    let mut t = MemoryTree::new();
    for i in 0u32..(256 * 2 + 3) {
        t.push(&i.to_be_bytes());
    }
    // Level-0 tile 1 holds leaf hashes 256..512; its root is subtree (8, 1).
    let hashes: Vec<Hash> = (256..512).map(|i| t.read(0, i).expect("stored")).collect();
    assert_eq!(full_tile_root(&hashes), Some(t.read(8, 1).expect("stored")));
    let tile = Tile {
        kind: TileKind::Hash { level: 0 },
        index: 2,
        width: 3,
    };
    assert!(tile.exists_for(t.size()));
    assert!(!Tile { width: 4, ..tile }.exists_for(t.size()));
    assert!(
        !Tile {
            kind: TileKind::Hash { level: 1 },
            index: 0,
            width: 3
        }
        .exists_for(t.size())
    );
}

// ---------------------------------------------------------------------------------------
// Light client + equivocation
// ---------------------------------------------------------------------------------------

fn cosigned(
    log: &Ed25519Signer,
    ws: &[&Ed25519Signer],
    size: u64,
    root: Hash,
) -> (String, SignedCheckpoint) {
    let cp = Checkpoint::new(log.name(), size, root);
    let mut n = cp.sign(log).expect("sign");
    for w in ws {
        let c = cosign(*w, &n.text, 1_700_000_000 + size);
        n.add_signature(c);
    }
    let lv = NoteVerifier::new(log.name(), log.public_key()).expect("v");
    let text = n.to_text();
    let sc = SignedCheckpoint::verify(text.as_bytes(), &lv, None).expect("verify");
    (text, sc)
}

#[test]
fn light_client_quorum_consistency_and_equivocation() {
    let log = key("relay-a.example/log", 1);
    let (w1, w2, w3) = (key("w1", 11), key("w2", 12), key("w3", 13));
    let lv = NoteVerifier::new(log.name(), log.public_key()).expect("v");
    let ws: Vec<CosignatureVerifier> = [&w1, &w2, &w3]
        .iter()
        .map(|w| CosignatureVerifier::new(w.name(), w.public_key()).expect("w"))
        .collect();
    let mut client = LightClient::new(lv.clone(), None, ws, 2);

    let mut t = MemoryTree::new();
    for i in 0u32..10 {
        t.push(&i.to_be_bytes());
    }
    let (n10, _) = cosigned(&log, &[&w1], 10, t.root());
    assert!(matches!(
        client.update(n10.as_bytes(), &[]),
        Err(ClientError::Quorum { got: 1, need: 2 })
    ));
    let (n10, _) = cosigned(&log, &[&w1, &w3], 10, t.root());
    client
        .update(n10.as_bytes(), &[])
        .expect("first checkpoint");

    // Inclusion of leaf 7.
    let p = prove_inclusion(&t, 7, 10).expect("prove");
    let last = client.last().expect("last").checkpoint.clone();
    LightClient::verify_inclusion(&last, 7, &leaf_hash(&7u32.to_be_bytes()), &p).expect("incl");
    assert!(LightClient::verify_inclusion(&last, 6, &leaf_hash(&7u32.to_be_bytes()), &p).is_err());

    // Growth with a consistency proof.
    let mut t2 = t.clone();
    for i in 10u32..25 {
        t2.push(&i.to_be_bytes());
    }
    let (n25, _) = cosigned(&log, &[&w2, &w3], 25, t2.root());
    assert!(matches!(
        client.update(n25.as_bytes(), &[]),
        Err(ClientError::Inconsistent(_))
    ));
    let cproof = prove_consistency(&t2, 10, 25).expect("cons");
    client.update(n25.as_bytes(), &cproof).expect("grows");
    // Rollback is refused.
    assert!(matches!(
        client.update(n10.as_bytes(), &[]),
        Err(ClientError::Rollback { .. })
    ));

    // A fork at size 25: caught, with a verifiable proof.
    let mut fork = t.clone();
    for i in 10u32..25 {
        fork.push(&(i + 1000).to_be_bytes());
    }
    let (f25, _) = cosigned(&log, &[&w1, &w2], 25, fork.root());
    match client.update(f25.as_bytes(), &[]) {
        Err(ClientError::Equivocation { size: 25, proof }) => {
            let (a, b) = proof.verify(&lv).expect("proof verifies");
            assert_eq!(a.size, b.size);
            assert_ne!(a.root, b.root);
            // A proof does not verify under another key.
            let other = NoteVerifier::new(log.name(), key("x", 9).public_key()).expect("v");
            assert!(proof.verify(&other).is_err());
        }
        other => panic!("expected equivocation, got {other:?}"),
    }
    // A fork at a larger size is inconsistent.
    fork.push(b"more");
    let (f26, _) = cosigned(&log, &[&w1, &w2], 26, fork.root());
    let wrong = prove_consistency(&fork, 25, 26).expect("cons");
    assert!(matches!(
        client.update(f26.as_bytes(), &wrong),
        Err(ClientError::Inconsistent(_))
    ));
    // Restoring state from the persisted note.
    let restored = LightClient::new(lv, None, vec![], 0)
        .with_last(n25.as_bytes())
        .expect("restore");
    assert_eq!(restored.last().expect("last").checkpoint.size, 25);
}

// ---------------------------------------------------------------------------------------
// Property tests
// ---------------------------------------------------------------------------------------

fn tree_of(n: u64, salt: u64) -> MemoryTree {
    let mut t = MemoryTree::new();
    for i in 0..n {
        t.push(&(i ^ salt.rotate_left(17)).to_le_bytes());
    }
    t
}

/// Reference MTH straight from the RFC definition.
fn mth(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => EMPTY_ROOT,
        1 => leaves[0],
        n => {
            let k = split_point(n as u64) as usize;
            node_hash(&mth(&leaves[..k]), &mth(&leaves[k..]))
        }
    }
}

#[test]
fn exhaustive_small_trees() {
    // Inclusion for every leaf and consistency for every pair of sizes up to 64.
    let t = tree_of(64, 7);
    let leaves: Vec<Hash> = (0..64).map(|i| t.read(0, i).expect("leaf")).collect();
    for n in 0..=64u64 {
        let root = tree_root(&t, n).expect("root");
        assert_eq!(root, mth(&leaves[..n as usize]), "root {n}");
        for i in 0..n {
            let p = prove_inclusion(&t, i, n).expect("prove");
            verify_inclusion(i, n, &leaves[i as usize], &p, &root).expect("verify inclusion");
            if n > 1 {
                assert!(verify_inclusion((i + 1) % n, n, &leaves[i as usize], &p, &root).is_err());
            }
        }
        for m in 0..=n {
            let p = prove_consistency(&t, m, n).expect("prove");
            let r_m = tree_root(&t, m).expect("root");
            verify_consistency(m, n, &r_m, &root, &p).expect("verify consistency");
            if m > 0 && m < n {
                assert!(verify_consistency(m, n, &leaves[0], &root, &p).is_err() || m == 1);
                assert!(verify_consistency(m - 1, n, &r_m, &root, &p).is_err());
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn random_trees(n in 1u64..3000, salt in any::<u64>(), a in any::<u64>(), b in any::<u64>()) {
        let t = tree_of(n, salt);
        let i = a % n;
        let size = i + 1 + b % (n - i);
        let root = tree_root(&t, size).unwrap();
        let p = prove_inclusion(&t, i, size).unwrap();
        prop_assert!(p.len() <= 64);
        let lh = t.read(0, i).unwrap();
        prop_assert!(verify_inclusion(i, size, &lh, &p, &root).is_ok());
        let old = b % (size + 1);
        let c = prove_consistency(&t, old, size).unwrap();
        let r_old = tree_root(&t, old).unwrap();
        prop_assert!(verify_consistency(old, size, &r_old, &root, &c).is_ok());
        // Frontier reload gives the same root.
        let f = Frontier::load(&t, size).unwrap();
        prop_assert_eq!(f.root(), root);
    }

    #[test]
    fn garbage_proofs_never_panic(i in any::<u64>(), n in any::<u64>(), m in any::<u64>(),
                                  proof in proptest::collection::vec(any::<[u8; 32]>(), 0..70)) {
        let x = [1u8; 32];
        let _ = verify_inclusion(i, n, &x, &proof, &x);
        let _ = verify_consistency(m, n, &x, &x, &proof);
    }

    #[test]
    fn note_parse_never_panics(s in "\\PC{0,200}") {
        let _ = Note::parse(s.as_bytes());
        let _ = Checkpoint::parse_body(&s);
        let _ = Tile::parse(&s);
        let _ = parse_verifier_key(&s);
    }
}

/// The identity adapter (libsodium natively with `sodium`) signs notes byte-identically to the
/// dalek signer, and its verifier/cosigner keys verify them.
#[test]
fn keypair_signer_matches_ed25519_signer() {
    use super::checkpoint::{Checkpoint, CosignatureVerifier, SignedCheckpoint, cosign};
    use super::note::{Ed25519Signer, KeypairSigner, NoteVerifier};
    use shoal_proto::identity::Keypair;
    let seed = [9u8; 32];
    let name = "relay.example/log";
    let a = KeypairSigner::new(name, Keypair::from_seed(seed).unwrap()).unwrap();
    let b = Ed25519Signer::from_seed(name, &seed).unwrap();
    assert_eq!(a.verifier_key(), b.verifier_key());
    assert_eq!(a.cosigner_key(), b.cosigner_key());
    let cp = Checkpoint::new(name, 3, [1; 32]);
    let na = cp.sign(&a).unwrap().to_text();
    assert_eq!(na, cp.sign(&b).unwrap().to_text());
    let v = NoteVerifier::from_key_text(&a.verifier_key()).unwrap();
    let sc = SignedCheckpoint::verify(na.as_bytes(), &v, None).unwrap();
    let w = CosignatureVerifier::from_key_text(&a.cosigner_key()).unwrap();
    let mut note = sc.note.clone();
    note.add_signature(cosign(&a, &note.text, 77));
    assert_eq!(w.verify(&note), Some(77));
    assert!(KeypairSigner::new("bad name", Keypair::from_seed(seed).unwrap()).is_err());
}

/// A fork signed by the log but cosigned by nobody (honest witnesses refuse it) is still an
/// equivocation for a client that accepted the honest checkpoint with its quorum.
#[test]
fn uncosigned_fork_is_equivocation_not_quorum_failure() {
    let log = Ed25519Signer::from_seed("log.example/log", &[4; 32]).unwrap();
    let w = Ed25519Signer::from_seed("w.example", &[5; 32]).unwrap();
    let lv = NoteVerifier::from_key_text(&log.verifier_key()).unwrap();
    let wv = CosignatureVerifier::from_key_text(&w.cosigner_key()).unwrap();
    let mut honest = Checkpoint::new("log.example/log", 5, [1; 32])
        .sign(&log)
        .unwrap();
    honest.add_signature(cosign(&w, &honest.text, 9));
    let fork = Checkpoint::new("log.example/log", 5, [2; 32])
        .sign(&log)
        .unwrap();
    let mut c = LightClient::new(lv.clone(), None, vec![wv], 1);
    // Without a last checkpoint the fork is just unwitnessed.
    assert!(matches!(
        c.clone().update(fork.to_text().as_bytes(), &[]),
        Err(ClientError::Quorum { got: 0, need: 1 })
    ));
    c.update(honest.to_text().as_bytes(), &[]).unwrap();
    match c.update(fork.to_text().as_bytes(), &[]) {
        Err(ClientError::Equivocation { size: 5, proof }) => {
            proof.verify(&lv).unwrap();
        }
        other => panic!("expected equivocation, got {other:?}"),
    }
}
