//! A small Redis client: RESP2 over TCP, a few pooled connections, every
//! call bounded in time, and every reply bounded in size (a reply past the
//! bounds is an error, not an allocation). Only what Herald needs: device
//! users looked up at the gateway (ADR 0026), the session registry kept at
//! the router (ADR 0029): commands out, one at a time or pipelined, replies
//! in.

use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufStream};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

/// Connections open at once at most; a lookup past them waits for one
/// (within its deadline).
const MAX_CONNECTIONS: usize = 8;
/// Longest status line, error or number line accepted, in bytes.
const MAX_LINE: usize = 1024;
/// Longest bulk string accepted, in bytes.
const MAX_BULK: usize = 64 * 1024;
/// Most bulk-string bytes in one reply.
const MAX_REPLY_BYTES: usize = 1 << 20;
/// Most elements of an array reply accepted.
const MAX_ARRAY: usize = 1024;
/// Most commands in one pipeline.
pub const MAX_PIPELINE: usize = 1024;

/// Where Redis is, from a `redis://[[user]:password@]host[:port][/db]` URL.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisAddress {
    host: String,
    port: u16,
    db: u32,
    username: Option<String>,
    password: Option<String>,
}

impl std::fmt::Debug for RedisAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "redis://{}:{}/{}", self.host, self.port, self.db)
    }
}

impl RedisAddress {
    /// Parses a `redis://` URL (TLS, `rediss://`, is not offered).
    pub fn parse(url: &str) -> Result<RedisAddress, String> {
        let rest = url.strip_prefix("redis://").ok_or("a Redis URL starts with redis://")?;
        let (credentials, rest) = match rest.rsplit_once('@') {
            Some((credentials, rest)) => (Some(credentials), rest),
            None => (None, rest),
        };
        let (authority, db) = match rest.split_once('/') {
            Some((authority, "")) => (authority, 0),
            Some((authority, db)) => (authority, db.parse().map_err(|_| "the database is a number")?),
            None => (rest, 0),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) => (host, port.parse().map_err(|_| "the port is a number")?),
            None => (authority, 6379),
        };
        if host.is_empty() {
            return Err("the Redis URL names no host".into());
        }
        let (username, password) = match credentials.map(|c| c.split_once(':')) {
            None => (None, None),
            Some(None) => (None, credentials.map(str::to_owned)),
            Some(Some((user, password))) => {
                ((!user.is_empty()).then(|| user.to_owned()), Some(password.to_owned()))
            }
        };
        let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        Ok(RedisAddress { host, port, db, username, password })
    }
}

/// A reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// The null bulk string or array.
    Nil,
    /// A simple string (`+OK`).
    Status(String),
    /// An integer.
    Integer(i64),
    /// A bulk string.
    Bulk(Vec<u8>),
    /// An array.
    Array(Vec<Reply>),
}

/// Why a command has no reply.
#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    /// Redis could not be reached, or did not answer in time.
    #[error("Redis is unavailable: {0}")]
    Unavailable(String),
    /// Redis answered with an error.
    #[error("Redis refused the command: {0}")]
    Refused(String),
    /// The reply broke the protocol or the bounds.
    #[error("Redis sent a reply this client does not accept: {0}")]
    Protocol(&'static str),
}

/// A pool of connections to one Redis.
pub struct Redis {
    address: RedisAddress,
    timeout: Duration,
    permits: Semaphore,
    idle: std::sync::Mutex<Vec<BufStream<TcpStream>>>,
}

impl Redis {
    /// A client of `address` whose commands take at most `timeout` each
    /// (waiting for a connection included).
    pub fn new(address: RedisAddress, timeout: Duration) -> Redis {
        Redis { address, timeout, permits: Semaphore::new(MAX_CONNECTIONS), idle: Default::default() }
    }

    /// Runs one command and returns its reply.
    pub async fn command(&self, args: &[&[u8]]) -> Result<Reply, RedisError> {
        let command: Vec<Vec<u8>> = args.iter().map(|arg| arg.to_vec()).collect();
        self.pipeline(&[command]).await?.pop().unwrap_or(Err(RedisError::Protocol("no reply")))
    }

    /// Runs `commands` in one round trip, in order, and returns each one's
    /// reply (an error reply is that command's `Refused`); the outer error
    /// is for Redis unreachable or out of protocol, after which nothing is
    /// known of what ran.
    pub async fn pipeline(
        &self,
        commands: &[Vec<Vec<u8>>],
    ) -> Result<Vec<Result<Reply, RedisError>>, RedisError> {
        if commands.len() > MAX_PIPELINE {
            return Err(RedisError::Protocol("a pipeline too long"));
        }
        let run = async {
            let _permit =
                self.permits.acquire().await.map_err(|_| RedisError::Unavailable("closed".into()))?;
            let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
            let mut connection = match idle {
                Some(connection) => connection,
                None => self.connect().await?,
            };
            let mut out = Vec::new();
            for command in commands {
                let args: Vec<&[u8]> = command.iter().map(Vec::as_slice).collect();
                encode(&args, &mut out);
            }
            let io = |e: std::io::Error| RedisError::Unavailable(e.to_string());
            connection.write_all(&out).await.map_err(io)?;
            connection.flush().await.map_err(io)?;
            let mut replies = Vec::with_capacity(commands.len());
            for _ in commands {
                match read_reply(&mut connection, 0).await {
                    Ok(reply) => replies.push(Ok(reply)),
                    Err(RedisError::Refused(reason)) => replies.push(Err(RedisError::Refused(reason))),
                    Err(broken) => return Err(broken),
                }
            }
            // Only a connection whose last exchange completed goes back.
            self.idle.lock().unwrap_or_else(|p| p.into_inner()).push(connection);
            Ok(replies)
        };
        tokio::time::timeout(self.timeout, run)
            .await
            .map_err(|_| RedisError::Unavailable("no answer in time".into()))?
    }

    async fn connect(&self) -> Result<BufStream<TcpStream>, RedisError> {
        let address = (self.address.host.as_str(), self.address.port);
        let stream = TcpStream::connect(address).await.map_err(|e| RedisError::Unavailable(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        let mut connection = BufStream::new(stream);
        if let Some(password) = &self.address.password {
            let mut auth: Vec<&[u8]> = vec![b"AUTH"];
            auth.extend(self.address.username.as_deref().map(str::as_bytes));
            auth.push(password.as_bytes());
            call(&mut connection, &auth).await?;
        }
        if self.address.db != 0 {
            call(&mut connection, &[b"SELECT", self.address.db.to_string().as_bytes()]).await?;
        }
        Ok(connection)
    }
}

/// Sends one command and reads its reply; an error reply is `Refused`.
async fn call(connection: &mut BufStream<TcpStream>, args: &[&[u8]]) -> Result<Reply, RedisError> {
    let mut out = Vec::new();
    encode(args, &mut out);
    let io = |e: std::io::Error| RedisError::Unavailable(e.to_string());
    connection.write_all(&out).await.map_err(io)?;
    connection.flush().await.map_err(io)?;
    read_reply(connection, 0).await
}

/// Appends one command, as an array of bulk strings, to `out`.
fn encode(args: &[&[u8]], out: &mut Vec<u8>) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

/// Reads one reply: arrays nest at most twice deep (a `SCAN` reply), and
/// a whole reply holds at most [`MAX_REPLY_BYTES`] of bulk strings.
async fn read_reply<R: AsyncBufReadExt + AsyncReadExt + Unpin>(
    input: &mut R,
    depth: usize,
) -> Result<Reply, RedisError> {
    let mut budget = MAX_REPLY_BYTES;
    read_bounded(input, depth, &mut budget).await
}

async fn read_bounded<R: AsyncBufReadExt + AsyncReadExt + Unpin>(
    input: &mut R,
    depth: usize,
    budget: &mut usize,
) -> Result<Reply, RedisError> {
    let line = read_line(input).await?;
    let (kind, rest) = line.split_first().ok_or(RedisError::Protocol("an empty line"))?;
    let text = || String::from_utf8_lossy(rest).into_owned();
    let number = || -> Result<i64, RedisError> {
        std::str::from_utf8(rest)
            .ok()
            .and_then(|n| n.parse().ok())
            .ok_or(RedisError::Protocol("not a number"))
    };
    match kind {
        b'+' => Ok(Reply::Status(text())),
        b'-' => Err(RedisError::Refused(text())),
        b':' => Ok(Reply::Integer(number()?)),
        b'$' => match number()? {
            -1 => Ok(Reply::Nil),
            n if (0..=MAX_BULK as i64).contains(&n) && n as usize <= *budget => {
                *budget -= n as usize;
                let mut bulk = vec![0; n as usize + 2];
                input.read_exact(&mut bulk).await.map_err(|e| RedisError::Unavailable(e.to_string()))?;
                if !bulk.ends_with(b"\r\n") {
                    return Err(RedisError::Protocol("a bulk string not ended by CRLF"));
                }
                bulk.truncate(n as usize);
                Ok(Reply::Bulk(bulk))
            }
            _ => Err(RedisError::Protocol("a bulk string too long")),
        },
        b'*' => match number()? {
            -1 => Ok(Reply::Nil),
            n if (0..=MAX_ARRAY as i64).contains(&n) && depth < 2 => {
                let mut items = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    items.push(Box::pin(read_bounded(input, depth + 1, budget)).await?);
                }
                Ok(Reply::Array(items))
            }
            _ => Err(RedisError::Protocol("an array too long or nested")),
        },
        _ => Err(RedisError::Protocol("an unknown reply type")),
    }
}

/// Reads a line without its CRLF, refusing one past [`MAX_LINE`].
async fn read_line<R: AsyncBufReadExt + Unpin>(input: &mut R) -> Result<Vec<u8>, RedisError> {
    let mut line = Vec::new();
    let mut limited = input.take(MAX_LINE as u64);
    let n = limited.read_until(b'\n', &mut line).await.map_err(|e| RedisError::Unavailable(e.to_string()))?;
    if n == 0 {
        return Err(RedisError::Unavailable("the connection closed".into()));
    }
    if !line.ends_with(b"\r\n") {
        return Err(RedisError::Protocol("a line too long or not ended by CRLF"));
    }
    line.truncate(line.len() - 2);
    Ok(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> Result<Reply, RedisError> {
        let mut input = tokio::io::BufReader::new(bytes);
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(read_reply(&mut input, 0))
    }

    #[test]
    fn replies_are_read_within_their_bounds() {
        let array = parse(b"*3\r\n$4\r\nhash\r\n$-1\r\n$0\r\n\r\n").expect("array");
        assert_eq!(
            array,
            Reply::Array(vec![Reply::Bulk(b"hash".to_vec()), Reply::Nil, Reply::Bulk(Vec::new())])
        );
        assert_eq!(parse(b"+OK\r\n").expect("status"), Reply::Status("OK".into()));
        assert_eq!(parse(b":42\r\n").expect("integer"), Reply::Integer(42));
        assert!(matches!(parse(b"-WRONGTYPE no\r\n"), Err(RedisError::Refused(e)) if e == "WRONGTYPE no"));
        for bad in [
            &b"$99999999\r\n"[..],
            b"*2000\r\n",
            b"*1\r\n*1\r\n*1\r\n:1\r\n",
            b"$3\r\nabcd\r\n",
            b"?\r\n",
            b":x\r\n",
            b"+no end",
        ] {
            assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let scan = parse(b"*2\r\n$1\r\n0\r\n*1\r\n$1\r\nk\r\n").expect("a SCAN reply");
        assert_eq!(
            scan,
            Reply::Array(vec![Reply::Bulk(b"0".to_vec()), Reply::Array(vec![Reply::Bulk(b"k".to_vec())])])
        );
        let mut big = b"*20\r\n".to_vec();
        for _ in 0..20 {
            big.extend(b"$65536\r\n");
            big.extend([b'x'; 65536]);
            big.extend(b"\r\n");
        }
        assert!(matches!(parse(&big), Err(RedisError::Protocol(_))), "a reply past its byte budget");
        let long = [b"+".as_slice(), &[b'a'; 2000], b"\r\n"].concat();
        assert!(matches!(parse(&long), Err(RedisError::Protocol(_))));
    }

    #[test]
    fn urls_name_host_port_database_and_credentials() {
        let a = RedisAddress::parse("redis://127.0.0.1:6380/2").expect("url");
        assert_eq!((a.host.as_str(), a.port, a.db, a.password.is_none()), ("127.0.0.1", 6380, 2, true));
        let a = RedisAddress::parse("redis://herald:p@ss@localhost").expect("url");
        assert_eq!(
            (a.port, a.username.as_deref(), a.password.as_deref()),
            (6379, Some("herald"), Some("p@ss"))
        );
        let a = RedisAddress::parse("redis://:secret@[::1]:7000/").expect("url");
        assert_eq!(
            (a.host.as_str(), a.username.as_deref(), a.password.as_deref()),
            ("::1", None, Some("secret"))
        );
        assert!(!format!("{a:?}").contains("secret"), "the password is never printed");
        for bad in ["rediss://h", "redis://", "redis://h:x", "redis://h/db"] {
            assert!(RedisAddress::parse(bad).is_err(), "{bad}");
        }
    }
}
