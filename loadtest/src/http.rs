//! A minimal HTTP/1.1 client for the push API: one keep-alive connection,
//! one request at a time, JSON bodies, responses bounded in size.

use std::net::SocketAddr;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Longest status line or header line accepted, in bytes.
const MAX_LINE: u64 = 8 * 1024;
/// Largest response body accepted, in bytes.
const MAX_BODY: usize = 1 << 20;

/// One connection to an HTTP server.
pub(crate) struct HttpClient {
    stream: BufReader<TcpStream>,
    host: String,
}

impl HttpClient {
    /// Connects to `address`.
    pub(crate) async fn connect(address: SocketAddr) -> anyhow::Result<HttpClient> {
        let stream = TcpStream::connect(address).await?;
        stream.set_nodelay(true)?;
        Ok(HttpClient { stream: BufReader::new(stream), host: address.to_string() })
    }

    /// Sends `method path` with `body` (JSON) and a bearer `key`; returns
    /// the status once the whole response has been read.
    pub(crate) async fn request(
        &mut self,
        method: &str,
        path: &str,
        key: &str,
        body: &str,
    ) -> anyhow::Result<u16> {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {key}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            self.host,
            body.len()
        );
        let stream = self.stream.get_mut();
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body.as_bytes()).await?;
        let status_line = self.line().await?;
        let status: u16 = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("not an HTTP status line: {status_line:?}"))?;
        let mut length = 0usize;
        loop {
            let line = self.line().await?;
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse()?;
            }
        }
        anyhow::ensure!(length <= MAX_BODY, "a response body of {length} bytes");
        let mut body = vec![0u8; length];
        self.stream.read_exact(&mut body).await?;
        Ok(status)
    }

    /// Reads one line without its CRLF.
    async fn line(&mut self) -> anyhow::Result<String> {
        let mut line = Vec::new();
        let read = (&mut self.stream).take(MAX_LINE).read_until(b'\n', &mut line).await?;
        anyhow::ensure!(read > 0 && line.ends_with(b"\n"), "the connection closed or a line ran too long");
        let text = String::from_utf8_lossy(&line);
        Ok(text.trim_end_matches(['\r', '\n']).to_owned())
    }
}
