//! Browser transport: gloo-net's WebSocket, the page's event loop, gloo-timers.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use futures_util::{Sink, SinkExt as _, Stream, StreamExt as _, future};
use gloo_net::websocket::Message;
use gloo_net::websocket::futures::WebSocket;

use super::core::SignalError;

pub(crate) type BoxSink = Pin<Box<dyn Sink<Vec<u8>, Error = SignalError>>>;
pub(crate) type BoxStream = Pin<Box<dyn Stream<Item = Result<Vec<u8>, SignalError>>>>;

pub(crate) fn spawn<F: Future<Output = ()> + 'static>(f: F) {
    wasm_bindgen_futures::spawn_local(f);
}

pub(crate) fn sleep(d: Duration) -> impl Future<Output = ()> {
    gloo_timers::future::sleep(d)
}

pub(crate) async fn connect(url: &str) -> Result<(BoxSink, BoxStream), SignalError> {
    let ws = WebSocket::open(url).map_err(|e| SignalError::Transport(e.to_string()))?;
    let (sink, stream) = ws.split();
    let sink = sink
        .sink_map_err(|e| SignalError::Transport(e.to_string()))
        .with(|v: Vec<u8>| future::ready(Ok::<_, SignalError>(Message::Bytes(v))));
    let stream = stream.map(|m| match m {
        Ok(Message::Bytes(b)) => Ok(b),
        Ok(Message::Text(_)) => Err(SignalError::Protocol("text frame from relay".into())),
        Err(e) => Err(SignalError::Transport(e.to_string())),
    });
    Ok((Box::pin(sink), Box::pin(stream)))
}
