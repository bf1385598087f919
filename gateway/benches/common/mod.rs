//! What the benches share.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Instant,
};

/// Runs `total` calls with `concurrency` callers, each taking the next
/// number until all are taken; returns calls per second.
pub async fn drive<F, Fut>(total: usize, concurrency: usize, call: F) -> f64
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let call = Arc::new(call);
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (call, next) = (call.clone(), next.clone());
            tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= total {
                        break;
                    }
                    call(n).await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("caller task");
    }
    total as f64 / start.elapsed().as_secs_f64()
}
