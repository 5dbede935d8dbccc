//! Test helpers: an in-process relay on 127.0.0.1:0 and a raw protocol client.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use shoal_proto::identity::{Keypair, PeerId};
use shoal_proto::{self as proto, Auth, ErrorCode, Frame, Hello, RoomId, RoomRef, SendTo};
use shoal_relay::{Config, Limits, Relay};
use shoal_tlog::note::{Ed25519Signer, NoteSigner};
use shoal_tlog::receipt::{Receipt, ReceiptBody, commitment};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Generous: the test machine is a loaded 2-core box.
pub(crate) const T: Duration = Duration::from_secs(30);

pub(crate) struct TestRelay {
    pub relay: Relay,
    pub dir: tempfile::TempDir,
}

impl TestRelay {
    pub(crate) fn url(&self) -> String {
        format!("ws://{}/v1/signal", self.relay.addr)
    }
}

pub(crate) async fn start(limits: Limits) -> TestRelay {
    start_at("127.0.0.1:0".parse().unwrap(), limits, None).await
}

pub(crate) async fn start_at(
    addr: SocketAddr,
    limits: Limits,
    dir: Option<tempfile::TempDir>,
) -> TestRelay {
    let dir = dir.unwrap_or_else(|| tempfile::tempdir().unwrap());
    let config = Config {
        listen: addr,
        data_dir: dir.path().to_path_buf(),
        limits: limits.normalized(),
        shutdown_grace_ms: 5_000,
        ..Config::default()
    };
    let relay = Relay::start(config).await.unwrap();
    TestRelay { relay, dir }
}

pub(crate) fn room(n: u8) -> RoomId {
    RoomId([n; 32])
}

pub(crate) struct Raw {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub kp: Keypair,
}

pub(crate) enum Got {
    Frame(Frame),
    Closed(Option<u16>),
}

impl Raw {
    pub(crate) async fn connect(url: &str) -> Raw {
        let (ws, _) = tokio::time::timeout(T, tokio_tungstenite::connect_async(url))
            .await
            .unwrap()
            .unwrap();
        Raw {
            ws,
            kp: Keypair::generate().unwrap(),
        }
    }

    pub(crate) fn peer(&self) -> PeerId {
        self.kp.peer_id()
    }

    pub(crate) async fn send(&mut self, f: &Frame) {
        self.send_bytes(f.encode().unwrap()).await;
    }

    pub(crate) async fn send_bytes(&mut self, b: Vec<u8>) {
        tokio::time::timeout(T, self.ws.send(Message::Binary(b.into())))
            .await
            .unwrap()
            .unwrap();
    }

    /// Next protocol frame or the close.
    pub(crate) async fn next(&mut self) -> Got {
        loop {
            let m = tokio::time::timeout(T, self.ws.next())
                .await
                .expect("timed out waiting for the relay");
            match m {
                Some(Ok(Message::Binary(b))) => return Got::Frame(Frame::decode(&b).unwrap()),
                Some(Ok(Message::Close(c))) => return Got::Closed(c.map(|c| u16::from(c.code))),
                Some(Ok(_)) => continue,
                None | Some(Err(_)) => return Got::Closed(None),
            }
        }
    }

    pub(crate) async fn frame(&mut self) -> Frame {
        match self.next().await {
            Got::Frame(f) => f,
            Got::Closed(c) => panic!("closed ({c:?}) while waiting for a frame"),
        }
    }

    /// Skip frames until an error frame; return its code.
    pub(crate) async fn error(&mut self) -> ErrorCode {
        loop {
            match self.next().await {
                Got::Frame(Frame::Error(e)) => return e.code,
                Got::Frame(_) => continue,
                Got::Closed(c) => panic!("closed ({c:?}) before an error frame"),
            }
        }
    }

    /// Expect the connection to end (after any frames).
    pub(crate) async fn closed(&mut self) {
        loop {
            if let Got::Closed(_) = self.next().await {
                return;
            }
        }
    }

    /// Hello → Challenge → Auth → Welcome.
    pub(crate) async fn auth(&mut self) {
        let peer = self.peer();
        self.send(&Frame::Hello(Hello {
            peer,
            client_nonce: [5; 32],
        }))
        .await;
        let Frame::Challenge(c) = self.frame().await else {
            panic!("no challenge")
        };
        c.relay
            .verify(
                &proto::hello_message(&[5; 32], &c.nonce, &peer),
                &c.relay_sig,
            )
            .unwrap();
        let sig = self
            .kp
            .sign(&proto::auth_message(&c.relay, &c.nonce, &peer));
        self.send(&Frame::Auth(Auth { sig })).await;
        match self.frame().await {
            Frame::Welcome(_) => {}
            other => panic!("expected welcome, got {other:?}"),
        }
    }

    pub(crate) async fn connect_auth(url: &str) -> Raw {
        let mut r = Raw::connect(url).await;
        r.auth().await;
        r
    }

    /// Join and wait for the members list.
    pub(crate) async fn join(&mut self, room: RoomId) -> Vec<PeerId> {
        self.send(&Frame::Join(RoomRef { room })).await;
        loop {
            match self.frame().await {
                Frame::Members(m) if m.room == room => return m.members,
                Frame::Error(e) => panic!("join refused: {e:?}"),
                _ => continue,
            }
        }
    }

    pub(crate) async fn send_to(&mut self, room: RoomId, to: PeerId, payload: Vec<u8>) {
        self.send(&Frame::Send(SendTo { room, to, payload })).await;
    }
}

/// GET a path over plain HTTP/1.1; returns the whole response text (headers + body).
pub(crate) async fn http_get(addr: SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(T, s.read_to_end(&mut buf))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&buf).into_owned()
}

/// A valid, countersigned, encoded receipt; distinct for every `i` (fixed test keys).
pub(crate) fn receipt(i: u64) -> Vec<u8> {
    let w = Ed25519Signer::from_seed("w", &[1; 32]).expect("key");
    let r = Ed25519Signer::from_seed("r", &[2; 32]).expect("key");
    let body = ReceiptBody {
        job_id: u128::from(i).to_be_bytes(),
        shard: i as u32,
        input_commitment: commitment(&i.to_le_bytes()),
        output_commitment: commitment(b"out"),
        worker: w.public_key(),
        requester: r.public_key(),
        started_ms: 10,
        finished_ms: 20,
    };
    let ws = body.sign_as_worker(&w).expect("sign");
    Receipt::countersign(body, ws, &r)
        .expect("countersign")
        .encode()
}
