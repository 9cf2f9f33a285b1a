//! eric-sse's own Python SocketClient, unchanged, against our server and against
//! eric-sse's Python server: the same results from both. Python and eric-sse go into a
//! throwaway virtualenv under the target directory; the test is skipped, with a printed
//! reason, only where python3 is absent.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

/// The scenario, in Python with eric-sse's SocketClient. Ids are replaced by
/// placeholders; error replies are kept whole (compared by name below).
const SCENARIO: &str = r#"
import asyncio, json, re, sys
from eric_sse.clients import SocketClient

ids = {}
def norm(text):
    def sub(m):
        return ids.setdefault(m.group(0), f"<id{len(ids)}>")
    return re.sub(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", sub, text)

async def main(path):
    c = SocketClient(path)
    out = {}
    channel = await c.create_channel()
    out["create"] = norm(channel)
    a = await c.register(channel)
    b = await c.register(channel)
    out["register"] = [norm(a), norm(b)]
    out["broadcast"] = await c.broadcast_message(channel, "news", {"text": "héllo", "n": [1, 2.5, None]})
    out["dispatch"] = await c.dispatch(channel, b, "dm", "for b")
    lines = []
    stream = c.stream(channel, b)
    async def read_two():
        async for line in stream:
            lines.append(line)
            if len(lines) == 2:
                break
    await asyncio.wait_for(read_two(), 10)
    out["stream"] = lines
    out["remove_listener"] = await c.remove_listener(channel, a)
    out["errors"] = {
        "register_unknown_channel": await c.register("nope"),
        "dispatch_unknown_listener": norm(await c.dispatch(channel, "ghost", "t", 1)),
        "remove_unknown_listener": await c.remove_listener(channel, "ghost"),
        "broadcast_without_type": await c.send_payload({"v": "b", "c": channel}),
        "listen_unknown_listener": await c.send_payload({"v": "l", "c": channel, "r": "ghost"}),
    }
    out["remove_channel"] = await c.remove_channel(channel)
    out["after_remove"] = norm(await c.register(channel))
    print(json.dumps(out))

asyncio.run(main(sys.argv[1]))
"#;

fn run_scenario(python: &Path, socket: &Path) -> Value {
    let out = Command::new(python)
        .args(["-c", SCENARIO])
        .arg(socket)
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the scenario failed against {socket:?}"
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Error replies compared by their exception name; everything else exactly.
fn comparable(mut results: Value) -> Value {
    if let Some(errors) = results.get_mut("errors").and_then(Value::as_object_mut) {
        for reply in errors.values_mut() {
            let text = reply.as_str().unwrap_or_default();
            *reply = Value::String(text.split('(').next().unwrap_or_default().to_owned());
        }
    }
    results
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eric_sse_socket_client_gets_the_same_results_from_eric_as_from_eric_sse() {
    let Some(python) = support::python::venv() else {
        return;
    };

    let ours = support::Running::start().await;
    let python_for_ours = python.clone();
    let our_path = ours.path.clone();
    let from_eric = tokio::task::spawn_blocking(move || run_scenario(&python_for_ours, &our_path))
        .await
        .unwrap();

    // eric-sse's own server, on a path of its own.
    let their_path = support::fresh_path();
    let mut theirs = Command::new(&python)
        .args(["-c", "import sys; from eric_sse.servers import SocketServer; SocketServer.start(sys.argv[1])"])
        .arg(&their_path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..100 {
        if their_path.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let python_for_theirs = python.clone();
    let path = their_path.clone();
    let from_eric_sse =
        tokio::task::spawn_blocking(move || run_scenario(&python_for_theirs, &path))
            .await
            .unwrap();
    let _ = theirs.kill();
    let _ = theirs.wait();

    // The exact texts eric's server sends, for the record.
    assert_eq!(
        from_eric["stream"][0],
        "{\"event\": \"news\", \"retry\": 5, \"data\": {\"text\": \"h\\u00e9llo\", \"n\": [1, 2.5, null]}}\n"
    );
    assert_eq!(
        from_eric["errors"]["register_unknown_channel"],
        "InvalidChannelException('No channel with id nope')"
    );
    assert_eq!(
        from_eric["errors"]["dispatch_unknown_listener"],
        "InvalidListenerException('Invalid listener ghost')"
    );
    assert_eq!(comparable(from_eric), comparable(from_eric_sse));
}
