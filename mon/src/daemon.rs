//! The monitor daemon: loads and watches everything under the prefix, takes part in the
//! master election (`/mon/master` created under its lease), and as master writes
//! `/pg/config` + `/pg/history` when the decision changes and `/pool/stats`, `/stats` every
//! stats interval. Every write is one etcd transaction conditioned on still holding the
//! master key's lease and on the revisions the decision was based on, so a monitor that
//! lost mastership, or decided on stale data, writes nothing.
//!
//! All monitors (master or standby) keep the Prometheus text current.

use crate::plan::decide;
use crate::state::{Change, MonState};
use crate::stats::{aggregate, op_rates, prometheus_text};
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, LeaseKeepAliveStream, LeaseKeeper, PutOptions, Txn,
    TxnOp,
};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};
use vitastor_proto::backoff::Backoff;
use vitastor_proto::etcd::watch::WatchCursor;
use vitastor_proto::etcd::{endpoints, keys, MonMaster};

#[derive(Debug, Clone)]
pub struct MonOptions {
    pub etcd_address: String,
    pub etcd_prefix: String,
    pub prometheus_port: Option<u16>,
    pub http_ip: String,
    /// Master lease TTL; a standby takes over within about this long after the master dies.
    pub etcd_mon_ttl: Duration,
    /// Quiet time after a change before the placement is recomputed.
    pub mon_change_timeout: Duration,
    /// Interval of stats aggregation.
    pub mon_stats_timeout: Duration,
    /// Overrides `osd_out_time` from `/config/global`.
    pub osd_out_time: Option<u64>,
}

pub fn run(options: MonOptions) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, run_async(options))
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// Limit of one lease keep-alive or election call: well under the TTL, so a dead etcd
/// is noticed while the lease may still be alive.
const ETCD_QUICK_TIMEOUT: Duration = Duration::from_secs(1);

/// This monitor's lease and whether it holds `/mon/master`.
///
/// etcd may go away at any time: a keep-alive that fails leaves the lease as it is (it
/// survives a short etcd restart, and so does mastership); a lease etcd says is gone
/// makes this monitor step down, get a new lease as soon as etcd grants one, and
/// campaign again.
struct Election {
    client: Client,
    key: String,
    value: String,
    ttl: Duration,
    /// 0 = none (a grant failed; retried on every renewal).
    lease: i64,
    stream: Option<(LeaseKeeper, LeaseKeepAliveStream)>,
    last_renewal: Instant,
    is_master: bool,
    /// etcd revision at which our master key was created (a delete event at or before it
    /// is the previous master's key going away, not ours).
    key_revision: i64,
}

impl Election {
    async fn start(client: Client, key: String, ttl: Duration) -> Result<Election, String> {
        let value = serde_json::to_string(&MonMaster {
            ip: vec!["127.0.0.1".into()],
            id: Some(format!("pid {}", std::process::id())),
        })
        .expect("serializes");
        let mut election = Election {
            client,
            key,
            value,
            ttl,
            lease: 0,
            stream: None,
            last_renewal: Instant::now(),
            is_master: false,
            key_revision: 0,
        };
        election.grant().await?;
        Ok(election)
    }

    async fn grant(&mut self) -> Result<(), String> {
        let grant = self
            .client
            .lease_grant(self.ttl.as_secs().max(1) as i64, None);
        self.lease = match tokio::time::timeout(ETCD_QUICK_TIMEOUT, grant).await {
            Ok(Ok(response)) => response.id(),
            Ok(Err(error)) => return Err(format!("cannot get an etcd lease: {error}")),
            Err(_) => return Err("cannot get an etcd lease: no answer".into()),
        };
        self.stream = None;
        self.last_renewal = Instant::now();
        Ok(())
    }

    fn step_down(&mut self, why: &str) {
        if self.is_master {
            tracing::error!("{why}; stepping down");
        }
        self.is_master = false;
    }

    /// Renews the lease. Never fails: trouble with etcd is logged and retried on the next
    /// renewal.
    async fn renew(&mut self) {
        if self.lease == 0 {
            if let Err(error) = self.grant().await {
                tracing::warn!("{error}; retrying");
            }
            return;
        }
        match tokio::time::timeout(ETCD_QUICK_TIMEOUT, self.keep_alive()).await {
            Ok(Ok(true)) => self.last_renewal = Instant::now(),
            Ok(Ok(false)) => {
                self.step_down("etcd no longer has the master lease");
                self.lease = 0;
                if let Err(error) = self.grant().await {
                    tracing::warn!("{error}; retrying");
                }
            }
            failed => {
                self.stream = None;
                let reason = match failed {
                    Ok(Err(error)) => error,
                    _ => "no answer".to_string(),
                };
                tracing::warn!("cannot renew the monitor's etcd lease ({reason}); retrying");
                if self.last_renewal.elapsed() >= self.ttl {
                    self.step_down("the master lease was not renewed for a whole TTL");
                }
            }
        }
    }

    /// One keep-alive: Ok(true) alive, Ok(false) gone.
    async fn keep_alive(&mut self) -> Result<bool, String> {
        if let Some((keeper, responses)) = &mut self.stream {
            let answer = match keeper.keep_alive().await {
                Ok(()) => responses.message().await,
                Err(error) => Err(error),
            };
            match answer {
                Ok(Some(response)) => return Ok(response.ttl() > 0),
                // The stream broke (etcd restarted): open a new one.
                Ok(None) | Err(_) => self.stream = None,
            }
        }
        match self.client.lease_keep_alive(self.lease).await {
            Ok(pair) => {
                self.stream = Some(pair);
                Ok(true)
            }
            Err(etcd_client::Error::LeaseKeepAliveError(message))
                if message.contains("not found") =>
            {
                Ok(false)
            }
            Err(error) => Err(error.to_string()),
        }
    }

    /// Tries to become master: creates the key under our lease if nobody holds it.
    async fn campaign(&mut self) -> Result<(), String> {
        if self.lease == 0 {
            return Ok(());
        }
        let txn = Txn::new()
            .when([Compare::create_revision(
                self.key.as_str(),
                CompareOp::Equal,
                0,
            )])
            .and_then([TxnOp::put(
                self.key.as_str(),
                self.value.as_str(),
                Some(PutOptions::new().with_lease(self.lease)),
            )]);
        let response = match tokio::time::timeout(ETCD_QUICK_TIMEOUT, self.client.txn(txn)).await {
            Ok(result) => result.map_err(|e| format!("etcd: {e}"))?,
            Err(_) => return Err("etcd: no answer".into()),
        };
        if response.succeeded() {
            tracing::info!(lease = self.lease, "this monitor is now the master");
            self.is_master = true;
            self.key_revision = response.header().map_or(0, |h| h.revision());
            return Ok(());
        }
        // The key may be ours already (we stepped down on a stale event, or etcd came
        // back after an outage our lease survived): then we are it.
        let get = self.client.get(self.key.as_str(), None);
        let existing = match tokio::time::timeout(ETCD_QUICK_TIMEOUT, get).await {
            Ok(result) => result.map_err(|e| format!("etcd: {e}"))?,
            Err(_) => return Err("etcd: no answer".into()),
        };
        if let Some(kv) = existing.kvs().first() {
            if kv.lease() == self.lease {
                tracing::info!(lease = self.lease, "this monitor holds the master key");
                self.is_master = true;
                self.key_revision = kv.create_revision();
            }
        }
        Ok(())
    }

    /// The condition every master write carries.
    fn still_master(&self) -> Compare {
        Compare::lease(self.key.as_str(), CompareOp::Equal, self.lease)
    }
}

async fn run_async(options: MonOptions) -> Result<(), String> {
    let prefix = options.etcd_prefix.trim_end_matches('/').to_string();
    let connect = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(5))
        .with_timeout(Duration::from_secs(5))
        // A connection that stops answering pings is reopened, so a silently dead one
        // cannot hold the watch or the election.
        .with_keep_alive(Duration::from_secs(5), Duration::from_secs(30))
        .with_keep_alive_while_idle(true);
    let mut client = Client::connect(endpoints(&options.etcd_address), Some(connect))
        .await
        .map_err(|e| format!("cannot connect to etcd at {}: {e}", options.etcd_address))?;

    let metrics = Rc::new(RefCell::new(String::new()));
    if let Some(port) = options.prometheus_port {
        let address = format!("{}:{port}", options.http_ip);
        let listener = tokio::net::TcpListener::bind(&address)
            .await
            .map_err(|e| format!("cannot listen on {address} for Prometheus metrics: {e}"))?;
        tracing::info!("Prometheus metrics on http://{address}/metrics");
        tokio::task::spawn_local(crate::http::serve(listener, metrics.clone()));
    }

    let mut state = MonState::default();
    let mut cursor = WatchCursor::new();
    let loaded = crate::watch::load(&mut client, &prefix, &mut cursor)
        .await
        .map_err(|e| {
            format!(
                "cannot read {prefix}/ from etcd at {}: {e}",
                options.etcd_address
            )
        })?;
    let now = unix_now();
    for change in &loaded {
        state.apply(
            &change.key,
            change.value.as_deref(),
            change.mod_revision,
            now,
        );
    }
    // The watch runs on its own and survives etcd outages; the loop below takes its
    // batches.
    let (watch_tx, mut watch) = tokio::sync::mpsc::unbounded_channel();
    tokio::task::spawn_local(crate::watch::follow(
        client.clone(),
        prefix.clone(),
        cursor,
        watch_tx,
    ));

    let master_key = format!("{prefix}{}", keys::MON_MASTER);
    let mut election = Election::start(client.clone(), master_key, options.etcd_mon_ttl).await?;
    let mut ticker = tokio::time::interval(Duration::from_millis(250));
    let mut dirty_since = Some(Instant::now());
    let mut last_renewal_try = Instant::now();
    let mut last_decision_time = 0.0;
    let mut last_stats: Option<(Instant, serde_json::Value)> = None;
    let mut uniformity = BTreeMap::new();
    let mut campaign_retry = Backoff::new(Duration::from_millis(250), Duration::from_secs(2));
    let mut next_campaign = Instant::now();
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            changes = watch.recv() => {
                let Some(changes) = changes else {
                    return Err("the etcd watch task ended".into());
                };
                let now = unix_now();
                for change in &changes {
                    let key = change.key.as_str();
                    let value = change.value.as_deref();
                    if key == keys::MON_MASTER
                        && value.is_none()
                        && election.is_master
                        && change.mod_revision > election.key_revision
                    {
                        tracing::warn!("{}{} was deleted; campaigning again", prefix, keys::MON_MASTER);
                        election.is_master = false;
                    }
                    if state.apply(key, value, change.mod_revision, now) == Change::Placement {
                        dirty_since.get_or_insert_with(Instant::now);
                    }
                }
                continue;
            }
        }
        if last_renewal_try.elapsed() >= election.ttl / 3 {
            last_renewal_try = Instant::now();
            election.renew().await;
        }
        if !election.is_master && Instant::now() >= next_campaign {
            match election.campaign().await {
                Ok(()) => campaign_retry.reset(),
                Err(error) => {
                    // etcd away: try again later and later (up to 2 s, jittered), not
                    // on every tick, and log each failed attempt only.
                    let delay = campaign_retry.next_delay();
                    tracing::warn!("master election: {error}; retrying in {delay:?}");
                    next_campaign = Instant::now() + delay;
                }
            }
            if election.is_master {
                dirty_since = Some(Instant::now() - options.mon_change_timeout);
            }
        }
        let now = unix_now();
        let out_time = options
            .osd_out_time
            .unwrap_or_else(|| state.view.global.osd_out_time_s()) as f64;
        let changed = dirty_since.is_some_and(|t| t.elapsed() >= options.mon_change_timeout);
        if election.is_master
            && (changed || state.out_deadline_passed(last_decision_time, now, out_time))
        {
            dirty_since = None;
            last_decision_time = now;
            // A large cluster takes a second or two to solve: off the thread that keeps
            // the lease alive and reads the watch.
            let snapshot = state.clone();
            let mut solving = tokio::task::spawn_blocking(move || decide(&snapshot, now, out_time));
            let decision = loop {
                tokio::select! {
                    result = &mut solving => {
                        break result.map_err(|e| format!("the placement task failed: {e}"))?;
                    }
                    _ = tokio::time::sleep(election.ttl / 3) => election.renew().await,
                }
            };
            for note in &decision.notes {
                tracing::info!("{note}");
            }
            uniformity = decision.uniformity.clone();
            if decision.changed {
                match write_decision(&mut client, &prefix, &election, &state, &decision).await {
                    Ok(true) => {
                        tracing::info!(pgs = state.view.pg_config.len(), "wrote the new PG map")
                    }
                    Ok(false) => {
                        tracing::info!(
                            "etcd changed under the decision (or mastership moved); deciding again"
                        );
                        dirty_since = Some(Instant::now());
                    }
                    Err(error) => {
                        tracing::warn!("{error}");
                        dirty_since = Some(Instant::now());
                    }
                }
            }
        }
        if last_stats
            .as_ref()
            .is_none_or(|(at, _)| at.elapsed() >= options.mon_stats_timeout)
        {
            let (pools, cluster) = aggregate(&state, &uniformity);
            let rates = match &last_stats {
                Some((at, previous)) => op_rates(previous, &cluster, at.elapsed().as_secs_f64()),
                None => BTreeMap::new(),
            };
            *metrics.borrow_mut() =
                prometheus_text(&state, &pools, &cluster, &rates, election.is_master);
            if election.is_master {
                if let Err(error) =
                    write_stats(&mut client, &prefix, &election, &pools, &cluster).await
                {
                    tracing::warn!("cannot write stats: {error}");
                }
            }
            last_stats = Some((Instant::now(), cluster));
        }
    }
}

/// Writes `/pg/config` and the history entries in one transaction; false if a condition
/// failed (not master any more, or a key changed since it was read).
async fn write_decision(
    client: &mut Client,
    prefix: &str,
    election: &Election,
    state: &MonState,
    decision: &crate::plan::Decision,
) -> Result<bool, String> {
    let config_key = format!("{prefix}{}", keys::PG_CONFIG);
    let mut compares = vec![
        election.still_master(),
        Compare::mod_revision(
            config_key.as_str(),
            CompareOp::Equal,
            state.pg_config_revision,
        ),
    ];
    let config_json = serde_json::to_string(&decision.pg_config).expect("serializes");
    let mut ops = vec![TxnOp::put(config_key.as_str(), config_json, None)];
    for ((pool, pg), history) in &decision.history {
        let key = format!("{prefix}{}{pool}/{pg}", keys::PG_HISTORY);
        let revision = state
            .pg_history_revisions
            .get(&(*pool, *pg))
            .copied()
            .unwrap_or(0);
        compares.push(Compare::mod_revision(
            key.as_str(),
            CompareOp::Equal,
            revision,
        ));
        ops.push(TxnOp::put(
            key,
            serde_json::to_string(history).expect("serializes"),
            None,
        ));
    }
    let response = client
        .txn(Txn::new().when(compares).and_then(ops))
        .await
        .map_err(|e| format!("cannot write the PG map: {e}"))?;
    Ok(response.succeeded())
}

async fn write_stats(
    client: &mut Client,
    prefix: &str,
    election: &Election,
    pools: &BTreeMap<u32, serde_json::Value>,
    cluster: &serde_json::Value,
) -> Result<(), String> {
    let mut ops = vec![TxnOp::put(
        format!("{prefix}{}", keys::STATS),
        cluster.to_string(),
        None,
    )];
    for (pool, stats) in pools {
        ops.push(TxnOp::put(
            format!("{prefix}{}{pool}", keys::POOL_STATS),
            stats.to_string(),
            None,
        ));
    }
    client
        .txn(Txn::new().when([election.still_master()]).and_then(ops))
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}
