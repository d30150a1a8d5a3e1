//! A server connection's byte stream: plain TCP, TLS over it, or a Unix-domain socket.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio_rustls::client::TlsStream;

#[derive(Debug)]
pub enum ServerStream {
    Plain(TcpStream),
    /// Boxed: the TLS state is large and most connections have none.
    Tls(Box<TlsStream<TcpStream>>),
    /// A server on the same host, reached through its socket file (never encrypted, as
    /// with libpq).
    Unix(UnixStream),
}

impl ServerStream {
    #[inline]
    pub fn is_tls(&self) -> bool {
        matches!(self, ServerStream::Tls(_))
    }

    /// Non-blocking check that an idle connection is open and silent. Over TLS the raw
    /// socket is read: anything there (a FATAL, a close_notify) already makes it unusable.
    pub fn is_quiet(&self) -> bool {
        let mut b = [0u8; 1];
        let read = match self {
            ServerStream::Plain(s) => s.try_read(&mut b),
            ServerStream::Tls(s) => s.get_ref().0.try_read(&mut b),
            ServerStream::Unix(s) => s.try_read(&mut b),
        };
        match read {
            Err(e) => e.kind() == io::ErrorKind::WouldBlock,
            Ok(_) => false, // EOF, or unsolicited bytes
        }
    }
}

// Inlined into the relay loop, with the TLS paths out of line: the plain socket's reads
// and writes cost what they did before the stream could be TLS.
impl AsyncRead for ServerStream {
    #[inline]
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ServerStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            ServerStream::Tls(s) => tls_read(s, cx, buf),
            ServerStream::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

#[inline(never)]
fn tls_read(
    s: &mut TlsStream<TcpStream>,
    cx: &mut Context<'_>,
    buf: &mut ReadBuf<'_>,
) -> Poll<io::Result<()>> {
    Pin::new(s).poll_read(cx, buf)
}

#[inline(never)]
fn tls_write(
    s: &mut TlsStream<TcpStream>,
    cx: &mut Context<'_>,
    buf: &[u8],
) -> Poll<io::Result<usize>> {
    Pin::new(s).poll_write(cx, buf)
}

impl AsyncWrite for ServerStream {
    #[inline]
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ServerStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            ServerStream::Tls(s) => tls_write(s, cx, buf),
            ServerStream::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    #[inline]
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ServerStream::Plain(_) | ServerStream::Unix(_) => Poll::Ready(Ok(())),
            ServerStream::Tls(s) => Pin::new(&mut **s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ServerStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            ServerStream::Tls(s) => Pin::new(&mut **s).poll_shutdown(cx),
            ServerStream::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}
