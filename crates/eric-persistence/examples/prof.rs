#![allow(missing_docs, clippy::unwrap_used)]
use eric_core::Message;
use eric_persistence::{ChannelSettings, KvStorage, SseChannelRepository};
use futures_util::StreamExt;
use std::sync::Arc;
use std::time::Instant;

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(std::env::var("W").map(|w| w.parse().unwrap()).unwrap_or(2))
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let url = std::env::args().nth(1);
        let storage: Arc<dyn KvStorage> = match url {
            Some(u) => Arc::new(eric_persistence::RedisStorage::connect(&u).await.unwrap()),
            None => Arc::new(eric_persistence::InMemoryStorage::new()),
        };
        for _ in 0..3 {
            let n = 300_000;
            let producers = 64;
            let repository = SseChannelRepository::from_arc(Arc::clone(&storage));
            let channel = repository.create(ChannelSettings::default()).await.unwrap();
            let listener = channel.add_listener().await.unwrap();
            let mut stream = channel.message_stream(&listener).unwrap();
            let start = Instant::now();
            let tasks: Vec<_> = (0..producers)
                .map(|t| {
                    let channel = channel.clone();
                    let listener = listener.clone();
                    tokio::spawn(async move {
                        for i in (t..n).step_by(producers) {
                            channel
                                .dispatch(&listener, Message::new("job", i))
                                .await
                                .unwrap();
                        }
                    })
                })
                .collect();
            for _ in 0..n {
                stream.next().await.unwrap().unwrap();
            }
            for task in tasks {
                task.await.unwrap();
            }
            channel.flush().await.unwrap();
            let e = start.elapsed();
            println!("{:.1} k/s", n as f64 / e.as_secs_f64() / 1e3);
            repository.delete(channel.id()).await.unwrap();
        }
    });
}
