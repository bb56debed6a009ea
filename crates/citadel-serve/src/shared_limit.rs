//! Rate limits shared by every gateway replica through Redis.
//!
//! The algorithm is the generic cell rate algorithm (GCRA, ITU-T I.371;
//! the one the local limiter, governor, implements): a key's state is its
//! theoretical arrival time `TAT`; with emission interval `T = 1 s / rate`
//! and tolerance `τ = (burst − 1)·T`, a request at `now` is allowed when
//! `max(TAT, now) − now ≤ τ`, and then `TAT = max(TAT, now) + T`. One Lua
//! script does the read, the test and the write atomically, on Redis's own
//! clock (`TIME`), so replicas whose clocks disagree still share one limit.
//!
//! When Redis cannot answer within [`CALL_TIMEOUT`] the caller decides
//! ([`Fallback`]): each replica's own limiter (the limit then holds per
//! replica, not across them) or refusal (fail closed). After a failure
//! Redis is not asked again for [`RETRY_AFTER`] (one request then probes
//! it), so an outage costs requests no waiting.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// The longest a request waits for Redis before the fallback applies.
pub const CALL_TIMEOUT: Duration = Duration::from_millis(100);

/// How long after a failure Redis is left alone.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);

/// What a replica does when Redis does not answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// Its own limiter, with the same quota (the default: serving goes on).
    Local,
    /// Refuse with 503 until Redis answers again (fail closed).
    Deny,
}

impl std::str::FromStr for Fallback {
    type Err = String;
    fn from_str(s: &str) -> Result<Fallback, String> {
        match s {
            "local" => Ok(Fallback::Local),
            "deny" => Ok(Fallback::Deny),
            other => Err(format!("{other:?} is not a fallback: use local or deny")),
        }
    }
}

/// The shared limiter's answer for one request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    Allow,
    /// Refused; allowed again after this long.
    Deny(Duration),
    /// Redis did not answer in time, or failed.
    Unavailable,
}

const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
if tat - now > tolerance then
  return {0, math.ceil(tat - now - tolerance)}
end
local next_tat = tat + interval
redis.call('SET', KEYS[1], string.format('%.0f', next_tat), 'PX', math.floor((next_tat - now) / 1000) + 1)
return {1, 0}
";

pub struct SharedLimiter {
    conn: ConnectionManager,
    script: redis::Script,
    /// Whether the last call failed (so a change is reported once, not per request).
    down: AtomicBool,
    /// Until when (ms since `epoch`) Redis is not asked, after a failure.
    quiet_until: AtomicU64,
    epoch: Instant,
}

impl std::fmt::Debug for SharedLimiter {
    // The URL may hold a password: never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedLimiter").finish_non_exhaustive()
    }
}

impl SharedLimiter {
    /// A limiter on the Redis at `url` (`redis://[:password@]host:port/db`,
    /// `rediss://` for TLS). Connects lazily: a gateway starts while Redis
    /// is down, and reconnects when it is back. Errors: a malformed URL.
    pub fn new(url: &str) -> Result<SharedLimiter, redis::RedisError> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CALL_TIMEOUT))
            .set_response_timeout(Some(CALL_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client, config)?;
        Ok(SharedLimiter {
            conn,
            script: redis::Script::new(GCRA),
            down: AtomicBool::new(false),
            quiet_until: AtomicU64::new(0),
            epoch: Instant::now(),
        })
    }

    /// One request against `key`'s quota of `per_sec` requests a second
    /// with bursts of `burst`.
    pub async fn check(&self, key: &str, per_sec: u32, burst: u32) -> Verdict {
        let now_ms = self.epoch.elapsed().as_millis() as u64;
        let quiet = self.quiet_until.load(Ordering::Relaxed);
        if now_ms < quiet {
            return Verdict::Unavailable;
        }
        if quiet > 0 {
            // One request probes; the others keep the fallback meanwhile.
            let next = now_ms + RETRY_AFTER.as_millis() as u64;
            if self.quiet_until.compare_exchange(quiet, next, Ordering::SeqCst, Ordering::Relaxed).is_err() {
                return Verdict::Unavailable;
            }
        }
        let interval = 1_000_000 / u64::from(per_sec.max(1));
        let tolerance = interval * u64::from(burst.max(1) - 1);
        let mut conn = self.conn.clone();
        let mut call = self.script.key(format!("citadel:rate:{key}"));
        call.arg(interval).arg(tolerance);
        let answer = tokio::time::timeout(CALL_TIMEOUT, call.invoke_async::<(i64, i64)>(&mut conn)).await;
        let verdict = match answer {
            Ok(Ok((1, _))) => Verdict::Allow,
            Ok(Ok((_, wait_us))) => Verdict::Deny(Duration::from_micros(u64::try_from(wait_us).unwrap_or(0))),
            _ => Verdict::Unavailable,
        };
        let quiet = if verdict == Verdict::Unavailable {
            self.epoch.elapsed().as_millis() as u64 + RETRY_AFTER.as_millis() as u64
        } else {
            0
        };
        self.quiet_until.store(quiet, Ordering::Relaxed);
        verdict
    }

    /// Records whether the last call reached Redis; true when that changed.
    pub fn note(&self, reachable: bool) -> bool {
        self.down.swap(!reachable, Ordering::SeqCst) == reachable
    }
}
