//! The per-thread scratch buffer that TLS records (and plain sockets'
//! reads) are received into, zeroed once per thread rather than once per
//! `recv`: a read lands here and only the bytes that arrived are kept, so
//! a request does not pay for zeroing 16.5 KiB it never uses. The price: a
//! connection thread keeps the pages a `recv` has written (at most
//! 16.5 KiB, a review's size for most) while it lives, idle or not.
//! rustls' plaintext needs no such buffer: it is appended to the request
//! buffer directly.

use std::cell::RefCell;

/// The buffer's size: the largest read made through it.
pub const LEN: usize = 16 * 1024 + 512;

thread_local! {
    static BUFFER: RefCell<Box<[u8]>> = RefCell::new(vec![0; LEN].into_boxed_slice());
}

/// Runs `f` on the first `len` bytes (at most [`LEN`]) of this thread's
/// buffer. Their content is whatever an earlier read left there, never
/// uninitialised memory. Should the buffer be in use already (it is not:
/// neither user re-enters itself, and a plain socket has no TLS under
/// it), `f` gets a fresh zeroed one.
pub fn with<R>(len: usize, f: impl FnOnce(&mut [u8]) -> R) -> R {
    let len = len.min(LEN);
    BUFFER.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => f(&mut buf[..len]),
        Err(_) => f(&mut vec![0; len]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_use_of_the_same_buffer_gets_its_own() {
        let outer = with(8, |a| {
            a.fill(1);
            let inner = with(8, |b| {
                // A fresh buffer, not the outer one.
                assert_eq!(b, &[0; 8]);
                b.fill(2);
                b.len()
            });
            assert_eq!(a, &[1; 8], "the inner use wrote into the outer buffer");
            inner
        });
        assert_eq!(outer, 8);
        // The length is capped at the buffer's size.
        assert_eq!(with(LEN * 2, |c| c.len()), LEN);
    }
}
