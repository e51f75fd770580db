//! Admission: a model runs at most `running` requests at once and lets at most `waiting` more
//! wait for a place; a request past both is refused at once (429 with `Retry-After`), so no
//! request waits without bound and a burst costs nothing but its refusals.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The places of one model.
#[derive(Debug)]
pub(crate) struct Admission {
    running: Arc<Semaphore>,
    waiting: AtomicUsize,
    max_waiting: usize,
}

/// A place held until dropped.
#[derive(Debug)]
pub(crate) struct Place(#[allow(dead_code)] OwnedSemaphorePermit);

impl Admission {
    pub fn new(running: usize, waiting: usize) -> Admission {
        Admission {
            running: Arc::new(Semaphore::new(running.max(1))),
            waiting: AtomicUsize::new(0),
            max_waiting: waiting,
        }
    }

    /// `n` places at once (a request of `n` choices; at most the model's places): at once if
    /// they are free, after a wait in the queue if it has room, else `None`. Taken together, so
    /// that two requests never hold part each and wait for each other.
    pub async fn enter_many(&self, n: u32) -> Option<Place> {
        if let Ok(p) = self.running.clone().try_acquire_many_owned(n) {
            return Some(Place(p));
        }
        let queued = self.waiting.fetch_add(1, Ordering::SeqCst);
        let _leave = Leave(&self.waiting);
        if queued >= self.max_waiting {
            return None;
        }
        self.running
            .clone()
            .acquire_many_owned(n)
            .await
            .ok()
            .map(Place)
    }

    /// Requests waiting for a place now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Places taken now.
    pub fn running(&self, places: usize) -> usize {
        places.saturating_sub(self.running.available_permits())
    }
}

/// Leaves the queue when the wait ends, or when the waiting request is dropped.
struct Leave<'a>(&'a AtomicUsize);

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn past_the_places_and_the_queue_requests_are_refused() {
        let a = Arc::new(Admission::new(2, 1));
        let p1 = a.enter_many(1).await.unwrap();
        let _p2 = a.enter_many(1).await.unwrap();
        // The third waits (the queue has room for one).
        let a2 = a.clone();
        let waiter = tokio::spawn(async move { a2.enter_many(1).await.is_some() });
        while a.waiting() == 0 {
            tokio::task::yield_now().await;
        }
        // The fourth finds the queue full.
        assert!(a.enter_many(1).await.is_none());
        assert_eq!(a.waiting(), 1, "a refused request leaves the queue");
        drop(p1);
        assert!(
            waiter.await.unwrap(),
            "a freed place goes to the waiting request"
        );
        assert_eq!(a.waiting(), 0);
        assert_eq!(a.running(2), 1, "the waiter took a place and gave it back");
    }
}
