//! A memory budget shared by channels: what it counts, what it releases first, when it
//! refuses, and that readers who keep up lose nothing meanwhile.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use eric_core::{
    Channel, ChannelContainer, Error, MemoryBudget, Message, MessageAdapter, OverflowPolicy,
};
use futures_util::StreamExt;
use serde_json::json;

/// A broadcast of about 2 x 8 KB by its estimate.
fn blob(n: u64) -> Message {
    Message::new("blob", json!({"n": n, "data": "x".repeat(8_000)}))
}

fn channel(budget: &MemoryBudget, replay: usize) -> Channel {
    Channel::builder()
        .replay(replay)
        .memory_budget(budget)
        .build(MessageAdapter)
        .unwrap()
}

#[test]
fn replay_is_released_before_anything_is_refused() {
    let size = blob(0).retained_bytes();
    let budget = MemoryBudget::new(20 * size);
    // Channels keeping up to 1,000 broadcasts for replay, and nobody listening.
    let channels: Vec<_> = (0..4).map(|_| channel(&budget, 1_000)).collect();
    for n in 0..500 {
        for channel in &channels {
            channel.broadcast(blob(n)).unwrap();
        }
        assert!(budget.retained() <= budget.limit());
    }
    // What each still keeps for replay is what fitted, newest first.
    for channel in &channels {
        let kept = channel.replayable();
        assert_eq!(kept.end, 500);
        assert!(kept.start < 500);
    }
    drop(channels);
    assert_eq!(budget.retained(), 0);
}

#[test]
fn what_listeners_have_not_read_is_kept_and_then_broadcasts_are_refused() {
    let size = blob(0).retained_bytes();
    let budget = MemoryBudget::new(10 * size);
    let channel = channel(&budget, 0);
    let stalled = channel.add_listener().unwrap();
    stalled.start();
    let mut accepted = 0;
    let refused = loop {
        match channel.broadcast(blob(accepted)) {
            Ok(_) => accepted += 1,
            Err(err) => break err,
        }
        assert!(accepted <= 10, "the budget must refuse at its limit");
    };
    assert!(matches!(
        refused,
        Error::MemoryBudgetExceeded { limit, .. } if limit == 10 * size
    ));
    assert!(accepted >= 9, "{accepted} accepted");
    // Nothing accepted was released: the listener reads every one.
    for n in 0..accepted {
        let msg = channel.deliver_next(stalled.id()).unwrap();
        assert_eq!(msg.payload()["n"], n);
    }
    // Read, they are released, and broadcasts go through again.
    channel.broadcast(blob(accepted)).unwrap();
    // A copy of a broadcast accepted elsewhere is counted but never refused.
    for n in 0..20 {
        channel.replicate(blob(accepted + 1 + n)).unwrap();
    }
    assert!(budget.retained() > budget.limit());
    assert!(matches!(
        channel.broadcast(blob(0)),
        Err(Error::MemoryBudgetExceeded { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_that_keep_up_lose_nothing_while_floods_press_on_the_budget() {
    let size = blob(0).retained_bytes();
    let budget = MemoryBudget::new(40 * size);
    // A channel nobody reads, keeping 1,000 broadcasts for replay; one whose listener
    // never reads, bounded to 20 (the oldest dropped); and one read as it goes.
    let flood = channel(&budget, 1_000);
    let slow = Channel::builder()
        .capacity(20, OverflowPolicy::DropOldest)
        .memory_budget(&budget)
        .build(MessageAdapter)
        .unwrap();
    let _stalled = slow.add_listener().unwrap();
    let fast = channel(&budget, 1_000);
    let listener = fast.add_listener().unwrap();
    let mut stream = fast.message_stream(listener.id()).unwrap();
    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        while let Some(msg) = stream.next().await {
            let msg = msg.unwrap();
            if msg.message_type() == "end" {
                break;
            }
            got.push(msg.payload()["n"].as_u64().unwrap());
        }
        got
    });
    let mut sent = Vec::new();
    for n in 0..2_000 {
        // A refusal means the reader is behind: what it has not read fills the budget
        // (any of the three may be the one refused then). Wait for it, as a publisher
        // answered 503 retries.
        for channel in [&flood, &slow, &fast] {
            while let Err(err) = channel.broadcast(blob(n)) {
                assert!(matches!(err, Error::MemoryBudgetExceeded { .. }), "{err}");
                tokio::task::yield_now().await;
            }
        }
        sent.push(n);
        assert!(budget.retained() <= budget.limit() + 2 * size);
    }
    fast.broadcast(Message::of_type("end")).unwrap();
    assert_eq!(reader.await.unwrap(), sent, "in order, none lost");
    assert!(
        flood.replayable().start > 1_000,
        "replay gave way to the budget"
    );
}

#[test]
fn a_container_budget_covers_channels_registered_before_and_after() {
    let container = ChannelContainer::new();
    let before = Channel::default();
    let listener = before.add_listener().unwrap();
    listener.start();
    before.broadcast(blob(0)).unwrap();
    container.register(before.clone()).unwrap();

    let budget = MemoryBudget::new(u64::MAX);
    assert!(container.limit_memory(budget.clone()));
    assert!(!container.limit_memory(MemoryBudget::new(1)), "set once");
    let held = budget.retained();
    assert!(
        held >= blob(0).retained_bytes(),
        "what it held already counts"
    );

    let after = Channel::default();
    container.register(after.clone()).unwrap();
    assert!(after.memory_budget().unwrap().ptr_eq(&budget));
    let _reader = after.add_listener().unwrap();
    after.broadcast(blob(1)).unwrap();
    assert!(budget.retained() >= held + blob(1).retained_bytes());

    before.deliver_next(listener.id()).unwrap();
    container.remove(before.id()).unwrap();
    container.remove(after.id()).unwrap();
    drop((before, after, _reader));
    assert_eq!(budget.retained(), 0);
}
