//! Every limit triggers with its documented error code.

mod common;

use std::time::Duration;

use common::*;
use futures_util::StreamExt as _;
use shoal_proto::{ErrorCode, Frame, Ping, RoomRef};
use shoal_relay::Limits;

#[tokio::test]
async fn frame_size() {
    let relay = start(Limits {
        max_frame_bytes: 1024,
        ..Limits::default()
    })
    .await;
    let mut c = Raw::connect_auth(&relay.url()).await;
    c.join(room(1)).await;
    c.send_to(room(1), c.peer(), vec![0; 2000]).await;
    assert_eq!(c.error().await, ErrorCode::TooLarge);
    // Still usable afterwards.
    c.send(&Frame::Ping(Ping { nonce: 1 })).await;
    assert!(matches!(c.frame().await, Frame::Pong(Ping { nonce: 1 })));
    relay.relay.shutdown().await;
}

#[tokio::test]
async fn messages_per_second() {
    let relay = start(Limits {
        msgs_per_sec: 1,
        msgs_burst: 3,
        ..Limits::default()
    })
    .await;
    let mut c = Raw::connect_auth(&relay.url()).await;
    for i in 0..6 {
        c.send(&Frame::Ping(Ping { nonce: i })).await;
    }
    assert_eq!(c.error().await, ErrorCode::RateLimited);
    relay.relay.shutdown().await;
}

#[tokio::test]
async fn bytes_per_second() {
    let relay = start(Limits {
        max_frame_bytes: 1024,
        bytes_per_sec: 1,
        bytes_burst: 1024,
        ..Limits::default()
    })
    .await;
    let mut c = Raw::connect_auth(&relay.url()).await;
    // ~1 KB each: the first fits the bucket (answered NotInRoom), the second does not.
    c.send_to(room(9), c.peer(), vec![0; 900]).await;
    assert_eq!(c.error().await, ErrorCode::NotInRoom);
    c.send_to(room(9), c.peer(), vec![0; 900]).await;
    assert_eq!(c.error().await, ErrorCode::RateLimited);
    relay.relay.shutdown().await;
}

#[tokio::test]
async fn rooms_per_session() {
    let relay = start(Limits {
        max_rooms_per_session: 2,
        ..Limits::default()
    })
    .await;
    let mut c = Raw::connect_auth(&relay.url()).await;
    c.join(room(1)).await;
    c.join(room(2)).await;
    c.join(room(1)).await; // re-joining is not a new room
    c.send(&Frame::Join(RoomRef { room: room(3) })).await;
    assert_eq!(c.error().await, ErrorCode::TooManyRooms);
    relay.relay.shutdown().await;
}

#[tokio::test]
async fn members_per_room() {
    let relay = start(Limits {
        max_members_per_room: 2,
        ..Limits::default()
    })
    .await;
    let mut a = Raw::connect_auth(&relay.url()).await;
    let mut b = Raw::connect_auth(&relay.url()).await;
    let mut c = Raw::connect_auth(&relay.url()).await;
    a.join(room(1)).await;
    b.join(room(1)).await;
    c.send(&Frame::Join(RoomRef { room: room(1) })).await;
    assert_eq!(c.error().await, ErrorCode::RoomFull);
    relay.relay.shutdown().await;
}

#[tokio::test]
async fn sessions_per_ip() {
    let relay = start(Limits {
        max_sessions_per_ip: 2,
        ..Limits::default()
    })
    .await;
    let _a = Raw::connect_auth(&relay.url()).await;
    let _b = Raw::connect_auth(&relay.url()).await;
    let mut c = Raw::connect(&relay.url()).await;
    assert_eq!(c.error().await, ErrorCode::TooManySessionsFromAddress);
    c.closed().await;
    let m = http_get(relay.relay.addr, "/metrics").await;
    assert!(
        m.contains("shoal_relay_drops_total{reason=\"too_many_sessions_from_address\"} 1"),
        "{m}"
    );
    relay.relay.shutdown().await;
}

#[tokio::test]
async fn total_sessions() {
    let relay = start(Limits {
        max_sessions: 2,
        ..Limits::default()
    })
    .await;
    let _a = Raw::connect_auth(&relay.url()).await;
    let _b = Raw::connect_auth(&relay.url()).await;
    let mut c = Raw::connect(&relay.url()).await;
    assert_eq!(c.error().await, ErrorCode::RelayFull);
    c.closed().await;
    relay.relay.shutdown().await;
}

#[tokio::test]
async fn idle_timeout_with_ping() {
    let relay = start(Limits {
        idle_timeout_ms: 600,
        ..Limits::default()
    })
    .await;
    let mut c = Raw::connect_auth(&relay.url()).await;
    // We read but never answer: first a Ping, then IdleTimeout.
    assert!(matches!(c.frame().await, Frame::Ping(_)));
    assert_eq!(c.error().await, ErrorCode::IdleTimeout);
    c.closed().await;
    // A client that answers pings stays connected across several timeouts.
    let mut d = Raw::connect_auth(&relay.url()).await;
    for _ in 0..4 {
        let Frame::Ping(p) = d.frame().await else {
            panic!("expected ping")
        };
        d.send(&Frame::Pong(p)).await;
    }
    relay.relay.shutdown().await;
}

#[tokio::test]
async fn handshake_timeout() {
    let relay = start(Limits {
        handshake_timeout_ms: 300,
        ..Limits::default()
    })
    .await;
    let mut c = Raw::connect(&relay.url()).await;
    assert_eq!(c.error().await, ErrorCode::HandshakeTimeout);
    c.closed().await;
    relay.relay.shutdown().await;
}

#[tokio::test]
async fn slow_reader_is_dropped() {
    let relay = start(Limits {
        send_queue: 2,
        msgs_per_sec: 1_000_000,
        msgs_burst: 1_000_000,
        bytes_per_sec: u32::MAX,
        bytes_burst: u32::MAX,
        ..Limits::default()
    })
    .await;
    let mut a = Raw::connect_auth(&relay.url()).await;
    let mut b = Raw::connect_auth(&relay.url()).await;
    a.join(room(1)).await;
    b.join(room(1)).await;
    let b_id = b.peer();
    // B stops reading. A floods B until the relay drops B (A sees MemberLeft).
    let (mut a_tx, mut a_rx) = a.ws.split();
    let watcher = tokio::spawn(async move {
        loop {
            match tokio::time::timeout(T * 2, a_rx.next()).await {
                Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Binary(b)))) => {
                    if let Ok(Frame::MemberLeft(e)) = Frame::decode(&b)
                        && e.peer == b_id
                    {
                        return true;
                    }
                }
                Ok(Some(Ok(_))) => continue,
                _ => return false,
            }
        }
    });
    let payload = vec![0x5a; 32 * 1024];
    let frame = Frame::Send(shoal_proto::SendTo {
        room: room(1),
        to: b_id,
        payload,
    })
    .encode()
    .unwrap();
    use futures_util::SinkExt as _;
    for _ in 0..20_000 {
        if watcher.is_finished() {
            break;
        }
        if a_tx
            .send(tokio_tungstenite::tungstenite::Message::Binary(
                frame.clone().into(),
            ))
            .await
            .is_err()
        {
            break;
        }
    }
    assert!(watcher.await.unwrap(), "slow reader was not dropped");
    let m = http_get(relay.relay.addr, "/metrics").await;
    assert!(
        m.contains("shoal_relay_drops_total{reason=\"slow_reader\"}"),
        "{m}"
    );
    // B, reading at last, finds its session ended.
    tokio::time::timeout(T, async {
        loop {
            match b.ws.next().await {
                None | Some(Err(_)) => break,
                Some(Ok(tokio_tungstenite::tungstenite::Message::Close(_))) => break,
                _ => {}
            }
        }
    })
    .await
    .unwrap();
    let _ = Duration::ZERO;
    relay.relay.shutdown().await;
}
