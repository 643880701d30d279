//! The memory pool behind `--memory-limit`: DataFusion's `FairSpillPool`, named consumers
//! when it runs out (`TrackConsumersPool`), and headroom kept from operators that can
//! spill ([`SpillHeadroomPool`], ours: DataFusion has no such setting).
//!
//! Why the headroom: a sort that spills frees the memory it set aside for merging, then
//! sorts what it holds and asks for room for the sorted batches; its merge then asks for a
//! few bytes more. Under a fair pool the sort may take all that spillable consumers are
//! allowed, which is everything the unspillable ones do not hold at that moment, so the
//! merge's few bytes can find none left and the query fails ("resources exhausted",
//! `ExternalSorterMerge`), now and then, by timing. Keeping a sixteenth of the pool from
//! spillable consumers makes a sort spill a little sooner and leaves its merge (and other
//! operators that cannot spill) their room.
//!
//! `RepartitionExec`'s batches in flight are counted but never refused. DataFusion 55's
//! repartition answers a refusal by spilling to a file its reader reads while it is
//! written, and under a small pool that read fails with "Ipc error: Unexpected End of
//! Stream" instead of a memory error. Counted, its batches still make sorts and
//! aggregations spill sooner; the pool's other consumers are refused as usual, so a query
//! either completes or fails with the pool's own message.

use std::sync::Arc;

use datafusion::common::resources_datafusion_err;
use datafusion::error::Result as DfResult;
use datafusion::execution::memory_pool::{
    FairSpillPool, MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation, TrackConsumersPool,
};

/// The pool of a session or worker with `limit` bytes.
pub fn limited_pool(limit: usize) -> Arc<dyn MemoryPool> {
    // A fair pool, not DataFusion's default greedy one: a query has several operators
    // that spill (a sort and an aggregation per partition), and under a greedy pool the
    // first takes all and the next fails with nothing to spill.
    let fair = FairSpillPool::new(limit);
    Arc::new(TrackConsumersPool::new(
        SpillHeadroomPool {
            inner: fair,
            limit,
            headroom: limit / 16,
        },
        std::num::NonZeroUsize::new(5).expect("5 is not zero"),
    ))
}

/// A pool whose spillable consumers may not take its last `headroom` bytes (see the
/// module documentation); everything else is `inner`'s.
#[derive(Debug)]
pub struct SpillHeadroomPool {
    inner: FairSpillPool,
    limit: usize,
    headroom: usize,
}

impl std::fmt::Display for SpillHeadroomPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} with {} bytes kept from spillable consumers",
            self.inner.name(),
            self.headroom
        )
    }
}

impl MemoryPool for SpillHeadroomPool {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn register(&self, consumer: &MemoryConsumer) {
        self.inner.register(consumer)
    }

    fn unregister(&self, consumer: &MemoryConsumer) {
        self.inner.unregister(consumer)
    }

    fn grow(&self, reservation: &MemoryReservation, additional: usize) {
        self.inner.grow(reservation, additional)
    }

    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        self.inner.shrink(reservation, shrink)
    }

    fn try_grow(&self, reservation: &MemoryReservation, additional: usize) -> DfResult<()> {
        if is_repartition(reservation.consumer()) {
            self.inner.grow(reservation, additional);
            return Ok(());
        }
        let spillable = reservation.consumer().can_spill();
        if spillable && self.inner.reserved() + additional + self.headroom > self.limit {
            // The consumer spills and tries again (that is what spillable means).
            return Err(resources_datafusion_err!(
                "{} may not take the last {} bytes of the pool (its {} bytes and {} more)",
                reservation.consumer().name(),
                self.headroom,
                reservation.size(),
                additional
            ));
        }
        self.inner.try_grow(reservation, additional)
    }

    fn reserved(&self) -> usize {
        self.inner.reserved()
    }

    fn memory_limit(&self) -> MemoryLimit {
        self.inner.memory_limit()
    }
}

/// A `RepartitionExec`'s buffer (`RepartitionExec[3]`; see the module documentation).
fn is_repartition(consumer: &MemoryConsumer) -> bool {
    consumer
        .name()
        .strip_prefix("RepartitionExec[")
        .is_some_and(|rest| rest.ends_with(']'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spillable_consumers_leave_the_headroom_to_the_others() {
        let pool = limited_pool(1600);
        let sort = MemoryConsumer::new("sort")
            .with_can_spill(true)
            .register(&pool);
        let merge = MemoryConsumer::new("merge").register(&pool);
        // 1600 - 100 of headroom: the sort gets 1500 at most.
        sort.try_grow(1500).unwrap();
        let e = sort.try_grow(1).unwrap_err().to_string();
        assert!(
            e.contains("Resources exhausted") && e.contains("sort"),
            "{e}"
        );
        // What the sort may not take is the merge's.
        merge.try_grow(100).unwrap();
        assert!(merge.try_grow(1).is_err());
        assert_eq!(pool.reserved(), 1600);
        drop(sort);
        assert_eq!(pool.reserved(), 100);
        assert!(matches!(pool.memory_limit(), MemoryLimit::Finite(1600)));
    }

    #[test]
    fn a_repartitions_batches_are_counted_but_never_refused() {
        let pool = limited_pool(1600);
        let repartition = MemoryConsumer::new("RepartitionExec[0]")
            .with_can_spill(true)
            .register(&pool);
        repartition.try_grow(2000).unwrap();
        assert_eq!(pool.reserved(), 2000);
        // Everyone else sees the pool full.
        let sort = MemoryConsumer::new("ExternalSorter[0]")
            .with_can_spill(true)
            .register(&pool);
        assert!(sort.try_grow(1).is_err());
        let other = MemoryConsumer::new("RepartitionExecutor").register(&pool);
        assert!(other.try_grow(1).is_err());
        drop(repartition);
        assert_eq!(pool.reserved(), 0);
    }
}
