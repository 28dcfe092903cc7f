//! Per-thread scratch buffers for socket reads, zeroed once per thread
//! rather than once per read: a read lands here and only the bytes that
//! arrived are kept by the caller, so a request no longer pays for zeroing
//! 20 KiB it never uses. The price: a thread keeps its 33 KiB while it
//! lives, and with a thread per connection an idle connection's thread
//! holds them (the connection itself holds no receive buffer).

use std::cell::RefCell;

/// The size of each buffer: the largest read made through one.
pub const LEN: usize = 16 * 1024 + 512;

/// Which buffer. A plaintext read can receive ciphertext while it runs,
/// so the two are used nested and each has its own.
#[derive(Debug, Clone, Copy)]
pub enum Scratch {
    Cipher,
    Plain,
}

thread_local! {
    static CIPHER: RefCell<Box<[u8]>> = RefCell::new(vec![0; LEN].into_boxed_slice());
    static PLAIN: RefCell<Box<[u8]>> = RefCell::new(vec![0; LEN].into_boxed_slice());
}

/// Runs `f` on the first `len` bytes (at most [`LEN`]) of this thread's
/// `which` buffer. Their content is whatever an earlier read left there,
/// never uninitialised memory. Should the buffer be in use already (it is
/// not: neither user re-enters itself), `f` gets a fresh zeroed one.
pub fn with<R>(which: Scratch, len: usize, f: impl FnOnce(&mut [u8]) -> R) -> R {
    let len = len.min(LEN);
    let key = match which {
        Scratch::Cipher => &CIPHER,
        Scratch::Plain => &PLAIN,
    };
    key.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => f(&mut buf[..len]),
        Err(_) => f(&mut vec![0; len]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_use_of_the_same_buffer_gets_its_own() {
        let outer = with(Scratch::Plain, 8, |a| {
            a.fill(1);
            let inner = with(Scratch::Plain, 8, |b| {
                // A fresh buffer, not the outer one.
                assert_eq!(b, &[0; 8]);
                b.fill(2);
                b.len()
            });
            assert_eq!(a, &[1; 8], "the inner use wrote into the outer buffer");
            inner + with(Scratch::Cipher, 4, |c| c.len())
        });
        assert_eq!(outer, 12);
        // The length is capped at the buffer's size.
        assert_eq!(with(Scratch::Cipher, LEN * 2, |c| c.len()), LEN);
    }
}
