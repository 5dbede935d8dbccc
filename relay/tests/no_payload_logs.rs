//! The relay (and the client) never log payload bytes, at any level up to debug.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::*;
use shoal_proto::{ErrorCode, Frame};
use shoal_relay::Limits;

#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);

impl Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

const MARKER: &str = "SHOAL-PAYLOAD-MARKER-7f3a9c";

#[tokio::test]
async fn payload_marker_never_logged() {
    let buf = Buf::default();
    let w = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || w.clone())
        .finish();
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let relay = start(Limits {
        max_frame_bytes: 2048,
        ..Limits::default()
    })
    .await;
    let mut a = Raw::connect_auth(&relay.url()).await;
    let mut b = Raw::connect_auth(&relay.url()).await;
    a.join(room(1)).await;
    b.join(room(1)).await;
    let payload = format!("{MARKER} sdp offer {MARKER}").into_bytes();
    a.send_to(room(1), b.peer(), payload.clone()).await;
    loop {
        if let Frame::Deliver(d) = b.frame().await {
            assert_eq!(d.payload, payload);
            break;
        }
    }
    // Error paths with the marker too: unknown member, not in room, oversize, text frame.
    a.send_to(
        room(1),
        shoal_proto::identity::PeerId([1; 32]),
        payload.clone(),
    )
    .await;
    assert_eq!(a.error().await, ErrorCode::NoSuchMember);
    a.send_to(room(2), b.peer(), payload.clone()).await;
    assert_eq!(a.error().await, ErrorCode::NotInRoom);
    a.send_to(room(1), b.peer(), MARKER.repeat(100).into_bytes())
        .await;
    assert_eq!(a.error().await, ErrorCode::TooLarge);
    use futures_util::SinkExt as _;
    a.ws.send(tokio_tungstenite::tungstenite::Message::Text(MARKER.into()))
        .await
        .unwrap();
    assert_eq!(a.error().await, ErrorCode::Malformed);
    relay.relay.shutdown().await;

    let logs = String::from_utf8_lossy(&buf.0.lock().unwrap()).into_owned();
    assert!(
        logs.contains("relay listening"),
        "log capture works: {logs}"
    );
    assert!(logs.contains("DEBUG"), "debug level was captured: {logs}");
    assert!(
        !logs.contains(MARKER),
        "payload marker leaked into logs:\n{logs}"
    );
    for line in logs
        .lines()
        .filter(|l| l.contains(" INFO ") || l.contains(" WARN ") || l.contains(" ERROR "))
    {
        assert!(!line.contains("ip="), "client IP at info level: {line}");
    }
}
