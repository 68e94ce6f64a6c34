//! The CLI's side of the control API: HTTP/1.1 over the daemon's Unix socket.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use tokio::net::UnixStream;

use crate::protocol::ErrorBody;

/// Talks to one daemon.
pub(crate) struct ApiClient {
    socket: PathBuf,
    state_dir: PathBuf,
}

/// What went wrong talking to the daemon.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ClientError {
    /// No daemon listens on the socket.
    #[error("no baton daemon is running for {0} (start one with `baton up`)")]
    NotRunning(String),
    /// The daemon answered with an error.
    #[error("{0}")]
    Daemon(String),
    /// Transport trouble.
    #[error("talking to the daemon: {0}")]
    Transport(String),
}

impl ApiClient {
    /// A client for the daemon of `state_dir`.
    pub(crate) fn new(state_dir: &Path) -> ApiClient {
        ApiClient {
            socket: crate::daemon::socket_path(state_dir),
            state_dir: state_dir.to_path_buf(),
        }
    }

    /// The state directory this client talks to.
    pub(crate) fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// Sends one request and returns the response with its streaming body.
    ///
    /// # Errors
    /// [`ClientError`] when no daemon answers or it answers with an error.
    pub(crate) async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<http::Response<Incoming>, ClientError> {
        let stream = UnixStream::connect(&self.socket)
            .await
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                    ClientError::NotRunning(self.state_dir.display().to_string())
                }
                _ => ClientError::Transport(format!("{}: {e}", self.socket.display())),
            })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ClientError::Transport(e.to_string()))?;
        tokio::spawn(conn);
        let bytes = body.map(|b| b.to_string()).unwrap_or_default();
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "baton")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(bytes)))
            .map_err(|e| ClientError::Transport(e.to_string()))?;
        let res = sender
            .send_request(req)
            .await
            .map_err(|e| ClientError::Transport(e.to_string()))?;
        if res.status() != StatusCode::OK {
            let status = res.status();
            let bytes = res
                .into_body()
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            let msg = serde_json::from_slice::<ErrorBody>(&bytes)
                .map(|e| e.error)
                .unwrap_or_else(|_| format!("{status}: {}", String::from_utf8_lossy(&bytes)));
            return Err(ClientError::Daemon(msg));
        }
        Ok(res)
    }

    /// `GET path` decoded from JSON.
    ///
    /// # Errors
    /// [`ClientError`].
    pub(crate) async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        read_json(self.send(Method::GET, path, None).await?).await
    }

    /// `POST path` with an optional JSON body, decoding a JSON answer.
    ///
    /// # Errors
    /// As [`ApiClient::get`].
    pub(crate) async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<T, ClientError> {
        read_json(self.send(Method::POST, path, body).await?).await
    }

    /// Sends a request and calls `on_line` for each line of the streamed answer.
    ///
    /// # Errors
    /// [`ClientError`].
    pub(crate) async fn stream_lines(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
        mut on_line: impl FnMut(&str),
    ) -> Result<(), ClientError> {
        let mut body = self.send(method, path, body).await?.into_body();
        let mut buf: Vec<u8> = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| ClientError::Transport(e.to_string()))?;
            if let Some(data) = frame.data_ref() {
                buf.extend_from_slice(data);
                while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=pos).collect();
                    on_line(String::from_utf8_lossy(&line[..line.len() - 1]).as_ref());
                }
            }
        }
        if !buf.is_empty() {
            on_line(String::from_utf8_lossy(&buf).as_ref());
        }
        Ok(())
    }
}

/// An answer's body decoded from JSON.
///
/// # Errors
/// [`ClientError::Transport`] when it cannot be read or decoded.
pub(crate) async fn read_json<T: DeserializeOwned>(
    res: http::Response<Incoming>,
) -> Result<T, ClientError> {
    let bytes = res
        .into_body()
        .collect()
        .await
        .map_err(|e| ClientError::Transport(e.to_string()))?
        .to_bytes();
    serde_json::from_slice(&bytes).map_err(|e| ClientError::Transport(format!("bad answer: {e}")))
}
