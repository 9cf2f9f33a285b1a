//! Many producers at once, from tokio tasks and OS threads: each listener sees each
//! producer's messages in order, every broadcast in the same order as the others, and
//! nothing is lost.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::HashMap;
use std::thread;

use eric_core::{Channel, Message, MessageAdapter};
use futures_util::StreamExt;
use serde_json::json;

const PRODUCERS_PER_KIND: usize = 4;
const PER_PRODUCER: u64 = 2_000;

fn message(producer: usize, seq: u64) -> Message {
    Message::new("m", json!({ "producer": producer, "seq": seq }))
}

/// Checks that `messages` holds every producer's sequence complete and in order.
fn assert_fifo_per_producer(messages: &[Message], producers: usize) {
    let mut next: HashMap<u64, u64> = HashMap::new();
    for msg in messages {
        let producer = msg.payload()["producer"].as_u64().unwrap();
        let seq = msg.payload()["seq"].as_u64().unwrap();
        let expected = next.entry(producer).or_insert(0);
        assert_eq!(seq, *expected, "producer {producer} out of order");
        *expected += 1;
    }
    assert_eq!(next.len(), producers);
    assert!(
        next.values().all(|&n| n == PER_PRODUCER),
        "messages lost: {next:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifo_per_listener_under_tasks_and_threads_at_once() {
    let channel = Channel::default();
    let listeners: Vec<_> = (0..8).map(|_| channel.add_listener().unwrap()).collect();
    let readers: Vec<_> = listeners
        .iter()
        .map(|listener| {
            let mut stream = channel.message_stream(listener.id()).unwrap();
            tokio::spawn(async move {
                let mut got = Vec::new();
                while let Some(item) = stream.next().await {
                    let msg = item.unwrap();
                    if msg.ends_stream() {
                        break;
                    }
                    got.push(msg);
                }
                got
            })
        })
        .collect();

    // Half the producers are OS threads, half tokio tasks; each alternates dispatch to
    // one listener and broadcast to all, so both paths race each other.
    let target = listeners[0].id().to_owned();
    let mut threads = Vec::new();
    for producer in 0..PRODUCERS_PER_KIND {
        let channel = channel.clone();
        let target = target.clone();
        threads.push(thread::spawn(move || {
            for seq in 0..PER_PRODUCER {
                if seq % 2 == 0 {
                    channel.broadcast(message(producer, seq)).unwrap();
                } else {
                    channel.dispatch(&target, message(producer, seq)).unwrap();
                }
            }
        }));
    }
    let mut tasks = Vec::new();
    for producer in PRODUCERS_PER_KIND..2 * PRODUCERS_PER_KIND {
        let channel = channel.clone();
        let target = target.clone();
        tasks.push(tokio::spawn(async move {
            for seq in 0..PER_PRODUCER {
                if seq % 2 == 0 {
                    channel.broadcast(message(producer, seq)).unwrap();
                } else {
                    channel.dispatch(&target, message(producer, seq)).unwrap();
                }
                if seq % 64 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        }));
    }
    for thread in threads {
        thread.join().unwrap();
    }
    for task in tasks {
        task.await.unwrap();
    }
    channel.close();

    let mut results = Vec::new();
    for reader in readers {
        results.push(reader.await.unwrap());
    }
    // The dispatch target got everything from every producer, in order.
    assert_fifo_per_producer(&results[0], 2 * PRODUCERS_PER_KIND);
    // The others got exactly the broadcasts (the even seqs), in one shared order.
    let broadcasts = |got: &Vec<Message>| -> Vec<(u64, u64)> {
        got.iter()
            .filter(|m| m.payload()["seq"].as_u64().unwrap() % 2 == 0)
            .map(|m| {
                (
                    m.payload()["producer"].as_u64().unwrap(),
                    m.payload()["seq"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    let reference = broadcasts(&results[0]);
    assert_eq!(
        reference.len(),
        2 * PRODUCERS_PER_KIND * (PER_PRODUCER as usize / 2)
    );
    for got in &results[1..] {
        assert_eq!(got.len(), reference.len());
        assert_eq!(
            broadcasts(got),
            reference,
            "listeners saw broadcasts in different orders"
        );
    }
}

#[test]
fn listeners_come_and_go_while_broadcasting_from_threads() {
    let channel = Channel::default();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let broadcaster = {
        let channel = channel.clone();
        let stop = stop.clone();
        thread::spawn(move || {
            let mut sent = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                channel.broadcast(Message::new("tick", sent)).unwrap();
                sent += 1;
            }
            sent
        })
    };
    let churners: Vec<_> = (0..2)
        .map(|_| {
            let channel = channel.clone();
            thread::spawn(move || {
                for _ in 0..2_000 {
                    let listener = channel.add_listener().unwrap();
                    listener.start();
                    let _ = channel.deliver_next(listener.id());
                    channel.remove_listener(listener.id()).unwrap();
                }
            })
        })
        .collect();
    for churner in churners {
        churner.join().unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(broadcaster.join().unwrap() > 0);
    assert_eq!(channel.listener_count(), 0, "a listener leaked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_streams_opened_and_dropped_concurrently_leave_no_listener() {
    let channel: Channel<MessageAdapter> = Channel::default();
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let channel = channel.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..200 {
                let mut stream = channel.watch().unwrap();
                channel.broadcast(Message::of_type("x")).unwrap();
                assert!(stream.next().await.unwrap().is_ok());
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(channel.listener_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dispatches_racing_close_are_refused_or_delivered_never_lost() {
    for _ in 0..20 {
        let channel = Channel::default();
        let listener = channel.add_listener().unwrap();
        let mut stream = channel.message_stream(listener.id()).unwrap();
        let producers: Vec<_> = (0..2)
            .map(|producer| {
                let channel = channel.clone();
                let id = listener.id().to_owned();
                thread::spawn(move || {
                    let mut accepted = Vec::new();
                    for seq in 0..2_000u64 {
                        match channel.dispatch(&id, message(producer, seq)) {
                            Ok(()) => accepted.push((producer as u64, seq)),
                            Err(eric_core::Error::ChannelClosed { .. }) => break,
                            Err(other) => panic!("unexpected {other}"),
                        }
                    }
                    accepted
                })
            })
            .collect();
        thread::yield_now();
        channel.close();
        let mut accepted: Vec<(u64, u64)> = producers
            .into_iter()
            .flat_map(|p| p.join().unwrap())
            .collect();

        let mut read = Vec::new();
        while let Some(item) = stream.next().await {
            let msg = item.unwrap();
            if !msg.ends_stream() {
                read.push(msg);
            }
        }
        // A dispatch that raced the close may sit after the marker's read: still there.
        while let Ok(msg) = channel.deliver_next(listener.id()) {
            read.push(msg);
        }
        let mut read: Vec<(u64, u64)> = read
            .iter()
            .map(|m| {
                (
                    m.payload()["producer"].as_u64().unwrap(),
                    m.payload()["seq"].as_u64().unwrap(),
                )
            })
            .collect();
        accepted.sort_unstable();
        read.sort_unstable();
        assert_eq!(read, accepted, "an accepted dispatch was lost");
    }
}

#[test]
fn a_reader_racing_one_producer_sees_dispatches_and_broadcasts_in_send_order() {
    // The race is narrow (a read between a dispatch and the broadcast after it): ten
    // rounds caught the bug it guards against in most runs; one round, in one in five.
    for _ in 0..10 {
        race_one_producer(50_000);
    }
}

fn race_one_producer(n: u64) {
    let channel = Channel::default();
    let listener = channel.add_listener().unwrap();
    listener.start();
    let producer = {
        let channel = channel.clone();
        let id = listener.id().to_owned();
        thread::spawn(move || {
            for seq in 0..n {
                if seq % 2 == 0 {
                    channel.dispatch(&id, Message::new("m", seq)).unwrap();
                } else {
                    channel.broadcast(Message::new("m", seq)).unwrap();
                }
            }
        })
    };
    let mut expected = 0;
    while expected < n {
        match channel.deliver_next(listener.id()) {
            Ok(msg) => {
                assert_eq!(msg.payload(), expected, "out of send order");
                expected += 1;
            }
            Err(eric_core::Error::NoMessages { .. }) => std::hint::spin_loop(),
            Err(other) => panic!("unexpected {other}"),
        }
    }
    producer.join().unwrap();
}

/// Issue 19's second suspected bug: `queue_stats` subtracted two values read at
/// different moments (`lag - pending`); a broadcast or a skip in between made it
/// underflow, which panics in debug builds. A reader skipping and a producer
/// broadcasting race the stats here; every answer must also be within the window.
#[test]
fn queue_stats_stay_consistent_while_broadcasts_and_skips_race_them() {
    use eric_core::OverflowPolicy;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let channel = Channel::builder()
        .capacity(1, OverflowPolicy::DropOldest)
        .build(MessageAdapter)
        .unwrap();
    let listener = channel.add_listener().unwrap();
    listener.start();
    let done = Arc::new(AtomicBool::new(false));
    let producer = {
        let (channel, done) = (channel.clone(), Arc::clone(&done));
        thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                channel.broadcast(Message::of_type("b")).unwrap();
            }
        })
    };
    let reader = {
        let (channel, done, id) = (channel.clone(), Arc::clone(&done), listener.id().to_owned());
        thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                let _ = channel.deliver_next(&id);
            }
        })
    };
    for _ in 0..200_000 {
        let stats = channel.queue_stats(listener.id()).unwrap();
        assert!(
            stats.len <= 1,
            "{stats:?}: more unread than the capacity of 1"
        );
    }
    done.store(true, Ordering::Relaxed);
    producer.join().unwrap();
    reader.join().unwrap();
}
