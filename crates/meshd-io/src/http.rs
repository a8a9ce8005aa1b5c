//! The HTTP/1.1 client side of meshd's APIs: the admin API (the `meshd controller` commands),
//! the node's local API on its Unix socket (`meshd status`, `join`, ...) and replication
//! between replicas all exchange requests through one [`Connection`] over whatever stream
//! the caller connected, and every API answers an error with one [`ErrorBody`].
//!
//! Connecting is the caller's: it knows its addresses, timeouts and the errors worth a hint
//! ("no daemon is running", "is `meshd controller run` running?").

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};

/// The body of every error answer of meshd's APIs. The text says what to fix; clients print
/// it as is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

/// Why an exchange failed before a whole answer came back.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("{0}")]
    Http(#[from] hyper::Error),
    #[error("the answer is larger than {limit} bytes")]
    TooLarge { limit: usize },
}

/// A whole answer: its status and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Bytes,
}

/// One HTTP/1.1 connection, for one request or many in turn.
#[derive(Debug)]
pub struct Connection {
    sender: SendRequest<Full<Bytes>>,
}

impl Connection {
    /// Speaks HTTP/1.1 on a connected `stream`. The connection is driven by a task of its
    /// own, which ends when the connection is dropped or the server closes it.
    pub async fn handshake<S>(stream: S) -> Result<Self, HttpError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!("HTTP connection closed: {e}");
            }
        });
        Ok(Self { sender })
    }

    /// Whether the server closed the connection: a new one is needed.
    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }

    /// Sends `request` once the connection is free and reads the whole answer, refusing a
    /// body larger than `max_body` bytes. After an error (or a timeout around this call)
    /// the connection is no longer usable: drop it.
    pub async fn exchange(
        &mut self,
        request: Request<Full<Bytes>>,
        max_body: usize,
    ) -> Result<Answer, HttpError> {
        self.sender.ready().await?;
        let response = self.sender.send_request(request).await?;
        let status = response.status();
        let body = Limited::new(response.into_body(), max_body)
            .collect()
            .await
            .map_err(|e| match e.downcast::<hyper::Error>() {
                Ok(e) => HttpError::Http(*e),
                Err(_) => HttpError::TooLarge { limit: max_body },
            })?
            .to_bytes();
        Ok(Answer { status, body })
    }
}

/// The one-line message of an error answer from `server` (e.g. "the daemon"): the API's own
/// `error` text, or for anything else (a proxy's error page) what answered, with the start
/// of what came back.
pub fn error_message(server: &str, status: StatusCode, body: &[u8]) -> String {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(ErrorBody { error }) => error,
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            let snippet: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
            let snippet: String = snippet.chars().take(200).collect();
            format!("{server} answered {status}: {snippet}")
        }
    }
}

#[cfg(test)]
mod tests {
    use hyper::Method;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A server that reads one request and answers with `raw` bytes, then closes.
    async fn answer_once(raw: &'static [u8]) -> tokio::io::DuplexStream {
        let (client, mut server) = tokio::io::duplex(1 << 16);
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            let _ = server.read(&mut buf).await;
            let _ = server.write_all(raw).await;
        });
        client
    }

    fn get() -> Request<Full<Bytes>> {
        Request::builder()
            .method(Method::GET)
            .uri("/v1/status")
            .header(hyper::header::HOST, "meshd")
            .body(Full::new(Bytes::new()))
            .unwrap()
    }

    #[tokio::test]
    async fn reads_the_whole_answer() {
        let stream = answer_once(
            b"HTTP/1.1 404 Not Found\r\ncontent-length: 19\r\n\r\n{\"error\":\"no such\"}",
        )
        .await;
        let mut conn = Connection::handshake(stream).await.unwrap();
        let answer = conn.exchange(get(), 1024).await.unwrap();
        assert_eq!(answer.status, StatusCode::NOT_FOUND);
        assert_eq!(
            error_message("the daemon", answer.status, &answer.body),
            "no such"
        );
    }

    #[tokio::test]
    async fn refuses_an_answer_over_the_limit() {
        let stream = answer_once(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n0123456789").await;
        let mut conn = Connection::handshake(stream).await.unwrap();
        let err = conn.exchange(get(), 4).await.unwrap_err();
        assert!(matches!(err, HttpError::TooLarge { limit: 4 }), "{err}");
    }

    #[tokio::test]
    async fn a_closed_stream_is_an_error() {
        let stream = answer_once(b"").await;
        let mut conn = Connection::handshake(stream).await.unwrap();
        let err = conn.exchange(get(), 1024).await.unwrap_err();
        assert!(matches!(err, HttpError::Http(_)), "{err}");
    }

    #[test]
    fn a_foreign_error_page_is_named_and_cut_short() {
        let page = format!("<html>\n  bad   gateway {}</html>", "x".repeat(500));
        let message = error_message(
            "the controller API at http://[::1]:9995",
            StatusCode::BAD_GATEWAY,
            page.as_bytes(),
        );
        assert!(
            message.starts_with(
                "the controller API at http://[::1]:9995 answered 502 Bad Gateway: <html> bad gateway xxx"
            ),
            "{message}"
        );
        assert!(message.len() < 300, "{message}");
    }
}
