//! Native transport: tokio + tokio-tungstenite.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use futures_util::{Sink, SinkExt as _, Stream, StreamExt as _, future};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use super::core::SignalError;
use shoal_proto::MAX_FRAME_LEN;

pub(crate) type BoxSink = Pin<Box<dyn Sink<Vec<u8>, Error = SignalError> + Send>>;
pub(crate) type BoxStream = Pin<Box<dyn Stream<Item = Result<Vec<u8>, SignalError>> + Send>>;

pub(crate) fn spawn<F: Future<Output = ()> + Send + 'static>(f: F) {
    tokio::spawn(f);
}

pub(crate) fn sleep(d: Duration) -> impl Future<Output = ()> + Send {
    tokio::time::sleep(d)
}

pub(crate) async fn connect(url: &str) -> Result<(BoxSink, BoxStream), SignalError> {
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_FRAME_LEN))
        .max_frame_size(Some(MAX_FRAME_LEN));
    let (ws, _resp) = tokio_tungstenite::connect_async_with_config(url, Some(config), true)
        .await
        .map_err(|e| SignalError::Transport(e.to_string()))?;
    let (sink, stream) = ws.split();
    let sink = sink
        .sink_map_err(|e| SignalError::Transport(e.to_string()))
        .with(|v: Vec<u8>| future::ready(Ok::<_, SignalError>(Message::Binary(v.into()))));
    let stream = stream.filter_map(|m| {
        future::ready(match m {
            Ok(Message::Binary(b)) => Some(Ok(b.to_vec())),
            Ok(Message::Text(_)) => {
                Some(Err(SignalError::Protocol("text frame from relay".into())))
            }
            Ok(_) => None,
            Err(e) => Some(Err(SignalError::Transport(e.to_string()))),
        })
    });
    Ok((Box::pin(sink), Box::pin(stream)))
}
