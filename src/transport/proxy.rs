//! The PROXY protocol (v1 text and v2 binary, as HAProxy and nginx send it): a trusted proxy
//! starts each connection with a header naming the client. Read here byte-exactly (nothing
//! after the header is consumed, so the connection's own protocol starts where it should),
//! parsed by the `ppp` crate.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

/// How long a proxy may take to send its header.
pub(crate) const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// The v2 signature (and what every v2 header starts with).
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// A v1 header is at most 107 bytes, CRLF included.
const V1_MAX: usize = 107;
/// Addresses and TLVs a v2 header may carry; more is refused.
const V2_MAX_BODY: usize = 512;

/// Why a connection from a trusted proxy was dropped.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProxyError {
    /// The connection did not start with a PROXY header.
    #[error("the connection did not start with a PROXY protocol header")]
    Missing,
    /// The header could not be read.
    #[error("bad PROXY protocol header: {0}")]
    Bad(String),
    /// The header did not arrive in time.
    #[error("no PROXY protocol header within {0:?}")]
    Timeout(Duration),
    /// The connection failed while the header was read.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Reads one PROXY header from `io`: the client's address, or `None` when the proxy speaks
/// for itself (v1 `UNKNOWN`, v2 `LOCAL`, a health check say), when the peer's own address is
/// the right one.
pub(crate) async fn read_header<R: AsyncRead + Unpin>(
    io: &mut R,
) -> Result<Option<SocketAddr>, ProxyError> {
    tokio::time::timeout(HEADER_TIMEOUT, read(io))
        .await
        .map_err(|_| ProxyError::Timeout(HEADER_TIMEOUT))?
}

async fn read<R: AsyncRead + Unpin>(io: &mut R) -> Result<Option<SocketAddr>, ProxyError> {
    let mut buf = vec![0u8; 6];
    io.read_exact(&mut buf).await?;
    if &buf[..] == b"PROXY " {
        // Byte by byte to the CRLF: at most 107 one-byte reads, once per connection.
        while !buf.ends_with(b"\r\n") {
            if buf.len() >= V1_MAX {
                return Err(ProxyError::Bad("a v1 header longer than 107 bytes".into()));
            }
            buf.push(io.read_u8().await?);
        }
    } else if buf[..] == V2_SIGNATURE[..6] {
        buf.resize(16, 0);
        io.read_exact(&mut buf[6..]).await?;
        if buf[..12] != V2_SIGNATURE[..] {
            return Err(ProxyError::Missing);
        }
        let len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
        if len > V2_MAX_BODY {
            return Err(ProxyError::Bad(format!(
                "a v2 header of {len} bytes (at most {V2_MAX_BODY} are taken)"
            )));
        }
        buf.resize(16 + len, 0);
        io.read_exact(&mut buf[16..]).await?;
    } else {
        return Err(ProxyError::Missing);
    }
    parse(&buf)
}

/// The client named by a whole header.
fn parse(header: &[u8]) -> Result<Option<SocketAddr>, ProxyError> {
    use ppp::{HeaderResult, v1, v2};
    match HeaderResult::parse(header) {
        HeaderResult::V1(Ok(h)) => Ok(match h.addresses {
            v1::Addresses::Tcp4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
            v1::Addresses::Tcp6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
            v1::Addresses::Unknown => None,
        }),
        HeaderResult::V2(Ok(h)) => Ok(match (h.command, h.addresses) {
            (v2::Command::Local, _) => None,
            (_, v2::Addresses::IPv4(a)) => {
                Some(SocketAddr::from((a.source_address, a.source_port)))
            }
            (_, v2::Addresses::IPv6(a)) => {
                Some(SocketAddr::from((a.source_address, a.source_port)))
            }
            (_, v2::Addresses::Unspecified | v2::Addresses::Unix(_)) => None,
        }),
        HeaderResult::V1(Err(e)) => Err(ProxyError::Bad(e.to_string())),
        HeaderResult::V2(Err(e)) => Err(ProxyError::Bad(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read_all(bytes: &[u8]) -> (Result<Option<SocketAddr>, ProxyError>, Vec<u8>) {
        let mut io = bytes;
        let header = read_header(&mut io).await;
        (header, io.to_vec())
    }

    #[tokio::test]
    async fn v1_names_the_client_and_leaves_the_rest() {
        let (addr, rest) =
            read_all(b"PROXY TCP4 198.51.100.7 10.0.0.1 4711 12345\r\nhello\n").await;
        assert_eq!(addr.unwrap(), Some("198.51.100.7:4711".parse().unwrap()));
        assert_eq!(rest, b"hello\n");
        let (addr, _) = read_all(b"PROXY TCP6 2001:db8::7 2001:db8::1 4711 443\r\n").await;
        assert_eq!(addr.unwrap(), Some("[2001:db8::7]:4711".parse().unwrap()));
        let (addr, rest) = read_all(b"PROXY UNKNOWN\r\nx").await;
        assert_eq!(addr.unwrap(), None);
        assert_eq!(rest, b"x");
    }

    #[tokio::test]
    async fn v2_names_the_client_and_leaves_the_rest() {
        let mut h = V2_SIGNATURE.to_vec();
        h.extend_from_slice(&[0x21, 0x11, 0, 12]); // v2 PROXY, TCP over IPv4, 12 bytes
        h.extend_from_slice(&[198, 51, 100, 7, 10, 0, 0, 1]);
        h.extend_from_slice(&4711u16.to_be_bytes());
        h.extend_from_slice(&1883u16.to_be_bytes());
        h.extend_from_slice(b"\x10\x00");
        let (addr, rest) = read_all(&h).await;
        assert_eq!(addr.unwrap(), Some("198.51.100.7:4711".parse().unwrap()));
        assert_eq!(rest, b"\x10\x00");
    }

    #[tokio::test]
    async fn anything_else_is_refused() {
        for bad in [
            &b"GET / HTTP/1.1\r\n\r\n"[..],
            b"PROXY TCP4 not-an-ip 10.0.0.1 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 and far too much text for a v1 header that \
              goes on and on and on past its 107 bytes\r\n",
        ] {
            assert!(
                read_all(bad).await.0.is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
