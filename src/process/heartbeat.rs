//! Worker heartbeats in a shared anonymous mapping, one slot per worker, created by the master
//! before any fork. A worker's event loop stores the current monotonic time in its slot; the
//! master kills a worker whose slot is older than `--timeout`. This replaces Gunicorn's
//! temp-file mtime, which costs a syscall per beat and a disk write.
//!
//! Each slot also holds the worker's request counters ([`WorkerCounters`]), read by the
//! master for the Prometheus endpoint. A slot is a cache line multiple, so workers never
//! write to the same line.

use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::log::metrics::WorkerCounters;

/// One worker's slot.
#[repr(C, align(64))]
pub struct Slot {
    /// The last beat, in [`monotonic_millis`].
    beat: AtomicU64,
    /// Non-zero once the worker has begun to stop: it no longer accepts, so the master starts
    /// its replacement without waiting for its open connections to finish.
    leaving: AtomicU64,
    pub counters: WorkerCounters,
}

/// The shared region: `slots` slots.
pub struct Heartbeat {
    base: NonNull<Slot>,
    slots: usize,
}

/// One worker's view of its slot.
#[derive(Clone, Copy)]
pub struct HeartbeatSlot {
    slot: NonNull<Slot>,
}

// SAFETY: the slot points into a MAP_SHARED mapping that lives as long as the process and is
// only accessed through atomics, so any thread may hold the pointer.
unsafe impl Send for HeartbeatSlot {}
// SAFETY: as for Send: shared references only reach the slot's atomics.
unsafe impl Sync for HeartbeatSlot {}

/// Milliseconds on CLOCK_MONOTONIC, which is shared by all processes on the machine.
pub fn monotonic_millis() -> u64 {
    clock_millis(libc::CLOCK_MONOTONIC)
}

/// [`monotonic_millis`] as of the last clock tick (a few milliseconds behind at most): far
/// finer than `--timeout`, and cheaper to read twice per request than the precise clock.
fn coarse_monotonic_millis() -> u64 {
    clock_millis(libc::CLOCK_MONOTONIC_COARSE)
}

fn clock_millis(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into our local.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

impl Heartbeat {
    /// Maps `slots` slots. Must run before the first fork so every worker shares the mapping.
    pub fn new(slots: usize) -> std::io::Result<Heartbeat> {
        let slots = slots.max(1);
        let len = slots * std::mem::size_of::<Slot>();
        // SAFETY: asks for a fresh anonymous mapping at an address of the kernel's choosing, so
        // no existing memory is touched; MAP_FAILED is checked below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        // A fresh anonymous mapping is zero-filled: every atomic in it reads 0.
        let base = NonNull::new(ptr.cast::<Slot>()).ok_or_else(std::io::Error::last_os_error)?;
        Ok(Heartbeat { base, slots })
    }

    pub fn slots(&self) -> usize {
        self.slots
    }

    /// The slot with index `index` (< `slots()`).
    pub fn slot(&self, index: usize) -> HeartbeatSlot {
        assert!(index < self.slots, "heartbeat slot {index} out of range");
        HeartbeatSlot {
            // SAFETY: the mapping holds `slots` Slots and `index < slots` (asserted above), so
            // the pointer stays inside it; `base` is non-null, and so is any offset of it.
            slot: unsafe { NonNull::new_unchecked(self.base.as_ptr().add(index)) },
        }
    }
}

impl HeartbeatSlot {
    /// Records that the worker is alive now.
    pub fn beat(&self) {
        self.store(coarse_monotonic_millis());
    }

    pub fn store(&self, millis: u64) {
        // SAFETY: see the Send/Sync note above.
        unsafe { self.slot.as_ref() }
            .beat
            .store(millis, Ordering::Relaxed);
    }

    /// Marks the worker as stopping; see [`Slot::leaving`].
    pub fn announce_leaving(&self) {
        // SAFETY: see the Send/Sync note above.
        unsafe { self.slot.as_ref() }
            .leaving
            .store(1, Ordering::Relaxed);
    }

    /// Whether the worker in this slot has begun to stop.
    pub fn leaving(&self) -> bool {
        // SAFETY: see the Send/Sync note above.
        unsafe { self.slot.as_ref() }
            .leaving
            .load(Ordering::Relaxed)
            != 0
    }

    /// Readies the slot for a new worker.
    pub fn clear_leaving(&self) {
        // SAFETY: see the Send/Sync note above.
        unsafe { self.slot.as_ref() }
            .leaving
            .store(0, Ordering::Relaxed);
    }

    /// The worker's request counters.
    pub fn counters(&self) -> &'static WorkerCounters {
        // SAFETY: the mapping is never unmapped, so the slot lives as long as the process;
        // it is only accessed through atomics.
        &unsafe { self.slot.as_ref() }.counters
    }

    /// The time of the last beat, in [`monotonic_millis`].
    pub fn last(&self) -> u64 {
        // SAFETY: see the Send/Sync note above.
        unsafe { self.slot.as_ref() }.beat.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beat_is_visible_through_another_handle() {
        let hb = Heartbeat::new(4).expect("mmap");
        let a = hb.slot(2);
        let b = hb.slot(2);
        a.store(42);
        assert_eq!(b.last(), 42);
        assert!(!b.leaving());
        a.announce_leaving();
        assert!(b.leaving());
        b.clear_leaving();
        assert!(!a.leaving());
        assert_eq!(hb.slot(1).last(), 0);
        a.counters().connections.store(3, Ordering::Relaxed);
        assert_eq!(b.counters().connections.load(Ordering::Relaxed), 3);
        assert_eq!(std::mem::size_of::<Slot>() % 64, 0);
    }
}
