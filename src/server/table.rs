//! The table of open connections: by id, with how many each client
//! address holds, and which one is cheapest to close when room is needed
//! (handshakes, idle keep-alives, stalled requests — never a request being
//! judged).

use std::collections::HashMap;
use std::net::{IpAddr, TcpStream};
use std::sync::Arc;

use super::Settings;
use super::http::{self, Activity, State};
use crate::metrics::Metrics;
use log::debug;

/// A connection as the table sees it: to close it on shutdown or to make
/// room.
pub(super) struct Tracked {
    pub(super) socket: TcpStream,
    pub(super) peer: IpAddr,
    pub(super) activity: Arc<Activity>,
}

/// Open connections, by id, and how many each client address holds.
#[derive(Default)]
pub(super) struct Table {
    pub(super) conns: HashMap<u64, Tracked>,
    per_peer: HashMap<IpAddr, usize>,
}

/// A request still arriving after this long, while room is needed, is
/// cheaper to close than anything else left (real ones take milliseconds).
const SLOW_REQUEST_MS: u64 = 250;

impl Table {
    pub(super) fn insert(&mut self, id: u64, t: Tracked) {
        *self.per_peer.entry(t.peer).or_default() += 1;
        self.conns.insert(id, t);
    }

    pub(super) fn remove(&mut self, id: u64) -> Option<Tracked> {
        let t = self.conns.remove(&id)?;
        if let Some(n) = self.per_peer.get_mut(&t.peer) {
            *n -= 1;
            if *n == 0 {
                self.per_peer.remove(&t.peer);
            }
        }
        Some(t)
    }

    /// The connection cheapest to close, among those `of` accepts: the
    /// oldest handshake, else the longest idle keep-alive, else the oldest
    /// request still arriving (past SLOW_REQUEST_MS). Requests being judged
    /// or answered are never chosen.
    pub(super) fn cheapest(&self, of: impl Fn(&Tracked) -> bool) -> Option<u64> {
        let now = http::now_ms();
        self.conns
            .iter()
            .filter(|(_, t)| of(t))
            .filter_map(|(id, t)| {
                let a = &t.activity;
                let since = a.since();
                match a.state() {
                    State::Working => None,
                    State::Reading if now.saturating_sub(since) < SLOW_REQUEST_MS => None,
                    state => Some(((state, since), *id)),
                }
            })
            .min()
            .map(|(_, id)| id)
    }

    /// Closes a connection: its thread sees the socket shut and ends.
    pub(super) fn evict(&mut self, id: u64, metrics: &Metrics) {
        if let Some(t) = self.remove(id) {
            let _ = t.socket.shutdown(std::net::Shutdown::Both);
            metrics.connection_evicted();
            debug!("closed a connection from {} to make room", t.peer);
        }
    }

    /// Makes room for a new connection from `peer`: closes that client's
    /// own cheapest connection when it is at its limit, or the cheapest of
    /// all when the table is full. False when nothing could be closed.
    pub(super) fn make_room_for(&mut self, peer: IpAddr, s: &Settings, metrics: &Metrics) -> bool {
        if self.per_peer.get(&peer).copied().unwrap_or(0) >= s.max_connections_per_peer {
            match self.cheapest(|t| t.peer == peer) {
                Some(id) => self.evict(id, metrics),
                None => return false,
            }
        }
        if self.conns.len() >= s.max_connections {
            match self.cheapest(|_| true) {
                Some(id) => self.evict(id, metrics),
                None => return false,
            }
        }
        true
    }

    /// Under body-memory pressure: closes the request that has held body
    /// memory longest while still arriving. True when one was closed.
    pub(super) fn close_slowest_body(&mut self, metrics: &Metrics) -> bool {
        let now = http::now_ms();
        let victim = self
            .conns
            .iter()
            .filter(|(_, t)| {
                let a = &t.activity;
                a.state() == State::Reading
                    && a.held() > 0
                    && now.saturating_sub(a.since()) >= SLOW_REQUEST_MS
            })
            .min_by_key(|(_, t)| t.activity.since())
            .map(|(id, _)| *id);
        match victim {
            Some(id) => {
                self.evict(id, metrics);
                true
            }
            None => false,
        }
    }
}
