//! The memory all request bodies may hold together (`--max-body-memory`),
//! charged as bytes arrive: what bounds memory besides connections × the
//! body cap, and what closes stalled requests first when it is full.

use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

/// Asked, when the budget is full, to close one stalled request somewhere
/// so that its memory comes back; true when it closed one.
pub type MakeRoom = Box<dyn Fn() -> bool + Send + Sync>;

/// Bytes of request bodies held by all connections together, charged as
/// they arrive (an announced `Content-Length` costs nothing until it is
/// sent). Without it memory would be bounded only by connections × the
/// body cap. Bytes beyond the first [`SMALL_BODY`] of a body may use only
/// three quarters of it, so that large bodies never crowd out ordinary
/// reviews; when no room is left, stalled requests are closed first
/// ([`MakeRoom`]), and a request waits at most [`ROOM_WAIT`] before 503.
pub struct BodyBudget {
    used: Mutex<Used>,
    freed: Condvar,
    limit: usize,
    make_room: OnceLock<MakeRoom>,
}

#[derive(Debug, Default)]
struct Used {
    all: usize,
    /// The part of bodies beyond their first SMALL_BODY bytes.
    large: usize,
    /// Requests waiting for room: a body given back wakes them only if
    /// there are any (a condvar notify is a system call even when nobody
    /// waits).
    waiting: usize,
}

/// The start of every body that is charged to the whole budget; an
/// ImageReview or a Pod review fits in it.
pub const SMALL_BODY: usize = 64 * 1024;
/// Longest a request waits for room before it is refused: far below the
/// apiserver's webhook timeout, so a full budget shows as a quick 503 (a
/// denial, for ImageReview) instead of a stall.
pub const ROOM_WAIT: Duration = Duration::from_millis(250);

/// Room for one request's body; given back when dropped.
#[derive(Debug)]
pub struct BodyPermit {
    budget: Arc<BodyBudget>,
    bytes: usize,
}

impl std::fmt::Debug for BodyBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BodyBudget({} bytes)", self.limit)
    }
}

fn large_part(bytes: usize) -> usize {
    bytes.saturating_sub(SMALL_BODY)
}

impl BodyBudget {
    pub fn new(limit: usize) -> Arc<BodyBudget> {
        Arc::new(BodyBudget {
            used: Mutex::new(Used::default()),
            freed: Condvar::new(),
            limit,
            make_room: OnceLock::new(),
        })
    }

    /// Installs what closes stalled requests when the budget is full.
    pub fn on_full(&self, make_room: MakeRoom) {
        let _ = self.make_room.set(make_room);
    }

    fn large_limit(&self) -> usize {
        self.limit / 4 * 3
    }

    /// Grows `permit` (a new one if `None`) to `total` bytes, waiting for
    /// room at most [`ROOM_WAIT`] and never past `deadline`. A body larger
    /// than the whole budget still gets through, alone.
    pub(super) fn charge(
        self: &Arc<Self>,
        permit: &mut Option<BodyPermit>,
        total: usize,
        deadline: Instant,
    ) -> bool {
        let held = permit.as_ref().map_or(0, |p| p.bytes);
        if total <= held {
            return true;
        }
        let (more, more_large) = (total - held, large_part(total) - large_part(held));
        // When to stop waiting for room, known once there is a wait.
        let mut give_up = None;
        let mut asked = false;
        let mut used = self.used.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            let alone = used.all == held;
            let fits =
                used.all + more <= self.limit && used.large + more_large <= self.large_limit();
            if fits || alone {
                used.all += more;
                used.large += more_large;
                match permit {
                    Some(p) => p.bytes = total,
                    None => {
                        *permit = Some(BodyPermit {
                            budget: self.clone(),
                            bytes: total,
                        })
                    }
                }
                return true;
            }
            if !asked {
                asked = true;
                if let Some(make_room) = self.make_room.get() {
                    drop(used);
                    make_room();
                    used = self.used.lock().unwrap_or_else(PoisonError::into_inner);
                    continue;
                }
            }
            let give_up = *give_up.get_or_insert_with(|| deadline.min(Instant::now() + ROOM_WAIT));
            let left = give_up.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            used.waiting += 1;
            used = self
                .freed
                .wait_timeout(used, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
            used.waiting -= 1;
        }
    }

    /// Bytes held now (for metrics and tests).
    pub fn used(&self) -> usize {
        self.used.lock().unwrap_or_else(PoisonError::into_inner).all
    }
}

impl Drop for BodyPermit {
    fn drop(&mut self) {
        let mut used = self
            .budget
            .used
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        used.all = used.all.saturating_sub(self.bytes);
        used.large = used.large.saturating_sub(large_part(self.bytes));
        let wake = used.waiting > 0;
        drop(used);
        if wake {
            self.budget.freed.notify_all();
        }
    }
}
