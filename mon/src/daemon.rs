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
    Client, Compare, CompareOp, ConnectOptions, GetOptions, LeaseKeepAliveStream, LeaseKeeper,
    PutOptions, Txn, TxnOp, WatchOptions,
};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};
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

/// This monitor's lease and whether it holds `/mon/master`.
struct Election {
    client: Client,
    key: String,
    value: String,
    ttl: Duration,
    lease: i64,
    keeper: LeaseKeeper,
    stream: LeaseKeepAliveStream,
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
        let (lease, keeper, stream) = grant(&client, ttl).await?;
        Ok(Election {
            client,
            key,
            value,
            ttl,
            lease,
            keeper,
            stream,
            last_renewal: Instant::now(),
            is_master: false,
            key_revision: 0,
        })
    }

    /// Renews the lease; after a whole TTL without renewal it is gone: step down and get a
    /// new one.
    async fn renew(&mut self) -> Result<(), String> {
        let renewed = match self.keeper.keep_alive().await {
            Ok(()) => matches!(self.stream.message().await, Ok(Some(r)) if r.ttl() > 0),
            Err(_) => false,
        };
        if renewed {
            self.last_renewal = Instant::now();
        } else if self.last_renewal.elapsed() >= self.ttl {
            if self.is_master {
                tracing::error!("lost the master lease; stepping down");
            }
            self.is_master = false;
            let (lease, keeper, stream) = grant(&self.client, self.ttl).await?;
            (self.lease, self.keeper, self.stream) = (lease, keeper, stream);
            self.last_renewal = Instant::now();
        }
        Ok(())
    }

    /// Tries to become master: creates the key under our lease if nobody holds it.
    async fn campaign(&mut self) -> Result<(), String> {
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
        let response = self
            .client
            .txn(txn)
            .await
            .map_err(|e| format!("etcd: {e}"))?;
        if response.succeeded() {
            tracing::info!(lease = self.lease, "this monitor is now the master");
            self.is_master = true;
            self.key_revision = response.header().map_or(0, |h| h.revision());
            return Ok(());
        }
        // The key may be ours already (we stepped down on a stale event): then we are it.
        let existing = self
            .client
            .get(self.key.as_str(), None)
            .await
            .map_err(|e| format!("etcd: {e}"))?;
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

async fn grant(
    client: &Client,
    ttl: Duration,
) -> Result<(i64, LeaseKeeper, LeaseKeepAliveStream), String> {
    let mut client = client.clone();
    let lease = client
        .lease_grant(ttl.as_secs().max(1) as i64, None)
        .await
        .map_err(|e| format!("cannot get an etcd lease: {e}"))?
        .id();
    let (keeper, stream) = client
        .lease_keep_alive(lease)
        .await
        .map_err(|e| format!("cannot keep the etcd lease alive: {e}"))?;
    Ok((lease, keeper, stream))
}

async fn run_async(options: MonOptions) -> Result<(), String> {
    let prefix = options.etcd_prefix.trim_end_matches('/').to_string();
    let connect = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(5))
        .with_timeout(Duration::from_secs(10));
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
    let loaded = client
        .get(prefix.clone() + "/", Some(GetOptions::new().with_prefix()))
        .await
        .map_err(|e| {
            format!(
                "cannot read {prefix}/ from etcd at {}: {e}",
                options.etcd_address
            )
        })?;
    let now = unix_now();
    for kv in loaded.kvs() {
        if let Some(key) = kv.key_str().ok().and_then(|k| k.strip_prefix(&prefix)) {
            state.apply(key, Some(kv.value()), kv.mod_revision(), now);
        }
    }
    let revision = loaded.header().map_or(0, |h| h.revision());
    let (_watcher, mut watch) = client
        .watch(
            prefix.clone() + "/",
            Some(
                WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(revision + 1),
            ),
        )
        .await
        .map_err(|e| format!("cannot watch etcd: {e}"))?;

    let master_key = format!("{prefix}{}", keys::MON_MASTER);
    let mut election = Election::start(client.clone(), master_key, options.etcd_mon_ttl).await?;
    let mut ticker = tokio::time::interval(Duration::from_millis(250));
    let mut dirty_since = Some(Instant::now());
    let mut last_renewal_try = Instant::now();
    let mut last_decision_time = 0.0;
    let mut last_stats: Option<(Instant, serde_json::Value)> = None;
    let mut uniformity = BTreeMap::new();
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            message = watch.message() => {
                let response = match message {
                    Ok(Some(response)) => response,
                    Ok(None) => return Err("the etcd watch ended".into()),
                    Err(error) => return Err(format!("the etcd watch failed: {error}")),
                };
                let now = unix_now();
                for event in response.events() {
                    let Some(kv) = event.kv() else { continue };
                    let Some(key) = kv.key_str().ok().and_then(|k| k.strip_prefix(&prefix)) else { continue };
                    let value = match event.event_type() {
                        etcd_client::EventType::Put => Some(kv.value()),
                        etcd_client::EventType::Delete => None,
                    };
                    if key == keys::MON_MASTER
                        && value.is_none()
                        && election.is_master
                        && kv.mod_revision() > election.key_revision
                    {
                        tracing::warn!("{}{} was deleted; campaigning again", prefix, keys::MON_MASTER);
                        election.is_master = false;
                    }
                    if state.apply(key, value, kv.mod_revision(), now) == Change::Placement {
                        dirty_since.get_or_insert_with(Instant::now);
                    }
                }
                continue;
            }
        }
        if last_renewal_try.elapsed() >= election.ttl / 3 {
            last_renewal_try = Instant::now();
            election.renew().await?;
        }
        if !election.is_master {
            if let Err(error) = election.campaign().await {
                tracing::warn!("master election: {error}");
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
                    _ = tokio::time::sleep(election.ttl / 3) => election.renew().await?,
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
