//! A slot's connection: plain TCP, or TLS after STARTTLS (RFC 3207), with owned buffers on
//! the worker's own monoio runtime.
//!
//! TLS is the server's engine, not a copy: `ringsmtpd::net::tls_connect` runs rustls'
//! `ClientConnection` over the TCP stream (`ringsmtpd::tls::TlsIo`, the code the server uses
//! for its own STARTTLS and for plugins' client STARTTLS), and `ringsmtpd::net::build_config`
//! builds the client config with the same certificate checks as the `smtp-forward` plugin.

use std::io;
use std::sync::Arc;

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use ringsmtpd::net::{build_config, tls_connect, TlsClient};
use ringsmtpd_plugin_api::net::TlsVerify;
use rustls::client::Resumption;
use rustls::ClientConfig;

use crate::config::{TlsOptions, TlsVerifyOpt};

pub enum Conn {
    Plain(TcpStream),
    Tls(Box<TlsClient<TcpStream>>),
}

impl Conn {
    /// Writes all of `buf` (plaintext; encrypted on a TLS connection).
    pub async fn write_all(&mut self, buf: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
        match self {
            Conn::Plain(s) => {
                let (res, buf) = s.write_all(buf).await;
                (res.map(|_| ()), buf)
            }
            Conn::Tls(t) => t.write_plain(buf).await,
        }
    }

    /// Reads into the spare capacity of `buf` (at least 1 KiB more on a TLS connection).
    /// `Ok(0)`: the server closed the connection.
    pub async fn read(&mut self, buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        match self {
            Conn::Plain(s) => {
                let (len, cap) = (buf.len(), buf.capacity());
                let (res, slice) = s.read(buf.slice_mut(len..cap)).await;
                (res, slice.into_inner())
            }
            Conn::Tls(t) => t.read_plain(buf).await,
        }
    }

    pub fn tcp(&self) -> Option<&TcpStream> {
        match self {
            Conn::Plain(s) => Some(s),
            Conn::Tls(_) => None,
        }
    }

    /// Runs the client handshake over a plain connection (after the server's 220 to
    /// STARTTLS). The caller bounds it with a timeout. On a TLS connection: an error.
    pub async fn start_tls(
        self,
        config: Arc<ClientConfig>,
        server_name: &str,
    ) -> io::Result<(Conn, String)> {
        let Conn::Plain(tcp) = self else {
            return Err(io::Error::other("STARTTLS on a TLS connection"));
        };
        let tls = tls_connect(tcp, config, server_name).await?;
        let info = tls.info();
        let what = format!("{} {}", info.protocol, info.cipher);
        Ok((Conn::Tls(Box::new(tls)), what))
    }
}

/// The rustls client config of a run: built once (it may read `--tls-verify`'s CA file) and
/// shared by every connection. Session resumption is off unless `--tls-resume`: every
/// session then pays for a full handshake, which is the cost being measured.
pub fn client_config(opts: &TlsOptions) -> Result<Arc<ClientConfig>, String> {
    let verify = match &opts.verify {
        TlsVerifyOpt::None => TlsVerify::None,
        TlsVerifyOpt::CaFile(p) => TlsVerify::CaFile(p.clone()),
    };
    let mut config = build_config(&verify)
        .map_err(|e| format!("--tls-verify: cannot build the TLS client: {e}"))?;
    if !opts.resume {
        config.resumption = Resumption::disabled();
    }
    Ok(Arc::new(config))
}
