//! End-to-end signaling over real sockets on 127.0.0.1.

mod common;

use std::time::Duration;

use common::*;
use futures_util::StreamExt as _;
use node_lite::signal::{ClientConfig, Command, Event, spawn};
use shoal_proto::identity::Keypair;
use shoal_proto::{self as proto, Auth, ErrorCode, Frame, Hello};
use shoal_relay::Limits;

fn client_config(urls: Vec<String>) -> ClientConfig {
    let mut c = ClientConfig::new(urls, Keypair::generate().unwrap());
    c.backoff_initial = Duration::from_millis(50);
    c.backoff_max = Duration::from_millis(500);
    c
}

async fn next_event(rx: &mut futures_channel::mpsc::Receiver<Event>) -> Event {
    tokio::time::timeout(T, rx.next())
        .await
        .expect("timed out waiting for an event")
        .expect("client stopped")
}

/// Wait for an event matching `pred`, skipping others.
async fn wait_for(
    rx: &mut futures_channel::mpsc::Receiver<Event>,
    pred: impl Fn(&Event) -> bool,
) -> Event {
    loop {
        let e = next_event(rx).await;
        if pred(&e) {
            return e;
        }
    }
}

#[tokio::test]
async fn two_clients_meet_and_a_third_sees_nothing() {
    let relay = start(Limits::default()).await;
    let (ca, cb, cc) = (
        client_config(vec![relay.url()]),
        client_config(vec![relay.url()]),
        client_config(vec![relay.url()]),
    );
    let (a_id, b_id) = (ca.keypair.peer_id(), cb.keypair.peer_id());
    let (mut a, mut a_rx) = spawn(ca).unwrap();
    let (mut b, mut b_rx) = spawn(cb).unwrap();
    let (mut c, mut c_rx) = spawn(cc).unwrap();
    let r = room(1);
    let other = room(2);
    a.command(Command::Join(r)).await.unwrap();
    c.command(Command::Join(other)).await.unwrap();
    wait_for(
        &mut a_rx,
        |e| matches!(e, Event::Members { room, .. } if *room == r),
    )
    .await;
    b.command(Command::Join(r)).await.unwrap();
    let Event::Members { members, .. } =
        wait_for(&mut b_rx, |e| matches!(e, Event::Members { .. })).await
    else {
        unreachable!()
    };
    assert!(members.contains(&a_id) && members.contains(&b_id));
    wait_for(
        &mut a_rx,
        |e| matches!(e, Event::MemberJoined { peer, .. } if *peer == b_id),
    )
    .await;

    a.command(Command::Send {
        room: r,
        to: b_id,
        payload: b"offer-sdp".to_vec(),
    })
    .await
    .unwrap();
    let Event::Message {
        from,
        payload,
        room: got_room,
    } = wait_for(&mut b_rx, |e| matches!(e, Event::Message { .. })).await
    else {
        unreachable!()
    };
    assert_eq!(
        (from, payload.as_slice(), got_room),
        (a_id, &b"offer-sdp"[..], r)
    );
    b.command(Command::Send {
        room: r,
        to: a_id,
        payload: b"answer-sdp".to_vec(),
    })
    .await
    .unwrap();
    let Event::Message { from, payload, .. } =
        wait_for(&mut a_rx, |e| matches!(e, Event::Message { .. })).await
    else {
        unreachable!()
    };
    assert_eq!((from, payload.as_slice()), (b_id, &b"answer-sdp"[..]));

    // C (room 2) asks for its own members as a barrier, then must have seen nothing of room 1.
    c.command(Command::ListMembers(other)).await.unwrap();
    let mut lists = 0;
    while lists < 2 {
        match next_event(&mut c_rx).await {
            Event::Connected { .. } => {}
            Event::Members { room, members } => {
                assert_eq!(room, other);
                assert_eq!(members.len(), 1);
                lists += 1;
            }
            e => panic!("third client saw {e:?}"),
        }
    }
    // A member leaving is announced.
    drop(b);
    drop(b_rx);
    wait_for(
        &mut a_rx,
        |e| matches!(e, Event::MemberLeft { peer, .. } if *peer == b_id),
    )
    .await;
    relay.relay.shutdown().await;
}

#[tokio::test]
async fn wrong_signature_is_refused() {
    let relay = start(Limits::default()).await;
    // Signature by a different key than the one in Hello.
    let mut c = Raw::connect(&relay.url()).await;
    let peer = c.peer();
    c.send(&Frame::Hello(Hello {
        peer,
        client_nonce: [1; 32],
    }))
    .await;
    let Frame::Challenge(ch) = c.frame().await else {
        panic!()
    };
    let impostor = Keypair::generate().unwrap();
    let sig = impostor.sign(&proto::auth_message(&ch.relay, &ch.nonce, &peer));
    c.send(&Frame::Auth(Auth { sig })).await;
    assert_eq!(c.error().await, ErrorCode::AuthFailed);
    c.closed().await;
    // Right key, wrong message (no domain separation context).
    let mut c = Raw::connect(&relay.url()).await;
    let peer = c.peer();
    c.send(&Frame::Hello(Hello {
        peer,
        client_nonce: [1; 32],
    }))
    .await;
    let Frame::Challenge(ch) = c.frame().await else {
        panic!()
    };
    let sig = c.kp.sign(&ch.nonce);
    c.send(&Frame::Auth(Auth { sig })).await;
    assert_eq!(c.error().await, ErrorCode::AuthFailed);
    c.closed().await;
    // Anything but Hello first.
    let mut c = Raw::connect(&relay.url()).await;
    c.send(&Frame::Join(proto::RoomRef { room: room(1) })).await;
    assert_eq!(c.error().await, ErrorCode::Unexpected);
    c.closed().await;
    relay.relay.shutdown().await;
}

#[tokio::test]
async fn relay_restart_clients_reconnect_and_rejoin() {
    let first = start(Limits::default()).await;
    let addr = first.relay.addr;
    let url = first.url();
    let (ca, cb) = (
        client_config(vec![url.clone()]),
        client_config(vec![url.clone()]),
    );
    let (a_id, b_id) = (ca.keypair.peer_id(), cb.keypair.peer_id());
    let (mut a, mut a_rx) = spawn(ca).unwrap();
    let (mut b, mut b_rx) = spawn(cb).unwrap();
    let r = room(3);
    a.command(Command::Join(r)).await.unwrap();
    b.command(Command::Join(r)).await.unwrap();
    wait_for(&mut a_rx, |e| {
        matches!(e, Event::Members { members, .. } if members.len() == 2)
            || matches!(e, Event::MemberJoined { .. })
    })
    .await;

    // Restart on the same port with the same data dir (same relay key).
    let TestRelay { relay, dir } = first;
    let key_before = relay.state.relay_key.peer_id();
    relay.shutdown().await;
    wait_for(&mut a_rx, |e| matches!(e, Event::Disconnected { .. })).await;
    wait_for(&mut b_rx, |e| matches!(e, Event::Disconnected { .. })).await;
    let second = start_at(addr, Limits::default(), Some(dir)).await;
    assert_eq!(
        second.relay.state.relay_key.peer_id(),
        key_before,
        "relay key must persist"
    );

    let Event::Connected { relay: rk, .. } =
        wait_for(&mut a_rx, |e| matches!(e, Event::Connected { .. })).await
    else {
        unreachable!()
    };
    assert_eq!(rk, key_before);
    wait_for(&mut b_rx, |e| matches!(e, Event::Connected { .. })).await;
    // Both rejoined on their own: A eventually sees B in the room.
    wait_for(&mut a_rx, |e| match e {
        Event::Members { room, members } => *room == r && members.contains(&b_id),
        Event::MemberJoined { room, peer } => *room == r && *peer == b_id,
        _ => false,
    })
    .await;
    wait_for(&mut b_rx, |e| match e {
        Event::Members { room, members } => *room == r && members.contains(&a_id),
        Event::MemberJoined { room, peer } => *room == r && *peer == a_id,
        _ => false,
    })
    .await;
    a.command(Command::Send {
        room: r,
        to: b_id,
        payload: b"after restart".to_vec(),
    })
    .await
    .unwrap();
    wait_for(
        &mut b_rx,
        |e| matches!(e, Event::Message { payload, .. } if payload == b"after restart"),
    )
    .await;
    second.relay.shutdown().await;
}

#[tokio::test]
async fn failover_to_the_next_relay() {
    // A port with nothing listening (bound then dropped), then a live relay.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let live = start(Limits::default()).await;
    let cfg = client_config(vec![format!("ws://{dead}/v1/signal"), live.url()]);
    let (_h, mut rx) = spawn(cfg).unwrap();
    let Event::Connected { url, .. } =
        wait_for(&mut rx, |e| matches!(e, Event::Connected { .. })).await
    else {
        unreachable!()
    };
    assert_eq!(url, live.url());
    live.relay.shutdown().await;
}

#[tokio::test]
async fn unknown_version_and_garbage_get_clear_errors_then_close() {
    let relay = start(Limits {
        max_violations: 3,
        ..Limits::default()
    })
    .await;
    let mut c = Raw::connect_auth(&relay.url()).await;
    // Reserved (anchoring) tag: clear error, session stays.
    c.send_bytes(vec![proto::PROTOCOL_VERSION, 0x50]).await;
    assert_eq!(c.error().await, ErrorCode::Unsupported);
    // Garbage: Malformed, repeated: TooManyErrors and a close.
    for _ in 0..3 {
        c.send_bytes(vec![proto::PROTOCOL_VERSION, 0x10, 0xFF])
            .await;
    }
    assert_eq!(c.error().await, ErrorCode::Malformed);
    assert_eq!(c.error().await, ErrorCode::Malformed);
    assert_eq!(c.error().await, ErrorCode::TooManyErrors);
    c.closed().await;
    // Unknown version: fatal at once.
    let mut c = Raw::connect_auth(&relay.url()).await;
    c.send_bytes(vec![9, 0x30, 0]).await;
    assert_eq!(c.error().await, ErrorCode::UnsupportedVersion);
    c.closed().await;
    relay.relay.shutdown().await;
}

#[tokio::test]
async fn healthz_metrics_and_graceful_shutdown() {
    let relay = start(Limits::default()).await;
    let mut a = Raw::connect_auth(&relay.url()).await;
    let mut b = Raw::connect_auth(&relay.url()).await;
    a.join(room(7)).await;
    b.join(room(7)).await;
    a.send_to(room(7), b.peer(), vec![1, 2, 3]).await;
    loop {
        if let Frame::Deliver(d) = b.frame().await {
            assert_eq!(d.payload, vec![1, 2, 3]);
            break;
        }
    }
    let h = http_get(relay.relay.addr, "/healthz").await;
    assert!(h.starts_with("HTTP/1.1 200"), "{h}");
    assert!(
        h.contains("default-src 'self'"),
        "CSP on every response: {h}"
    );
    let m = http_get(relay.relay.addr, "/metrics").await;
    for name in [
        "shoal_relay_sessions 2",
        "shoal_relay_rooms 1",
        "shoal_relay_frames_in_total{kind=\"send\"} 1",
        "shoal_relay_frames_out_total",
        "shoal_relay_forward_latency_seconds_count 1",
    ] {
        assert!(m.contains(name), "missing {name} in:\n{m}");
    }
    let addr = relay.relay.addr;
    let shut = tokio::spawn(relay.relay.shutdown());
    assert_eq!(a.error().await, ErrorCode::ShuttingDown);
    assert_eq!(b.error().await, ErrorCode::ShuttingDown);
    a.closed().await;
    tokio::time::timeout(T, shut).await.unwrap().unwrap();
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "listener closed"
    );
}

#[tokio::test]
async fn serves_the_app_with_mime_types_and_csp() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("index.html"),
        "<!doctype html><title>shoal</title>",
    )
    .unwrap();
    std::fs::write(dir.path().join("app_bg.wasm"), [0u8, 0x61, 0x73, 0x6d]).unwrap();
    std::fs::write(dir.path().join("app.js"), "export default 1;").unwrap();
    let data = tempfile::tempdir().unwrap();
    let config = shoal_relay::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: data.path().to_path_buf(),
        web_root: Some(dir.path().to_path_buf()),
        ..Default::default()
    };
    let relay = shoal_relay::Relay::start(config).await.unwrap();
    let idx = http_get(relay.addr, "/").await;
    assert!(
        idx.starts_with("HTTP/1.1 200")
            && idx.contains("text/html")
            && idx.contains("<title>shoal</title>"),
        "{idx}"
    );
    assert!(
        idx.contains("script-src 'self' 'wasm-unsafe-eval'"),
        "{idx}"
    );
    assert!(
        idx.to_lowercase()
            .contains("x-content-type-options: nosniff"),
        "{idx}"
    );
    // Cross-origin isolated (the assistant's chat workers share memory).
    for h in [
        "cross-origin-opener-policy: same-origin",
        "cross-origin-embedder-policy: require-corp",
        "cross-origin-resource-policy: same-origin",
    ] {
        assert!(idx.to_lowercase().contains(h), "{h} missing: {idx}");
    }
    let w = http_get(relay.addr, "/app_bg.wasm").await;
    assert!(w.contains("application/wasm"), "{w}");
    let j = http_get(relay.addr, "/app.js").await;
    assert!(j.contains("javascript"), "{j}");
    relay.shutdown().await;
}
