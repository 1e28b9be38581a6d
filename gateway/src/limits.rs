//! Bounds per workload (a leaf module: it imports nothing of ours): how many connections — or
//! DNS queries in flight — one calling cgroup may hold, and how many all of them may, so that
//! one workload flooding the gateway is refused while everyone else is served. The key is the
//! caller's cgroup id as the kernel reported it (not forgeable); a place is held until its
//! `Admitted` is dropped, whatever path ends it.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error("the calling cgroup is at its bound ({0} at once)")]
    Workload(usize),
    #[error("the gateway is at its bound ({0} at once)")]
    Total(usize),
}

#[derive(Debug)]
struct Counts {
    total: usize,
    per: HashMap<u64, usize>,
}

/// Open connections, counted per cgroup and in all.
#[derive(Debug)]
pub struct Limits {
    per_workload: usize,
    total: usize,
    counts: Mutex<Counts>,
}

/// A connection's place; given back on drop.
#[derive(Debug)]
pub struct Admitted {
    limits: Arc<Limits>,
    cgroup: u64,
}

impl Limits {
    /// `per_workload` and `max_connections` as configured (0 = derived): the total from the
    /// descriptor limit (two per connection, 256 kept for the daemon), a workload a quarter.
    pub fn new(per_workload: usize, max_connections: usize, nofile: u64) -> Self {
        let total = if max_connections == 0 {
            (nofile.saturating_sub(256) / 2).clamp(64, 1 << 20) as usize
        } else {
            max_connections
        };
        let per_workload = if per_workload == 0 {
            (total / 4).max(16)
        } else {
            per_workload
        };
        Self {
            per_workload,
            total,
            counts: Mutex::new(Counts {
                total: 0,
                per: HashMap::new(),
            }),
        }
    }

    pub fn per_workload(&self) -> usize {
        self.per_workload
    }

    pub fn total(&self) -> usize {
        self.total
    }

    /// Take a place for a connection from `cgroup`, or say which bound it would cross.
    pub fn admit(self: &Arc<Self>, cgroup: u64) -> Result<Admitted, LimitError> {
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let mine = c.per.get(&cgroup).copied().unwrap_or(0);
        if mine >= self.per_workload {
            return Err(LimitError::Workload(self.per_workload));
        }
        if c.total >= self.total {
            return Err(LimitError::Total(self.total));
        }
        c.total += 1;
        *c.per.entry(cgroup).or_insert(0) += 1;
        Ok(Admitted {
            limits: self.clone(),
            cgroup,
        })
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut c = self.limits.counts.lock().unwrap_or_else(|p| p.into_inner());
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.per.get_mut(&self.cgroup) {
            *n -= 1;
            if *n == 0 {
                c.per.remove(&self.cgroup);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_cgroup_is_bounded_others_are_not_and_places_come_back() {
        let l = Arc::new(Limits::new(3, 5, 0));
        let a: Vec<_> = (0..3).map(|_| l.admit(7).unwrap()).collect();
        assert_eq!(l.admit(7).unwrap_err(), LimitError::Workload(3));
        let b1 = l.admit(8).unwrap();
        let b2 = l.admit(8).unwrap();
        assert_eq!(l.admit(9).unwrap_err(), LimitError::Total(5));
        drop(a);
        assert!(
            l.admit(7).is_ok(),
            "a closed connection gives its place back"
        );
        drop((b1, b2));
        assert!(l.counts.lock().unwrap().per.len() <= 1);
    }

    #[test]
    fn defaults_come_from_the_descriptor_limit() {
        let l = Limits::new(0, 0, 1_048_576);
        assert_eq!(l.total(), (1_048_576 - 256) / 2);
        assert_eq!(l.per_workload(), l.total() / 4);
        let small = Limits::new(0, 0, 1024);
        assert_eq!(small.total(), 384);
        assert_eq!(small.per_workload(), 96);
    }
}
