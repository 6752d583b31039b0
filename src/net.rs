//! Outbound connections for plugins: the worker's side of `ringsmtpd_plugin_api::net`.
//! Connections run on the worker's runtime (io_uring or epoll), so a plugin waiting on a
//! downstream MTA or a scanner never blocks its core.

use std::io;
use std::time::Duration;

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use ringsmtpd_plugin_api::net::{ConnectFuture, Endpoint, IoFuture, Stream, TlsVerify};

/// Opens `to` within `timeout`.
pub fn connect(to: &Endpoint, timeout: Duration) -> ConnectFuture {
    let to = to.clone();
    Box::pin(async move {
        let open = async {
            Ok::<Box<dyn Stream>, io::Error>(match &to {
                Endpoint::Tcp(addr) => {
                    let s = monoio::net::TcpStream::connect_addr(*addr).await?;
                    let _ = s.set_nodelay(true);
                    Box::new(Plain(s))
                }
                Endpoint::Unix(path) => {
                    Box::new(Plain(monoio::net::UnixStream::connect(path).await?))
                }
            })
        };
        match monoio::time::timeout(timeout, open).await {
            Ok(result) => result,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("connecting to {to} timed out"),
            )),
        }
    })
}

/// A plain TCP or Unix stream.
pub struct Plain<S>(pub S);

impl<S: AsyncReadRent + monoio::io::AsyncWriteRent + 'static> Stream for Plain<S> {
    fn read(&mut self, buf: Vec<u8>) -> IoFuture<'_, usize> {
        Box::pin(async move {
            let len = buf.len();
            let (res, slice) = self.0.read(buf.slice_mut(len..)).await;
            (res, slice.into_inner())
        })
    }

    fn write_all(&mut self, buf: Vec<u8>) -> IoFuture<'_, ()> {
        Box::pin(async move {
            let (res, buf) = AsyncWriteRentExt::write_all(&mut self.0, buf).await;
            (res.map(|_| ()), buf)
        })
    }

    fn start_tls(
        self: Box<Self>,
        _server_name: String,
        _verify: TlsVerify,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = io::Result<Box<dyn Stream>>>>> {
        // Client TLS (STARTTLS to a downstream) comes with the queue plugins (issue 4).
        Box::pin(std::future::ready(Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "client TLS is not available yet",
        ))))
    }
}
