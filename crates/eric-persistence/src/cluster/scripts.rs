//! The Lua scripts of cluster mode, each built (and its SHA1 computed) once per process.
//!
//! Every key a script touches belongs to one channel and shares its hash tag, so that
//! each runs on one Redis Cluster slot. A channel's meta hash (`KEYS[1]` wherever it
//! appears) holds its epoch, its sequence number, its settings as JSON, and the two
//! numbers the scripts need from them: `maxlen` (the stream's `MAXLEN ~`) and
//! `capacity` (the most undelivered dispatches a stored listener holds, 0: no bound).
//!
//! Every entry a script appends to the stream (`KEYS[2]` or `KEYS[4]`) it also
//! publishes, on a pub/sub channel named after the stream's key, as
//! `<entry id>\n<type>\n<to>\n<by>\n<payload>` (see [`super::feed`]): with `SPUBLISH`
//! on a Redis Cluster (the name's hash tag keeps it on the channel's shard), with
//! `PUBLISH` on one server.

use std::sync::LazyLock;

use redis::Script;

/// The scripts that append entries, built for one way of notifying them.
pub(super) struct Appending {
    pub(super) publish: Script,
    pub(super) remove: Script,
    pub(super) dispatch: Script,
    pub(super) remove_listener: Script,
    pub(super) attach: Script,
}

/// For one Redis server: `PUBLISH`.
pub(super) static ONE_SERVER: LazyLock<Appending> = LazyLock::new(|| Appending::new("PUBLISH"));

/// For a Redis Cluster: `SPUBLISH`, to the channel's own shard.
pub(super) static SHARDED: LazyLock<Appending> = LazyLock::new(|| Appending::new("SPUBLISH"));

/// The Lua function every appending script starts with: `XADD` to `stream` (capped at
/// the channel's `maxlen` when `meta` is given) and the notification of the entry.
const APPEND: &str = r"
local function append(meta, stream, id, kind, payload, to, by)
  local xadd = {'XADD', stream}
  if meta then
    table.insert(xadd, 'MAXLEN')
    table.insert(xadd, '~')
    table.insert(xadd, redis.call('HGET', meta, 'maxlen') or '2048')
  end
  table.insert(xadd, id)
  for _, field in ipairs({'type', kind, 'payload', payload}) do table.insert(xadd, field) end
  if to then
    table.insert(xadd, 'to')
    table.insert(xadd, to)
  end
  if by then
    table.insert(xadd, 'by')
    table.insert(xadd, by)
  end
  local added = redis.call(unpack(xadd))
  local note = table.concat({added, kind, to or '', by or '', payload}, '\n')
  redis.call('NOTIFY', stream, note)
  return added
end
";

impl Appending {
    fn new(notify: &str) -> Appending {
        let script =
            |body: &str| Script::new(&format!("{}{body}", APPEND.replace("NOTIFY", notify)));
        Appending {
            publish: script(PUBLISH),
            remove: script(REMOVE),
            dispatch: script(DISPATCH),
            remove_listener: script(REMOVE_LISTENER),
            attach: script(ATTACH),
        }
    }
}

/// Creates the channel's meta hash unless it exists: 1 created, 0 taken. `ARGV`:
/// epoch, settings JSON, maxlen, capacity.
pub(super) static CREATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'epoch', ARGV[1], 'seq', 0, 'settings', ARGV[2],
  'maxlen', ARGV[3], 'capacity', ARGV[4])
return 1
",
    )
});

/// Adds a broadcast: `seq` goes up by one, the entry gets the id `<seq>-0`. Returns
/// `{seq, epoch}`, or `-1` when the channel does not exist.
const PUBLISH: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
append(KEYS[1], KEYS[2], seq .. '-0', ARGV[1], ARGV[2])
return {seq, redis.call('HGET', KEYS[1], 'epoch')}
";

/// Ends a channel: a last entry that closes every process's copy, then the meta hash,
/// the listeners and their queues go and the stream expires (readers that were away a
/// moment still see the end). `ARGV[2]` is the queue keys' prefix.
const REMOVE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
append(nil, KEYS[2], seq .. '-0', ARGV[1], 'null')
for _, listener in ipairs(redis.call('HKEYS', KEYS[3])) do
  redis.call('DEL', ARGV[2] .. listener)
end
redis.call('DEL', KEYS[1], KEYS[3])
redis.call('EXPIRE', KEYS[2], 60)
return 1
";

/// Stores a listener reading from the next broadcast on: 1 added, 0 taken, -1 no
/// channel.
pub(super) static ADD_LISTENER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local next = redis.call('HGET', KEYS[1], 'seq') + 1
return redis.call('HSETNX', KEYS[2], ARGV[1], next)
",
    )
});

/// A dispatch after the newest broadcast: on the stream for whoever streams the
/// listener now, and on its queue until delivered. The entry id, or -1 no channel,
/// -2 no listener, `{-3, capacity}` queue full.
const DISPATCH: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 0 then return -2 end
local capacity = tonumber(redis.call('HGET', KEYS[1], 'capacity') or '0')
if capacity > 0 and redis.call('LLEN', KEYS[3]) >= capacity then return {-3, capacity} end
local seq = redis.call('HGET', KEYS[1], 'seq')
local id = append(KEYS[1], KEYS[4], seq .. '-*', ARGV[2], ARGV[3], ARGV[1])
redis.call('RPUSH', KEYS[3], id .. '\n' .. ARGV[2] .. '\n' .. ARGV[3])
return id
";

/// Removes a stored listener and its queue, and tells every process (its stream
/// ends): 1 removed, 0 no such listener.
const REMOVE_LISTENER: &str = r"
if redis.call('HDEL', KEYS[2], ARGV[1]) == 0 then return 0 end
redis.call('DEL', KEYS[3])
local seq = redis.call('HGET', KEYS[1], 'seq')
if seq then
  append(KEYS[1], KEYS[4], seq .. '-*', ARGV[2], 'null', ARGV[1])
end
return 1
";

/// A stream of a stored listener starts: the entry that ends its older streams
/// (`by` the new one), and the listener's queue, read at that same moment. `{entry id,
/// queued...}`, or -1 when the listener is gone.
const ATTACH: &str = r"
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 0 then return -1 end
local seq = redis.call('HGET', KEYS[1], 'seq')
local id = append(KEYS[1], KEYS[4], seq .. '-*', ARGV[2], 'null', ARGV[1], ARGV[3])
local reply = redis.call('LRANGE', KEYS[3], 0, -1)
table.insert(reply, 1, id)
return reply
";

/// Drops the queued dispatches up to entry `ARGV[1]-ARGV[2]` (delivered).
pub(super) static ACK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local seq, n = tonumber(ARGV[1]), tonumber(ARGV[2])
local acked = 0
while true do
  local head = redis.call('LINDEX', KEYS[1], 0)
  if not head then break end
  local s, k = string.match(head, '^(%d+)-(%d+)')
  s, k = tonumber(s), tonumber(k)
  if s and (s > seq or (s == seq and k > n)) then break end
  redis.call('LPOP', KEYS[1])
  acked = acked + 1
end
return acked
",
    )
});

/// Records where a stored listener is (unless it was removed meanwhile).
pub(super) static SAVE_POSITION: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
return 1
",
    )
});
