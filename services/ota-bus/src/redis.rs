//! The Redis Streams bus, for deployments with more than one process. Each
//! topic is the stream `ota:bus:{topic}`; each consumer group is a Redis
//! consumer group on it, so Redis tracks who took what (the pending entries
//! list) and messages survive a consumer's crash.

use std::future::Future;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::streams::{
    StreamAutoClaimOptions, StreamAutoClaimReply, StreamId, StreamInfoGroupsReply, StreamMaxlen,
    StreamPendingCountReply, StreamRangeReply, StreamReadOptions, StreamReadReply,
};
use redis::{AsyncConnectionConfig, Client, ErrorKind, RedisError, RedisResult, ServerErrorKind};
use tokio::time::Instant;

use crate::{Bus, BusError, Message, Subscription, DEFAULT_CLAIM_TIMEOUT, DEFAULT_MAX_LEN};

/// The stream field that holds the payload.
const FIELD: &str = "payload";
/// XADDs per MULTI/EXEC, so one huge publish does not hold Redis for long.
const PUBLISH_CHUNK: usize = 1000;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a command may take beyond its own BLOCK time before the
/// connection is presumed dead.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);
/// Page size when Redis cannot report a group's lag and it is counted instead.
const COUNT_PAGE: usize = 10_000;

/// The Redis key of a topic's stream.
pub fn stream_key(topic: &str) -> String {
    format!("ota:bus:{topic}")
}

/// Publishing and `depth` share one multiplexed connection (reconnected on
/// failure). Each subscription opens its own: a blocking XREADGROUP holds its
/// connection on the server until it returns, and on a shared multiplexed
/// connection every publisher would queue behind it.
#[derive(Clone)]
pub struct RedisBus {
    client: Client,
    conn: ConnectionManager,
    /// The URL with its password redacted, for errors and logs.
    url: String,
    claim_timeout: Duration,
    max_len: usize,
}

impl RedisBus {
    /// Connects to Redis at `url` (`redis://[:password@]host[:port][/db]`).
    pub async fn connect(url: &str) -> Result<Self, BusError> {
        let shown = ota_db::redact(url);
        let client = Client::open(url)
            .map_err(|e| BusError::Internal(format!("invalid redis url {shown}: {e}")))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(2);
        let conn = client
            .get_connection_manager_with_config(config)
            .await
            .map_err(|e| {
                BusError::Unavailable(format!("cannot connect to redis at {shown}: {e}"))
            })?;
        tracing::debug!(redis = %shown, "event bus connected");
        Ok(Self {
            client,
            conn,
            url: shown,
            claim_timeout: DEFAULT_CLAIM_TIMEOUT,
            max_len: DEFAULT_MAX_LEN,
        })
    }

    /// How long a consumer may hold a message before another consumer of the
    /// group gets it.
    pub fn with_claim_timeout(mut self, timeout: Duration) -> Self {
        self.claim_timeout = timeout;
        self
    }

    /// Approximate number of messages a stream retains (XADD MAXLEN ~); the
    /// oldest go first, acknowledged or not.
    pub fn with_max_len(mut self, max_len: usize) -> Self {
        self.max_len = max_len.max(1);
        self
    }

    fn error(&self, what: &str, e: RedisError) -> BusError {
        classify(&self.url, what, e)
    }
}

fn classify(url: &str, what: &str, e: RedisError) -> BusError {
    let msg = format!("redis at {url}: {what}: {e}");
    let transient = matches!(
        e.kind(),
        ErrorKind::Io
            | ErrorKind::Server(
                ServerErrorKind::BusyLoading
                    | ServerErrorKind::TryAgain
                    | ServerErrorKind::ClusterDown
                    | ServerErrorKind::MasterDown
                    | ServerErrorKind::ReadOnly
            )
    );
    if transient || e.is_unrecoverable_error() {
        BusError::Unavailable(msg)
    } else {
        BusError::Internal(msg)
    }
}

/// Converts stream entries, skipping (and reporting) any without a payload
/// field: only this crate writes these streams, so such an entry is foreign.
fn to_messages(topic: &str, entries: Vec<StreamId>, redeliveries: &[u32]) -> Vec<Message> {
    entries
        .into_iter()
        .enumerate()
        .filter_map(|(i, entry)| match entry.get::<String>(FIELD) {
            Some(payload) => Some(Message {
                id: entry.id,
                topic: topic.to_owned(),
                payload,
                redeliveries: redeliveries.get(i).copied().unwrap_or(0),
            }),
            None => {
                tracing::warn!(topic, id = %entry.id, "stream entry without a payload field, skipped");
                None
            }
        })
        .collect()
}

#[async_trait::async_trait]
impl Bus for RedisBus {
    fn name(&self) -> &'static str {
        "redis"
    }

    async fn publish(&self, topic: &str, payloads: &[String]) -> Result<(), BusError> {
        let key = stream_key(topic);
        let mut conn = self.conn.clone();
        for chunk in payloads.chunks(PUBLISH_CHUNK) {
            // MULTI/EXEC: a chunk lands whole or not at all, so a retry after
            // a failure duplicates as little as possible.
            let mut pipe = redis::pipe();
            pipe.atomic();
            for p in chunk {
                pipe.xadd_maxlen(&key, StreamMaxlen::Approx(self.max_len), "*", &[(FIELD, p)])
                    .ignore();
            }
            pipe.query_async::<()>(&mut conn)
                .await
                .map_err(|e| self.error(&format!("publishing to {key}"), e))?;
        }
        Ok(())
    }

    async fn subscribe(
        &self,
        topic: &str,
        group: &str,
        consumer: &str,
    ) -> Result<Box<dyn Subscription>, BusError> {
        let key = stream_key(topic);
        let mut conn = self.conn.clone();
        create_group(&mut conn, &key, group)
            .await
            .map_err(|e| self.error(&format!("creating group {group} on {key}"), e))?;
        let mut sub = RedisSubscription {
            client: self.client.clone(),
            conn: None,
            url: self.url.clone(),
            key,
            topic: topic.to_owned(),
            group: group.to_owned(),
            consumer: consumer.to_owned(),
            claim_timeout: self.claim_timeout,
            claim_cursor: "0-0".to_owned(),
            next_claim: Instant::now(),
        };
        // Connecting now makes a dead Redis fail the subscribe, not the
        // first read.
        sub.connection().await?;
        Ok(Box::new(sub))
    }

    async fn depth(&self, topic: &str, group: &str) -> Result<u64, BusError> {
        let key = stream_key(topic);
        let mut conn = self.conn.clone();
        let what = format!("reading the depth of group {group} on {key}");
        // XINFO GROUPS fails on a missing key; a missing key has no groups.
        let exists: bool = redis::cmd("EXISTS")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .map_err(|e| self.error(&what, e))?;
        if !exists {
            return Ok(0);
        }
        let info: StreamInfoGroupsReply = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .map_err(|e| self.error(&what, e))?;
        let Some(g) = info.groups.into_iter().find(|g| g.name == group) else {
            return Ok(0);
        };
        let lag = match g.lag {
            Some(lag) => lag as u64,
            // Redis reports no lag when entries were deleted (XDEL) inside
            // the undelivered range; this crate never deletes, but someone
            // else might, so count the hard way.
            None => {
                let mut count = 0u64;
                let mut start = format!("({}", g.last_delivered_id);
                loop {
                    let page: StreamRangeReply = redis::cmd("XRANGE")
                        .arg(&key)
                        .arg(&start)
                        .arg("+")
                        .arg("COUNT")
                        .arg(COUNT_PAGE)
                        .query_async(&mut conn)
                        .await
                        .map_err(|e| self.error(&what, e))?;
                    count += page.ids.len() as u64;
                    match page.ids.last() {
                        Some(last) if page.ids.len() == COUNT_PAGE => {
                            start = format!("({}", last.id)
                        }
                        _ => break count,
                    }
                }
            }
        };
        Ok(g.pending as u64 + lag)
    }
}

/// XGROUP CREATE at the stream's start (creating the stream); an existing
/// group is left as it is.
async fn create_group(
    conn: &mut impl redis::aio::ConnectionLike,
    key: &str,
    group: &str,
) -> RedisResult<()> {
    match redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(key)
        .arg(group)
        .arg("0")
        .arg("MKSTREAM")
        .query_async::<()>(conn)
        .await
    {
        Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
        other => other,
    }
}

pub struct RedisSubscription {
    client: Client,
    /// This subscription's own connection; `None` after it failed, so the
    /// next call reconnects.
    conn: Option<MultiplexedConnection>,
    url: String,
    key: String,
    topic: String,
    group: String,
    consumer: String,
    claim_timeout: Duration,
    /// Where the next XAUTOCLAIM continues its walk of the pending list.
    claim_cursor: String,
    /// When to look for abandoned messages again.
    next_claim: Instant,
}

impl RedisSubscription {
    async fn connection(&mut self) -> Result<MultiplexedConnection, BusError> {
        if let Some(c) = &self.conn {
            return Ok(c.clone());
        }
        // No response timeout of the client's own: `call` bounds each command
        // by its BLOCK time plus a margin instead.
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(None);
        let conn = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| {
                BusError::Unavailable(format!("cannot connect to redis at {}: {e}", self.url))
            })?;
        self.conn = Some(conn.clone());
        Ok(conn)
    }

    /// Runs one request on this subscription's connection, dropping the
    /// connection when it failed or did not answer within `block` plus the
    /// response timeout.
    async fn call<T, F, Fut>(&mut self, what: &str, block: Duration, f: F) -> Result<T, BusError>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let conn = self.connection().await?;
        let limit = block + RESPONSE_TIMEOUT;
        match tokio::time::timeout(limit, f(conn)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                if e.is_unrecoverable_error() || e.is_io_error() {
                    self.conn = None;
                }
                Err(classify(&self.url, what, e))
            }
            Err(_) => {
                self.conn = None;
                Err(BusError::Unavailable(format!(
                    "redis at {}: {what}: no answer within {limit:?}",
                    self.url
                )))
            }
        }
    }

    /// Takes over messages other consumers of the group left unacknowledged
    /// past the claim timeout.
    async fn claim(&mut self, max: usize) -> Result<Vec<Message>, BusError> {
        let cmd = redis::cmd("XAUTOCLAIM")
            .arg(&self.key)
            .arg(&self.group)
            .arg(&self.consumer)
            .arg(self.claim_timeout.as_millis() as u64)
            .arg(&self.claim_cursor)
            .arg(StreamAutoClaimOptions::default().count(max))
            .take();
        let what = format!(
            "claiming abandoned messages of {} on {}",
            self.group, self.key
        );
        let reply: StreamAutoClaimReply = self
            .call(&what, Duration::ZERO, |mut c| async move {
                match cmd.query_async(&mut c).await {
                    // The stream is gone; `read_new` recreates the group.
                    Err(e) if e.code() == Some("NOGROUP") => Ok(StreamAutoClaimReply {
                        next_stream_id: "0-0".to_owned(),
                        ..Default::default()
                    }),
                    other => other,
                }
            })
            .await?;
        // A finished walk (cursor back at 0-0) waits a while before the next
        // one; an unfinished one continues on the next call.
        self.next_claim = if reply.next_stream_id == "0-0" {
            Instant::now() + claim_check_interval(self.claim_timeout)
        } else {
            Instant::now()
        };
        self.claim_cursor = reply.next_stream_id;
        if reply.claimed.is_empty() {
            return Ok(Vec::new());
        }
        // XAUTOCLAIM does not say how often an entry was delivered; XPENDING
        // on each claimed id does.
        let mut pipe = redis::pipe();
        for entry in &reply.claimed {
            pipe.cmd("XPENDING")
                .arg(&self.key)
                .arg(&self.group)
                .arg(&entry.id)
                .arg(&entry.id)
                .arg(1);
        }
        let what = format!("reading delivery counts of {} on {}", self.group, self.key);
        let pending: Vec<StreamPendingCountReply> = self
            .call(&what, Duration::ZERO, |mut c| async move {
                pipe.query_async(&mut c).await
            })
            .await?;
        let redeliveries: Vec<u32> = pending
            .iter()
            .map(|p| {
                p.ids
                    .first()
                    .map_or(1, |id| id.times_delivered.saturating_sub(1) as u32)
            })
            .collect();
        Ok(to_messages(&self.topic, reply.claimed, &redeliveries))
    }

    /// New messages, waiting up to `block` (not at all when zero).
    async fn read_new(&mut self, max: usize, block: Duration) -> Result<Vec<Message>, BusError> {
        let mut opts = StreamReadOptions::default()
            .group(&self.group, &self.consumer)
            .count(max);
        if !block.is_zero() {
            // BLOCK 0 would wait forever.
            opts = opts.block((block.as_millis() as usize).max(1));
        }
        let cmd = redis::cmd("XREADGROUP")
            .arg(&opts)
            .arg("STREAMS")
            .arg(&self.key)
            .arg(">")
            .take();
        let (key, group) = (self.key.clone(), self.group.clone());
        let what = format!("reading group {group} on {key}");
        let reply = self
            .call(&what, block, |mut c| async move {
                match cmd.query_async::<Option<StreamReadReply>>(&mut c).await {
                    // The stream or group was deleted behind our back:
                    // recreate the group so consumers carry on with what
                    // comes next.
                    Err(e) if e.code() == Some("NOGROUP") => {
                        create_group(&mut c, &key, &group).await.map(|()| None)
                    }
                    other => other,
                }
            })
            .await?;
        let entries = reply
            .map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect())
            .unwrap_or_default();
        Ok(to_messages(&self.topic, entries, &[]))
    }
}

/// How often a waiting consumer looks for abandoned messages: often enough
/// that they move on soon after the claim timeout, rarely enough to cost
/// nothing.
fn claim_check_interval(claim_timeout: Duration) -> Duration {
    (claim_timeout / 4).clamp(Duration::from_millis(25), Duration::from_secs(5))
}

#[async_trait::async_trait]
impl Subscription for RedisSubscription {
    async fn next(&mut self, max: usize, wait: Duration) -> Result<Vec<Message>, BusError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let deadline = Instant::now() + wait;
        loop {
            if Instant::now() >= self.next_claim {
                let claimed = self.claim(max).await?;
                if !claimed.is_empty() {
                    return Ok(claimed);
                }
            }
            // Block no longer than until the next claim check, so messages
            // abandoned meanwhile do not wait for the whole `wait`.
            let now = Instant::now();
            let block = deadline
                .saturating_duration_since(now)
                .min(self.next_claim.saturating_duration_since(now));
            let fresh = self.read_new(max, block).await?;
            if !fresh.is_empty() || Instant::now() >= deadline {
                return Ok(fresh);
            }
        }
    }

    async fn ack(&mut self, ids: &[String]) -> Result<(), BusError> {
        if ids.is_empty() {
            return Ok(());
        }
        let cmd = redis::cmd("XACK")
            .arg(&self.key)
            .arg(&self.group)
            .arg(ids)
            .take();
        let what = format!("acknowledging messages of {} on {}", self.group, self.key);
        self.call(&what, Duration::ZERO, |mut c| async move {
            cmd.query_async::<u64>(&mut c).await
        })
        .await
        .map(drop)
    }
}
