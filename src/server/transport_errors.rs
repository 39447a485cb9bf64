//! Problem bodies for the errors hyper answers by itself, before a request reaches the app.
//!
//! A request line or header hyper cannot parse gets `400`, a URI that is too long `414`, and too
//! many or too large headers `431`, each written by hyper with an empty body and the connection
//! closed. Clients then see the one error answer kvq does not explain. poem exposes no hook for
//! these, so the listener's connections are wrapped: when hyper writes exactly such a response
//! (status 400/414/431, `connection: close`, `content-length: 0`, nothing after the head), it is
//! replaced by the same status with a problem body. Responses of the app never match: every
//! error the app answers has a problem body.

use std::io::Result as IoResult;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use poem::http::StatusCode;
use poem::listener::Acceptor;
use poem::web::{LocalAddr, RemoteAddr};
use poem_openapi::types::ToJSON;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::problem::Problem;

/// Wraps an acceptor so hyper's own error answers carry problem bodies.
pub struct ProblemBodies<A>(pub A);

impl<A: Acceptor> Acceptor for ProblemBodies<A> {
    type Io = ProblemBodiesIo<A::Io>;

    fn local_addr(&self) -> Vec<LocalAddr> {
        self.0.local_addr()
    }

    async fn accept(&mut self) -> IoResult<(Self::Io, LocalAddr, RemoteAddr, poem::http::uri::Scheme)> {
        let (io, local, remote, scheme) = self.0.accept().await?;
        Ok((ProblemBodiesIo { inner: io, pending: Vec::new(), written: 0 }, local, remote, scheme))
    }
}

/// A connection whose writes pass through unchanged, but for hyper's own error answers.
pub struct ProblemBodiesIo<T> {
    inner: T,
    /// A replacement answer not yet fully written.
    pending: Vec<u8>,
    written: usize,
}

impl<T: AsyncWrite + Unpin> ProblemBodiesIo<T> {
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<IoResult<()>> {
        while self.written < self.pending.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.pending.clear();
        self.written = 0;
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ProblemBodiesIo<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<IoResult<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ProblemBodiesIo<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<IoResult<usize>> {
        ready!(self.poll_pending(cx))?;
        if let Some(answer) = with_problem_body(buf) {
            self.pending = answer;
            // Written now or by the flush hyper sends next; either way `buf` is taken care of.
            if let Poll::Ready(Err(e)) = self.poll_pending(cx) {
                return Poll::Ready(Err(e));
            }
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<IoResult<()>> {
        ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<IoResult<()>> {
        ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    /// Not vectored, so hyper hands over each answer's head in one buffer.
    fn is_write_vectored(&self) -> bool {
        false
    }
}

/// The replacement for one of hyper's own empty error answers, or None for any other write.
fn with_problem_body(written: &[u8]) -> Option<Vec<u8>> {
    let head = std::str::from_utf8(written).ok()?;
    let code: u16 = head.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()?;
    let detail = match code {
        400 => "request: not valid HTTP/1.1 (the request line or a header cannot be parsed)",
        414 => "URI: too long",
        431 => "headers: too many or too large",
        _ => return None,
    };
    let lines: Vec<&str> = head.strip_suffix("\r\n\r\n")?.split("\r\n").collect();
    let has = |line: &str| lines.iter().any(|l| l.eq_ignore_ascii_case(line));
    if !has("connection: close") || !has("content-length: 0") {
        return None;
    }
    let status = StatusCode::from_u16(code).ok()?;
    let body = Problem::new(status, detail).to_json_string();
    let mut answer = format!("{}\r\n", lines[0]);
    for line in &lines[1..] {
        if !line.to_ascii_lowercase().starts_with("content-length:") {
            answer.push_str(line);
            answer.push_str("\r\n");
        }
    }
    answer.push_str("content-type: application/json; charset=utf-8\r\n");
    answer.push_str(&format!("content-length: {}\r\n\r\n{body}", body.len()));
    Some(answer.into_bytes())
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use poem::listener::{Listener, TcpListener};
    use poem::{handler, Route, Server};

    use super::*;

    #[handler]
    fn hello() -> &'static str {
        "hello"
    }

    /// Sends raw bytes to a real poem/hyper server wrapped like kvq-server's, returns the answer.
    async fn exchange(requests: Vec<Vec<u8>>) -> Vec<String> {
        let acceptor = TcpListener::bind("127.0.0.1:0").into_acceptor().await.unwrap();
        let port = acceptor.local_addr()[0].as_socket_addr().unwrap().port();
        let server = tokio::spawn(Server::new_with_acceptor(ProblemBodies(acceptor)).run(Route::new().at("/", hello)));
        let answers = tokio::task::spawn_blocking(move || {
            requests
                .into_iter()
                .map(|request| {
                    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
                    s.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
                    let _ = s.write_all(&request);
                    let mut out = Vec::new();
                    let _ = s.read_to_end(&mut out);
                    String::from_utf8_lossy(&out).into_owned()
                })
                .collect()
        })
        .await
        .unwrap();
        server.abort();
        answers
    }

    fn problem_of(answer: &str) -> serde_json::Value {
        let (head, body) = answer.split_once("\r\n\r\n").expect("a head and a body");
        assert!(head.contains("content-type: application/json"), "{head}");
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .and_then(|n| n.trim().parse().ok())
            .expect("content-length");
        assert_eq!(length, body.len(), "content-length matches the body");
        serde_json::from_str(body).expect("a JSON problem body")
    }

    #[tokio::test]
    async fn hyper_own_error_answers_carry_problem_bodies() {
        let many_headers: String = (0..500).map(|i| format!("x-h{i}: v\r\n")).collect();
        let answers = exchange(vec![
            format!("GET / HTTP/1.1\r\nhost: x\r\n{many_headers}\r\n").into_bytes(),
            format!("GET / HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n", "a".repeat(500_000)).into_bytes(),
            b"GET / HTTP/1.1\r\nhost: x\r\nx-nul: a\x00b\r\n\r\n".to_vec(),
            b"NOT HTTP AT ALL\r\n\r\n".to_vec(),
            b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n".to_vec(),
        ])
        .await;
        for (answer, status, needle) in [
            (&answers[0], 431, "headers"),
            (&answers[1], 431, "headers"),
            (&answers[2], 400, "request"),
            (&answers[3], 400, "request"),
        ] {
            assert!(answer.starts_with(&format!("HTTP/1.1 {status} ")), "expected {status}: {answer}");
            let p = problem_of(answer);
            assert_eq!(p["status"], status);
            assert!(p["detail"].as_str().unwrap().starts_with(needle), "{p}");
            for field in ["type", "title"] {
                assert!(p[field].as_str().is_some_and(|s| !s.is_empty()), "{p}");
            }
        }
        // The app's own answers pass through untouched.
        assert!(answers[4].starts_with("HTTP/1.1 200 ") && answers[4].ends_with("hello"), "{}", answers[4]);
    }

    #[test]
    fn only_hyper_empty_error_answers_are_replaced() {
        let hyper_431 =
            "HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        assert!(with_problem_body(hyper_431.as_bytes()).is_some());
        for other in [
            "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
            "HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n",
            "HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 12\r\n\r\n",
            "HTTP/1.1 404 Not Found\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
            "HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\r\n{}",
            "{\"value\":\"HTTP/1.1 431 \"}",
        ] {
            assert!(with_problem_body(other.as_bytes()).is_none(), "{other}");
        }
    }
}
