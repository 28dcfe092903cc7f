//! A server TLS connection over a blocking TCP socket, with the fewest
//! system calls per request: one `recv` for whatever has arrived (up to
//! [`RECV`] bytes) and one `writev` per response.
//!
//! rustls' own `StreamOwned` reads at most 4 KiB per `recv`, so a 6 KB
//! review costs two; here a review up to 16 KiB arrives in one. rustls
//! refuses more ciphertext once it holds over 16 KiB of plaintext not yet
//! read, so what was received is handed to it only while its plaintext is
//! empty, and the rest waits here: it holds at most one `recv` of
//! ciphertext and what rustls decrypted from it, never more, and nothing
//! of its own once all that arrived is read (the `recv` lands in the
//! thread's [`scratch`] buffer). The
//! handshake is done with rustls' `complete_io` under a deadline (once per
//! connection; its system calls do not matter).

use std::io::{self, BufRead, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Instant;

use rustls::{ServerConfig, ServerConnection};

use super::scratch;

/// Bytes asked of the socket in one `recv`: one full TLS record (16 KiB
/// of plaintext) with its header and tag.
const RECV: usize = scratch::LEN;

/// TLS over a socket, after the handshake.
pub struct TlsStream {
    pub conn: ServerConnection,
    pub sock: TcpStream,
    /// Received and not yet given to rustls; empty and unallocated once
    /// all that arrived was handed over.
    waiting: Vec<u8>,
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
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                // Tell the client why, if we can (e.g. a refused certificate).
                let _ = conn.write_tls(&mut sock);
                return Err(e.to_string());
            }
        }
    }
    Ok(TlsStream {
        conn,
        sock,
        waiting: Vec::new(),
    })
}

impl TlsStream {
    /// Sends everything rustls has encrypted.
    fn send(&mut self) -> io::Result<()> {
        while self.conn.wants_write() {
            // A signal or a tracer interrupts it: a socket with a send
            // timeout is not restarted by the kernel (signal(7)).
            if let Err(e) = self.conn.write_tls(&mut self.sock)
                && e.kind() != io::ErrorKind::Interrupted
            {
                return Err(e);
            }
        }
        Ok(())
    }

    /// Gives rustls what was received, until it has plaintext to read;
    /// receives first if nothing waits. `Ok(false)` at end of stream.
    fn receive(&mut self) -> io::Result<bool> {
        if self.waiting.is_empty() {
            // Into the thread's scratch buffer: only what rustls cannot
            // take yet is kept.
            let open = scratch::with(RECV, |cipher| {
                let n = self.sock.read(cipher)?;
                if n == 0 {
                    // Lets rustls tell a close_notify from a cut connection.
                    let _ = self.conn.read_tls(&mut &[][..]);
                    return Ok(false);
                }
                let fed = self.feed(&cipher[..n])?;
                self.waiting = cipher[fed..n].to_vec();
                Ok::<_, io::Error>(true)
            })?;
            if !open {
                return Ok(false);
            }
        } else {
            let mut waiting = std::mem::take(&mut self.waiting);
            let fed = self.feed(&waiting)?;
            waiting.drain(..fed);
            if !waiting.is_empty() {
                self.waiting = waiting;
            }
        }
        // Key updates and the like are answered at once.
        self.send()?;
        Ok(true)
    }

    /// Hands `cipher` to rustls until it has plaintext to read (or all of
    /// it is taken); returns how many bytes it took.
    fn feed(&mut self, cipher: &[u8]) -> io::Result<usize> {
        let mut fed = 0;
        while fed < cipher.len() {
            let n = self.conn.read_tls(&mut &cipher[fed..])?;
            fed += n;
            match self.conn.process_new_packets() {
                Ok(state) if state.plaintext_bytes_to_read() > 0 => break,
                Ok(_) => {}
                Err(e) => {
                    // An alert for the peer, then the error.
                    let _ = self.send();
                    return Err(io::Error::new(io::ErrorKind::InvalidData, e));
                }
            }
            if n == 0 {
                break;
            }
        }
        Ok(fed)
    }

    /// Appends at most `max` bytes of plaintext to `buf`, receiving first
    /// if rustls holds none; `Ok(0)` at a clean end of stream. rustls'
    /// plaintext is copied straight into `buf`: no buffer in between.
    pub fn read_append(&mut self, buf: &mut Vec<u8>, max: usize) -> io::Result<usize> {
        let mut ended = false;
        loop {
            let mut taken = 0;
            while taken < max {
                let mut reader = self.conn.reader();
                let chunk = match reader.fill_buf() {
                    Ok(chunk) => chunk,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    // Reported by the next read; this one has bytes.
                    Err(_) if taken > 0 => break,
                    // After the end of stream, a cut connection: rustls
                    // tells it from a close_notify.
                    Err(e) => return Err(e),
                };
                if chunk.is_empty() {
                    // A close_notify: nothing more will come.
                    return Ok(taken);
                }
                let n = chunk.len().min(max - taken);
                buf.extend_from_slice(&chunk[..n]);
                reader.consume(n);
                taken += n;
            }
            // Bytes, nothing asked, or the stream ended with nothing left.
            if taken > 0 || max == 0 || ended {
                return Ok(taken);
            }
            ended = !self.receive()?;
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use std::net::TcpListener;
    use std::time::Duration;

    /// Full records and small ones, sent all at once: a `recv` that ends a
    /// full record and holds small ones after it holds more plaintext than
    /// rustls keeps unread (16 KiB), and all of it is read, in order.
    #[test]
    fn more_plaintext_in_one_recv_than_rustls_holds() {
        let set = crate::certs::generate(&["localhost".into()], &[], 1).unwrap();
        let provider = crate::server::tls::provider;
        let server = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from_pem_slice(set.server_cert.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(set.server_key.as_bytes()).unwrap(),
            )
            .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let message: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let sent = message.clone();
        let (read, all_read) = std::sync::mpsc::channel::<()>();
        let client = std::thread::spawn(move || {
            let mut roots = rustls::RootCertStore::empty();
            roots
                .add(CertificateDer::from_pem_slice(set.ca_cert.as_bytes()).unwrap())
                .unwrap();
            let config = rustls::ClientConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
            let name = ServerName::try_from("localhost").unwrap();
            let mut conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
            let mut sock = TcpStream::connect(addr).unwrap();
            while conn.is_handshaking() {
                conn.complete_io(&mut sock).unwrap();
            }
            // A 16 KiB record, then forty of 100 bytes, and again; all
            // encrypted before any is sent.
            conn.set_buffer_limit(None);
            let mut rest = &sent[..];
            while !rest.is_empty() {
                for size in std::iter::once(16_384).chain([100; 40]) {
                    let (record, after) = rest.split_at(size.min(rest.len()));
                    conn.writer().write_all(record).unwrap();
                    rest = after;
                }
            }
            conn.send_close_notify();
            while conn.wants_write() {
                conn.write_tls(&mut sock).unwrap();
            }
            // Closing with the server's tickets unread would reset the
            // connection, and the server could lose what it had not read.
            all_read.recv().unwrap();
        });
        let (sock, _) = listener.accept().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        sock.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut tls = handshake(Arc::new(server), sock, deadline).unwrap();
        let mut got = Vec::new();
        tls.read_to_end(&mut got).unwrap();
        read.send(()).unwrap();
        client.join().unwrap();
        assert_eq!(got.len(), message.len());
        assert!(got == message, "the bytes differ");
    }
}
