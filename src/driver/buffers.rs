//! Memory lent to connections only while they work on a request: read buffers, and the
//! state of a request in progress.
//!
//! A kept-alive connection spends most of its life waiting for its next request with nothing
//! buffered. It gives its read buffer back when it starts such a wait, and takes one again
//! once bytes have arrived, so thousands of idle connections hold no buffer at all while the
//! few that are reading reuse the same warm ones. Likewise the state of a request (much
//! larger than that of the wait for one) lives in a block taken for the request ([`Lent`])
//! rather than in every connection's task. Each worker's event loop runs on one thread, so
//! the pools are that thread's and need no lock.

use std::alloc::{self, Layout};
use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::ptr::NonNull;
use std::task::{Context, Poll};

/// Capacity of a connection's read buffer: what one read of a request head asks for.
pub const READ_CHUNK: usize = 16 * 1024;

/// Buffers kept for reuse at most; more given back are freed.
const KEEP: usize = 64;

/// A buffer grown past this (by a streamed body) is freed rather than kept.
const KEEP_CAPACITY: usize = 4 * READ_CHUNK;

thread_local! {
    static FREE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// Gives `buf` a kept buffer if it has none; bytes are about to be read into it.
#[inline]
pub fn take(buf: &mut Vec<u8>) {
    if buf.capacity() == 0 {
        if let Some(kept) = FREE.with_borrow_mut(Vec::pop) {
            *buf = kept;
        }
    }
}

/// Takes the buffer of a connection that is about to wait with nothing buffered, leaving it
/// without one: keeps it for the next connection that reads, or frees it.
#[inline]
pub fn give_back(buf: &mut Vec<u8>) {
    debug_assert!(buf.is_empty());
    let cap = buf.capacity();
    if cap == 0 {
        return;
    }
    let buf = std::mem::take(buf);
    if cap <= KEEP_CAPACITY {
        FREE.with_borrow_mut(|free| {
            if free.len() < KEEP {
                free.push(buf);
            }
        });
    }
}

/// Blocks kept for reuse by [`Lent`], by layout: one for each kind of lent future (a
/// request's state on each transport, an application call on each worker class), so only a
/// handful. Freed with the thread.
struct Blocks {
    kinds: Vec<(Layout, Vec<NonNull<u8>>)>,
}

/// Kinds of block kept at most; blocks of any other layout are freed when given back.
const KINDS: usize = 8;

impl Blocks {
    fn free_list(&mut self, layout: Layout) -> Option<&mut Vec<NonNull<u8>>> {
        let at = match self.kinds.iter().position(|(l, _)| *l == layout) {
            Some(at) => at,
            None if self.kinds.len() < KINDS => {
                self.kinds.push((layout, Vec::new()));
                self.kinds.len() - 1
            }
            None => return None,
        };
        Some(&mut self.kinds[at].1)
    }
}

impl Drop for Blocks {
    fn drop(&mut self) {
        for (layout, free) in self.kinds.drain(..) {
            for block in free {
                // SAFETY: every kept block was allocated with `layout` and is not in use.
                unsafe { alloc::dealloc(block.as_ptr(), layout) };
            }
        }
    }
}

thread_local! {
    static BLOCKS: RefCell<Blocks> = const { RefCell::new(Blocks { kinds: Vec::new() }) };
}

/// A future in a block of memory taken from the thread's pool and given back when it is
/// dropped: a `Box` that costs no trip through `malloc` for each request. The future is
/// made in its block, not moved there.
pub struct Lent<F: Future> {
    ptr: NonNull<F>,
}

impl<F: Future> Lent<F> {
    #[inline]
    pub fn new(make: impl FnOnce() -> F) -> Lent<F> {
        const { assert!(std::mem::size_of::<F>() > 0) };
        let layout = Layout::new::<F>();
        let kept = BLOCKS.with_borrow_mut(|b| b.free_list(layout).and_then(Vec::pop));
        let block = kept.unwrap_or_else(|| {
            // SAFETY: the layout's size is not zero (asserted above).
            let p = unsafe { alloc::alloc(layout) };
            NonNull::new(p).unwrap_or_else(|| alloc::handle_alloc_error(layout))
        });
        let ptr = block.cast::<F>();
        // SAFETY: the block is unused and allocated for `F`'s layout.
        unsafe { ptr.as_ptr().write(make()) };
        Lent { ptr }
    }
}

impl<F: Future> Future for Lent<F> {
    type Output = F::Output;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // SAFETY: the future stays in its block, which is never moved, until it is dropped
        // in place by `drop`.
        unsafe { Pin::new_unchecked(&mut *self.ptr.as_ptr()) }.poll(cx)
    }
}

impl<F: Future> Drop for Lent<F> {
    fn drop(&mut self) {
        let layout = Layout::new::<F>();
        let block = self.ptr.cast::<u8>();
        // SAFETY: the future was written in `new` and is dropped only here; the block is
        // given back or freed after it, with the layout it was allocated with.
        unsafe {
            std::ptr::drop_in_place(self.ptr.as_ptr());
            let kept = BLOCKS
                .try_with(|b| match b.borrow_mut().free_list(layout) {
                    Some(free) if free.len() < KEEP => {
                        free.push(block);
                        true
                    }
                    _ => false,
                })
                .unwrap_or(false);
            if !kept {
                alloc::dealloc(block.as_ptr(), layout);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept() -> usize {
        FREE.with_borrow(Vec::len)
    }

    #[test]
    fn an_idle_connection_holds_no_buffer_and_the_next_reader_reuses_it() {
        let mut idle = Vec::with_capacity(READ_CHUNK);
        let ptr = idle.as_ptr();
        give_back(&mut idle);
        assert_eq!(idle.capacity(), 0);
        assert_eq!(kept(), 1);
        let mut reader = Vec::new();
        take(&mut reader);
        assert_eq!(reader.as_ptr(), ptr, "the kept buffer is reused");
        assert_eq!(reader.capacity(), READ_CHUNK);
        assert_eq!(kept(), 0);
        // A buffer that has one keeps it; with none kept, reading allocates as before.
        take(&mut reader);
        assert_eq!(reader.as_ptr(), ptr);
        let mut other = Vec::new();
        take(&mut other);
        assert_eq!(other.capacity(), 0);
    }

    #[test]
    fn keeps_a_bounded_number_of_buffers_of_a_bounded_size() {
        let mut big = Vec::with_capacity(KEEP_CAPACITY + 1);
        give_back(&mut big);
        assert_eq!((big.capacity(), kept()), (0, 0), "a grown buffer is freed");
        for _ in 0..KEEP + 10 {
            give_back(&mut Vec::with_capacity(READ_CHUNK));
        }
        assert_eq!(kept(), KEEP);
        let mut none = Vec::new();
        give_back(&mut none);
        assert_eq!(kept(), KEEP);
    }

    #[test]
    fn a_lent_future_runs_drops_its_state_and_its_block_is_reused() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let state = std::rc::Rc::new(());
        let first = Lent::new(|| {
            let state = std::rc::Rc::clone(&state);
            async move {
                tokio::task::yield_now().await;
                std::rc::Rc::strong_count(&state)
            }
        });
        let block = first.ptr.cast::<u8>();
        assert_eq!(rt.block_on(first), 2);
        assert_eq!(
            std::rc::Rc::strong_count(&state),
            1,
            "the state was dropped"
        );
        // A second future of the same type takes the first one's block; one never polled
        // drops its state too.
        let second = Lent::new(|| {
            let state = std::rc::Rc::clone(&state);
            async move {
                tokio::task::yield_now().await;
                std::rc::Rc::strong_count(&state)
            }
        });
        assert_eq!(second.ptr.cast::<u8>(), block);
        drop(second);
        assert_eq!(std::rc::Rc::strong_count(&state), 1);
    }

    #[test]
    fn lent_futures_of_different_sizes_each_reuse_their_own_blocks() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        async fn make_large() -> usize {
            let held = [7u8; 4096];
            tokio::task::yield_now().await;
            held.iter().filter(|b| **b == 7).count()
        }
        let small = Lent::new(|| async { 1u8 });
        let large = Lent::new(make_large);
        fn size<F: Future>(_: &Lent<F>) -> usize {
            std::mem::size_of::<F>()
        }
        assert!(size(&large) > 4096 && size(&small) < 64);
        let (small_block, large_block) = (small.ptr.cast::<u8>(), large.ptr.cast::<u8>());
        assert_eq!(rt.block_on(small), 1);
        assert_eq!(rt.block_on(large), 4096);
        // The small block went back first; each kind's next future still takes its own.
        let large = Lent::new(make_large);
        let small = Lent::new(|| async { 1u8 });
        assert_eq!(large.ptr.cast::<u8>(), large_block);
        assert_eq!(small.ptr.cast::<u8>(), small_block);
    }
}
