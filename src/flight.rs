//! Remembered answers by key, each until its own time, with at most one
//! computation under way per key: later askers wait for the first one's
//! answer instead of asking again (the registry's tag lookups and the
//! signature verdicts). A full table drops what has expired, then the
//! lowest-ranked, least recently used entries — a share of them, never
//! all — so that whoever floods it with new keys pushes out what is
//! least asked for, not everyone's.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// What a computation yields: the answer, and how long to remember it.
/// An answer not remembered (`keep: None`) is the asker's own — its time
/// ran out, its registry failed it — and no answer for those waiting on
/// it: they ask again while they have time.
pub struct Outcome<V> {
    pub value: V,
    pub keep: Option<Duration>,
}

/// Where an answer came from.
pub enum Got<V> {
    Remembered(V),
    /// Computed by this asker.
    Ran(V),
    /// Computed by another asker, waited for.
    Waited(V),
    /// The deadline came while waiting for another asker's computation.
    TimedOut,
}

struct Entry<V> {
    value: V,
    until: Instant,
    /// When it was last asked for (a counter, not a clock).
    used: u64,
}

struct Table<K, V> {
    entries: HashMap<K, Entry<V>>,
    tick: u64,
}

/// One computation under way: its answer once there, and whether it is
/// for the waiters too (it was remembered).
struct Flight<V> {
    answer: Mutex<Option<(V, bool)>>,
    done: Condvar,
}

pub struct Flights<K, V> {
    table: Mutex<Table<K, V>>,
    inflight: Mutex<HashMap<K, Arc<Flight<V>>>>,
    max: usize,
    /// Which entries a full table drops first (lower first), before the
    /// least recently used.
    rank: fn(&V) -> u8,
}

impl<K: Eq + Hash + Clone, V: Clone> Flights<K, V> {
    /// At most `max` remembered answers.
    pub fn new(max: usize, rank: fn(&V) -> u8) -> Self {
        Flights {
            table: Mutex::new(Table {
                entries: HashMap::new(),
                tick: 0,
            }),
            inflight: Mutex::new(HashMap::new()),
            max: max.max(1),
            rank,
        }
    }

    /// The remembered answer for `key`, if it has not expired.
    pub fn remembered(&self, key: &K) -> Option<V> {
        let mut t = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        t.tick += 1;
        let tick = t.tick;
        let e = t
            .entries
            .get_mut(key)
            .filter(|e| e.until > Instant::now())?;
        e.used = tick;
        Some(e.value.clone())
    }

    /// Remembers `value` for `keep`.
    pub fn remember(&self, key: K, value: V, keep: Duration) {
        let mut t = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        if t.entries.len() >= self.max && !t.entries.contains_key(&key) {
            let now = Instant::now();
            t.entries.retain(|_, e| e.until > now);
            if t.entries.len() >= self.max {
                let mut order: Vec<(u8, u64, K)> = t
                    .entries
                    .iter()
                    .map(|(k, e)| ((self.rank)(&e.value), e.used, k.clone()))
                    .collect();
                order.sort_unstable_by_key(|(rank, used, _)| (*rank, *used));
                for (_, _, k) in order.into_iter().take((self.max / 16).max(1)) {
                    t.entries.remove(&k);
                }
            }
        }
        t.tick += 1;
        let used = t.tick;
        t.entries.insert(
            key,
            Entry {
                value,
                until: Instant::now() + keep,
                used,
            },
        );
    }

    /// How many answers are remembered (expired ones included).
    pub fn len(&self) -> usize {
        self.table
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entries
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The answer for `key`: remembered, or the one under way (waited for
    /// until `deadline`), or `run`'s, which the first asker computes for
    /// everyone asking meanwhile.
    pub fn get(&self, key: K, deadline: Instant, run: impl FnOnce() -> Outcome<V>) -> Got<V> {
        let mut run = Some(run);
        loop {
            if let Some(v) = self.remembered(&key) {
                return Got::Remembered(v);
            }
            #[cfg(test)]
            tests::between_looks();
            let (flight, leader) = {
                let mut inflight = self.inflight.lock().unwrap_or_else(PoisonError::into_inner);
                match inflight.get(&key) {
                    Some(f) => (f.clone(), false),
                    // Asked again under the table's lock: a leader remembers
                    // its answer before its flight leaves the table, so an
                    // asker that missed the answer above and finds no
                    // flight now finds the answer (preempted between the two
                    // looks, it would otherwise compute it again).
                    None if let Some(v) = self.remembered(&key) => return Got::Remembered(v),
                    None => {
                        let f = Arc::new(Flight {
                            answer: Mutex::new(None),
                            done: Condvar::new(),
                        });
                        inflight.insert(key.clone(), f.clone());
                        (f, true)
                    }
                }
            };
            if leader {
                // Only one asker leads a flight, and a leader returns.
                let Some(run) = run.take() else {
                    return Got::TimedOut;
                };
                return Got::Ran(self.lead(&key, &flight, run));
            }
            match wait(&flight, deadline) {
                None => return Got::TimedOut,
                Some((v, true)) => return Got::Waited(v),
                // Not an answer for this asker: ask again while there is time.
                Some((_, false)) if Instant::now() < deadline => {}
                Some(_) => return Got::TimedOut,
            }
        }
    }

    fn lead(&self, key: &K, flight: &Flight<V>, run: impl FnOnce() -> Outcome<V>) -> V {
        // Whatever happens in `run` (a panic included), the flight leaves
        // the table and its waiters wake.
        struct Land<'a, K: Eq + Hash, V> {
            flights: &'a Flights<K, V>,
            key: &'a K,
            flight: &'a Flight<V>,
        }
        impl<K: Eq + Hash, V> Drop for Land<'_, K, V> {
            fn drop(&mut self) {
                self.flights
                    .inflight
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(self.key);
                self.flight.done.notify_all();
            }
        }
        let land = Land {
            flights: self,
            key,
            flight,
        };
        let out = run();
        // Remembered before the flight leaves the table, so that a new
        // asker finds one or the other.
        if let Some(keep) = out.keep {
            self.remember(key.clone(), out.value.clone(), keep);
        }
        *flight.answer.lock().unwrap_or_else(PoisonError::into_inner) =
            Some((out.value.clone(), out.keep.is_some()));
        drop(land);
        out.value
    }
}

/// The flight's answer, or `None` at the deadline (also when its leader
/// panicked: nothing comes).
fn wait<V: Clone>(flight: &Flight<V>, deadline: Instant) -> Option<(V, bool)> {
    let mut answer = flight.answer.lock().unwrap_or_else(PoisonError::into_inner);
    while answer.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        answer = flight
            .done
            .wait_timeout(answer, left)
            .unwrap_or_else(PoisonError::into_inner)
            .0;
    }
    answer.clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::sync::atomic::{AtomicUsize, Ordering};

    thread_local! {
        /// Runs once on this thread between an asker's two looks.
        static BETWEEN: RefCell<Option<Box<dyn FnOnce()>>> = RefCell::new(None);
    }

    pub(super) fn between_looks() {
        if let Some(f) = BETWEEN.with(|b| b.borrow_mut().take()) {
            f();
        }
    }

    /// An asker that misses the answer, and is then held up while another
    /// asker computes and remembers it, takes that answer: it does not
    /// compute it again (a second registry request, seen under load).
    #[test]
    fn an_answer_remembered_between_the_two_looks_is_taken() {
        let flights: Arc<Flights<&str, u32>> = Arc::new(Flights::new(16, |_| 0));
        let runs = Arc::new(AtomicUsize::new(0));
        let deadline = Instant::now() + Duration::from_secs(30);
        let (f, r) = (flights.clone(), runs.clone());
        BETWEEN.with(|b| {
            *b.borrow_mut() = Some(Box::new(move || {
                std::thread::spawn(move || {
                    f.get("k", deadline, || {
                        r.fetch_add(1, Ordering::SeqCst);
                        day()
                    })
                })
                .join()
                .map(|_| ())
                .unwrap();
            }));
        });
        let got = flights.get("k", deadline, || {
            runs.fetch_add(1, Ordering::SeqCst);
            day()
        });
        assert!(got.is_remembered(), "computed again");
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }

    fn day() -> Outcome<u32> {
        Outcome {
            value: 7,
            keep: Some(Duration::from_secs(86_400)),
        }
    }

    /// Many askers at once: one computation, everyone gets its answer,
    /// and it is then remembered.
    #[test]
    fn one_computation_for_many_askers() {
        let flights: Flights<&str, u32> = Flights::new(16, |_| 0);
        let runs = AtomicUsize::new(0);
        let deadline = Instant::now() + Duration::from_secs(30);
        std::thread::scope(|s| {
            for _ in 0..32 {
                s.spawn(|| {
                    let got = flights.get("k", deadline, || {
                        runs.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(50));
                        day()
                    });
                    assert!(matches!(
                        got,
                        Got::Ran(7) | Got::Waited(7) | Got::Remembered(7)
                    ));
                });
            }
        });
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert!(matches!(
            flights.get("k", deadline, day),
            Got::Remembered(7)
        ));
    }

    /// An answer not remembered is not the waiters': they compute their own.
    #[test]
    fn an_answer_not_remembered_is_asked_again() {
        let flights: Flights<&str, u32> = Flights::new(16, |_| 0);
        let deadline = Instant::now() + Duration::from_secs(30);
        let started = std::sync::Barrier::new(2);
        std::thread::scope(|s| {
            s.spawn(|| {
                let got = flights.get("k", deadline, || {
                    started.wait();
                    std::thread::sleep(Duration::from_millis(100));
                    Outcome {
                        value: 1,
                        keep: None,
                    }
                });
                assert!(matches!(got, Got::Ran(1)));
            });
            started.wait();
            let got = flights.get("k", deadline, day);
            assert!(matches!(got, Got::Ran(7)), "the waiter ran its own");
        });
        assert!(flights.get("k", deadline, day).is_remembered());
    }

    /// A full table drops expired entries, then the lowest-ranked least
    /// recently used, never all.
    #[test]
    fn a_full_table_drops_the_least_used_lowest_ranked() {
        let flights: Flights<u32, u32> = Flights::new(64, |v| u8::from(*v > 0));
        let day = Duration::from_secs(86_400);
        flights.remember(0, 1, day);
        for k in 1..200 {
            assert!(flights.remembered(&0).is_some(), "lost the one in use");
            flights.remember(k, 0, day);
        }
        assert!((60..=64).contains(&flights.len()), "{}", flights.len());
        assert!(flights.remembered(&199).is_some());
        assert!(flights.remembered(&1).is_none());
        // Rank: a ranked-higher entry outlives lower ones it was not used
        // more recently than.
        let ranked: Flights<u32, u32> = Flights::new(16, |v| u8::from(*v > 0));
        ranked.remember(0, 1, day);
        for k in 1..40 {
            ranked.remember(k, 0, day);
        }
        assert_eq!(ranked.remembered(&0), Some(1));
    }

    /// Waiting ends at the deadline.
    #[test]
    fn a_waiter_stops_at_its_deadline() {
        let flights: Flights<&str, u32> = Flights::new(16, |_| 0);
        let started = std::sync::Barrier::new(2);
        std::thread::scope(|s| {
            s.spawn(|| {
                flights.get("k", Instant::now() + Duration::from_secs(30), || {
                    started.wait();
                    std::thread::sleep(Duration::from_millis(300));
                    day()
                });
            });
            started.wait();
            let got = flights.get("k", Instant::now() + Duration::from_millis(20), day);
            assert!(matches!(got, Got::TimedOut));
        });
    }

    impl<V> Got<V> {
        fn is_remembered(&self) -> bool {
            matches!(self, Got::Remembered(_))
        }
    }
}
