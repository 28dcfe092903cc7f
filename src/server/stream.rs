//! A server TLS connection over a blocking TCP socket, with the fewest
//! system calls per request: one `recv` for whatever has arrived (up to
//! RECV bytes, all of it handed to rustls at once) and one `writev` per
//! response.
//!
//! rustls' own `StreamOwned` reads at most 4 KiB per `recv`, so a 6 KB
//! review costs two; here a review up to 16 KiB arrives in one. What
//! rustls decrypts stays in rustls until read; nothing is received while
//! decrypted bytes wait, so its plaintext buffer never holds more than one
//! `recv`'s worth. The handshake is done with rustls' `complete_io` under
//! a deadline (once per connection; its system calls do not matter).
//!
//! The server uses `handshake` and still wraps the connection in rustls'
//! `StreamOwned` (moving it to `TlsStream` is open work, issue 21); the
//! floor server of `bench/floor.rs` uses both.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Instant;

use rustls::{ServerConfig, ServerConnection};

/// Bytes asked of the socket in one `recv`: one full TLS record (16 KiB
/// of plaintext) with its header and tag.
const RECV: usize = 16 * 1024 + 512;

/// TLS over a socket, after the handshake.
pub struct TlsStream {
    pub conn: ServerConnection,
    pub sock: TcpStream,
}

/// Completes a TLS handshake by `deadline`. The error says why not, for
/// the log (a refused client certificate, a timeout, a closed socket).
pub fn handshake(
    config: Arc<ServerConfig>,
    mut sock: TcpStream,
    deadline: Instant,
) -> Result<TlsStream, String> {
    let mut conn = ServerConnection::new(config).map_err(|e| e.to_string())?;
    while conn.is_handshaking() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err("timed out".into());
        }
        sock.set_read_timeout(Some(left))
            .map_err(|e| e.to_string())?;
        match conn.complete_io(&mut sock) {
            Ok((0, 0)) if conn.is_handshaking() => return Err("connection closed".into()),
            Ok(_) => {}
            Err(e) => {
                // Tell the client why, if we can (e.g. a refused certificate).
                let _ = conn.write_tls(&mut sock);
                return Err(e.to_string());
            }
        }
    }
    Ok(TlsStream { conn, sock })
}

impl TlsStream {
    /// Sends everything rustls has encrypted.
    fn send(&mut self) -> io::Result<()> {
        while self.conn.wants_write() {
            self.conn.write_tls(&mut self.sock)?;
        }
        Ok(())
    }

    /// One `recv`, all of it given to rustls. `Ok(false)` at end of stream.
    fn receive(&mut self) -> io::Result<bool> {
        let mut cipher = [0u8; RECV];
        let n = self.sock.read(&mut cipher)?;
        if n == 0 {
            // Lets rustls tell a close_notify from a cut connection.
            let _ = self.conn.read_tls(&mut &[][..]);
            return Ok(false);
        }
        let mut rest = &cipher[..n];
        while !rest.is_empty() {
            self.conn.read_tls(&mut rest)?;
            if let Err(e) = self.conn.process_new_packets() {
                // An alert for the peer, then the error.
                let _ = self.send();
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
        }
        // Key updates and the like are answered at once.
        self.send()?;
        Ok(true)
    }
}

impl Read for TlsStream {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.conn.reader().read(out) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            if !self.receive()? {
                return match self.conn.reader().read(out) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
                    r => r,
                };
            }
        }
    }
}

impl Write for TlsStream {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        loop {
            let n = self.conn.writer().write(b)?;
            if n > 0 || b.is_empty() {
                return Ok(n);
            }
            // rustls' send buffer is full: empty it first.
            self.send()?;
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.conn.writer().flush()?;
        self.send()
    }
}
