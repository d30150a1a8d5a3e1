//! Client streams (plain TCP or TLS) and reading whole messages during login.

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadHalf, WriteHalf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use crate::protocol::{frame, PgError};

/// A client connection that can be split into independent read and write halves.
pub trait ClientStream: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    type R: AsyncRead + Unpin + Send;
    type W: AsyncWrite + Unpin + Send;
    fn split_rw(self) -> (Self::R, Self::W);
    /// Close the connection (all output has been flushed by the caller).
    fn close(r: Self::R, w: Self::W);
}

impl ClientStream for TcpStream {
    type R = OwnedReadHalf;
    type W = OwnedWriteHalf;
    fn split_rw(self) -> (Self::R, Self::W) {
        self.into_split()
    }
    fn close(r: Self::R, w: Self::W) {
        // Dropping an OwnedWriteHalf costs a shutdown(2) per client; a plain close is enough.
        w.forget();
        drop(r);
    }
}

impl ClientStream for TlsStream<TcpStream> {
    type R = ReadHalf<TlsStream<TcpStream>>;
    type W = WriteHalf<TlsStream<TcpStream>>;
    fn split_rw(self) -> (Self::R, Self::W) {
        tokio::io::split(self)
    }
    fn close(r: Self::R, w: Self::W) {
        drop((r, w));
    }
}

/// Read one whole tagged message (up to `max` bytes) from `buf`/`s`. Extra bytes stay in `buf`.
pub async fn read_message<S: AsyncRead + Unpin>(
    s: &mut S,
    buf: &mut BytesMut,
    max: usize,
) -> Result<(u8, BytesMut), PgError> {
    loop {
        if let Some(h) =
            frame::peek_header(buf).map_err(|e| PgError::protocol_violation(e.to_string()))?
        {
            if h.total() > max {
                return Err(PgError::message_too_large(h.total(), max));
            }
            if buf.len() >= h.total() {
                let mut m = buf.split_to(h.total());
                let _ = m.split_to(frame::HEADER_LEN);
                return Ok((h.tag, m));
            }
            buf.reserve(h.total() - buf.len());
        } else {
            buf.reserve(512);
        }
        match s.read_buf(buf).await {
            Ok(0) | Err(_) => {
                return Err(PgError::protocol_violation(
                    "connection closed during authentication",
                ))
            }
            Ok(_) => {}
        }
    }
}
