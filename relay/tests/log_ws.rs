//! Receipt submission and checkpoints over the WebSocket (anchoring frames `0x40..=0x44`),
//! with the same checks as HTTP, on a relay that mounts the log at `/log`.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_bytes::ByteBuf;
use shoal_proto::{self as proto, ErrorCode, Frame, GetCheckpoint, SubmitReceipts};
use shoal_relay::Limits;
use shoal_tlog::checkpoint::SignedCheckpoint;
use shoal_tlog::leaf_hash;
use shoal_tlog::note::NoteVerifier;

/// Next anchoring answer (skipping pings and the like).
async fn answer(c: &mut Raw) -> Frame {
    loop {
        match c.frame().await {
            f @ (Frame::Promises(_) | Frame::AnchorError(_) | Frame::CheckpointNote(_)) => {
                return f;
            }
            Frame::Error(e) => panic!("error frame {e:?}"),
            _ => continue,
        }
    }
}

#[tokio::test]
async fn submit_and_checkpoint_over_websocket() {
    let relay = start(Limits {
        max_frame_bytes: 16 * 1024,
        ..Limits::default()
    })
    .await;
    let log = relay.relay.state.log.clone().expect("log mounted");
    let origin = log.log.origin().to_owned();
    let vk = NoteVerifier::new(&origin, relay.relay.state.relay_key.peer_id().0).expect("key");
    let mut c = Raw::connect_auth(&relay.url()).await;

    // Good batch → promises in order, after the durable commit.
    let rs = [receipt(1), receipt(2)];
    c.send(&Frame::SubmitReceipts(SubmitReceipts {
        id: 11,
        receipts: rs.iter().cloned().map(ByteBuf::from).collect(),
    }))
    .await;
    let Frame::Promises(p) = answer(&mut c).await else {
        panic!("expected promises")
    };
    assert_eq!(p.id, 11);
    assert_eq!(p.origin, origin);
    assert_eq!(p.promises.len(), 2);
    for (i, pr) in p.promises.iter().enumerate() {
        assert_eq!(pr.index, i as u64);
        assert_eq!(pr.leaf_hash, leaf_hash(&rs[i]));
    }
    // Resubmission is idempotent.
    c.send(&Frame::SubmitReceipts(SubmitReceipts {
        id: 12,
        receipts: vec![ByteBuf::from(rs[1].clone())],
    }))
    .await;
    let Frame::Promises(p) = answer(&mut c).await else {
        panic!("expected promises")
    };
    assert_eq!((p.id, p.promises[0].index), (12, 1));

    // Tampered receipt → Malformed naming it; the session stays.
    let mut bad = receipt(3);
    let n = bad.len();
    bad[n - 10] ^= 1;
    c.send(&Frame::SubmitReceipts(SubmitReceipts {
        id: 13,
        receipts: vec![ByteBuf::from(receipt(4)), ByteBuf::from(bad)],
    }))
    .await;
    let Frame::AnchorError(e) = answer(&mut c).await else {
        panic!("expected an anchor error")
    };
    assert_eq!((e.id, e.code), (13, ErrorCode::Malformed));
    assert!(e.detail.contains("receipt 1"), "{}", e.detail);
    // Empty batch, oversize receipt → Malformed.
    c.send(&Frame::SubmitReceipts(SubmitReceipts {
        id: 14,
        receipts: vec![],
    }))
    .await;
    let Frame::AnchorError(e) = answer(&mut c).await else {
        panic!("expected an anchor error")
    };
    assert_eq!((e.id, e.code), (14, ErrorCode::Malformed));
    c.send(&Frame::SubmitReceipts(SubmitReceipts {
        id: 15,
        receipts: vec![ByteBuf::from(vec![1u8; 600])],
    }))
    .await;
    let Frame::AnchorError(e) = answer(&mut c).await else {
        panic!("expected an anchor error")
    };
    assert_eq!((e.id, e.code), (15, ErrorCode::Malformed));
    // A batch above the relay's frame limit never reaches the log: TooLarge, session stays.
    let big = SubmitReceipts {
        id: 16,
        receipts: (0..60).map(|i| ByteBuf::from(receipt(100 + i))).collect(),
    };
    let mut bytes = vec![proto::PROTOCOL_VERSION, proto::tag::SUBMIT_RECEIPTS];
    bytes.extend(postcard::to_allocvec(&big).expect("encode"));
    assert!(bytes.len() > 16 * 1024 && bytes.len() < proto::MAX_FRAME_LEN);
    c.send_bytes(bytes).await;
    assert_eq!(c.error().await, ErrorCode::TooLarge);

    // Checkpoint over the WebSocket = the one served over HTTP; it covers the receipts.
    let t0 = Instant::now();
    let note = loop {
        c.send(&Frame::GetCheckpoint(GetCheckpoint { id: 21 }))
            .await;
        if let Frame::CheckpointNote(n) = answer(&mut c).await {
            assert_eq!(n.id, 21);
            let sc = SignedCheckpoint::verify(n.note.as_bytes(), &vk, None).expect("verifies");
            if sc.checkpoint.size >= 2 {
                break n.note;
            }
        }
        assert!(t0.elapsed() < T, "no checkpoint covering the receipts");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let http = http_get(relay.relay.addr, "/log/checkpoint").await;
    assert!(
        http.contains(&note),
        "HTTP and WebSocket serve the same checkpoint"
    );
    // And the HTTP side has the same entries.
    let proof = http_get(
        relay.relay.addr,
        &format!(
            "/log/proof/inclusion?leaf_hash={}",
            hex::encode(leaf_hash(&rs[0]))
        ),
    )
    .await;
    assert!(proof.starts_with("HTTP/1.1 200"), "{proof}");
}

/// The node-lite signaling client speaks the anchoring frames too.
#[tokio::test]
async fn signal_client_submits_receipts_and_gets_the_checkpoint() {
    use futures_util::StreamExt as _;
    use node_lite::signal::{ClientConfig, Command, Event, spawn};
    use shoal_proto::identity::Keypair;

    let relay = start(Limits::default()).await;
    let log = relay.relay.state.log.clone().expect("log mounted");
    let vk =
        NoteVerifier::new(log.log.origin(), relay.relay.state.relay_key.peer_id().0).expect("key");
    let (mut h, mut rx) = spawn(ClientConfig::new(
        vec![relay.url()],
        Keypair::generate().expect("key"),
    ))
    .expect("client");
    let mut next = async || {
        tokio::time::timeout(T, rx.next())
            .await
            .expect("timed out")
            .expect("client stopped")
    };
    while !matches!(next().await, Event::Connected { .. }) {}
    let r = receipt(42);
    h.command(Command::SubmitReceipts {
        id: 5,
        receipts: vec![r.clone()],
    })
    .await
    .expect("command");
    loop {
        match next().await {
            Event::Promises {
                id,
                origin,
                promises,
            } => {
                assert_eq!((id, origin.as_str()), (5, log.log.origin()));
                assert_eq!(promises[0].leaf_hash, leaf_hash(&r));
                break;
            }
            Event::AnchorError { detail, .. } => panic!("refused: {detail}"),
            _ => {}
        }
    }
    let t0 = Instant::now();
    loop {
        h.command(Command::GetCheckpoint { id: 6 })
            .await
            .expect("command");
        let note = loop {
            if let Event::Checkpoint { id: 6, note } = next().await {
                break note;
            }
        };
        let sc = SignedCheckpoint::verify(note.as_bytes(), &vk, None).expect("verifies");
        if sc.checkpoint.size >= 1 {
            break;
        }
        assert!(t0.elapsed() < T, "no checkpoint covering the receipt");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
