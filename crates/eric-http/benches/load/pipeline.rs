//! A publisher that does not wait for answers: every broadcast of a run written back to
//! back on one keep-alive HTTP/1.1 connection, the answers read beside.
//!
//! The fixed-rate publisher sends each broadcast after the last one's answer, so past
//! what the server delivers it runs in lockstep: each publish waits behind the writes its
//! predecessor woke, and streams never fall behind. This one saturates for real: the
//! server reads broadcasts as fast as it takes them off the socket, streams fall behind
//! and have several events ready when polled. HTTP/1.1 pipelining keeps them in order
//! (a server answers a connection's requests one after the other), which one connection
//! per broadcast in flight would not.

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};

/// A broadcast request: what to POST where.
pub(crate) struct Publish {
    /// The request target, `/broadcast?channel_id=…` say.
    pub(crate) path: String,
    pub(crate) content_type: &'static str,
    /// The body of broadcast number `seq`.
    pub(crate) body: Box<dyn Fn(u64) -> String + Send + Sync>,
}

/// Publishes broadcasts `0..total` to the server at `base` without waiting for answers;
/// returns how many the server refused (an answer other than 2xx).
pub(crate) async fn publish_all(base: &str, publish: Publish, total: u64) -> u64 {
    let addr = base.trim_start_matches("http://");
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let (mut read, write) = tcp.into_split();
    let answers = tokio::spawn(async move {
        let mut buf = Vec::with_capacity(64 * 1024);
        let (mut answered, mut refused) = (0, 0);
        while answered < total {
            match next_answer(&buf) {
                Some((status, length)) => {
                    buf.drain(..length);
                    answered += 1;
                    if !(200..300).contains(&status) {
                        refused += 1;
                    }
                }
                None => {
                    let read = read.read_buf(&mut buf).await.unwrap();
                    assert!(read > 0, "the server closed after {answered} answers");
                }
            }
        }
        refused
    });
    // Buffered: one write per 8 KiB of requests, so the publisher's own syscalls cost
    // little beside the servers'.
    let mut write = BufWriter::new(write);
    for seq in 0..total {
        let body = (publish.body)(seq);
        let head = format!(
            "POST {} HTTP/1.1\r\nhost: x\r\ncontent-type: {}\r\ncontent-length: {}\r\n\r\n",
            publish.path,
            publish.content_type,
            body.len()
        );
        write.write_all(head.as_bytes()).await.unwrap();
        write.write_all(body.as_bytes()).await.unwrap();
    }
    write.flush().await.unwrap();
    answers.await.unwrap()
}

/// The status and whole length of the first answer in `buf`, once it is all there.
fn next_answer(buf: &[u8]) -> Option<(u16, usize)> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let head = match response.parse(buf).expect("a well-formed answer") {
        httparse::Status::Complete(head) => head,
        httparse::Status::Partial => return None,
    };
    let status = response.code.unwrap();
    let body = if matches!(status, 204 | 304) {
        0
    } else {
        let length = response
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("content-length"))
            .expect("an answer with a content-length");
        std::str::from_utf8(length.value)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    (buf.len() >= head + body).then_some((status, head + body))
}
