//! Build binds and returns the real address; run serves until shutdown.

use crate::{
    api::{audit::AuditApi, participants::ParticipantApi, reporting::ReportingApi},
    auth::{Authenticate, Authenticator, ClientCertificates},
    clock::Clock,
    config::{Config, Mode},
    crypto::Keyring,
    domain::{national_id::IdMode, participant::Rules},
    http::HttpState,
    inbound::{self, arena::ArenaFeed, nokut::NokutFeed},
    keys::Keys,
    store::{self, ChangeSignal, Location, Store, StoreOptions, SyncConfig},
    sync::{Dispatcher, RetryPolicy},
};
use anyhow::Context;
use hurtigspor_adapters::{
    Target,
    arena::{ArenaConfig, ArenaTarget},
    nir::{NirConfig, NirTarget},
    nokut::{NokutConfig, NokutTarget},
    resilience::{BreakerConfig, Metrics, Resilient},
};
use hurtigspor_proto::v1::{
    audit_service_server::AuditServiceServer, participant_service_server::ParticipantServiceServer,
    reporting_service_server::ReportingServiceServer, sync_service_server::SyncServiceServer,
};
use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};
use tokio::net::TcpListener;
use tonic::{
    service::interceptor::InterceptedService,
    transport::{Server, ServerTlsConfig, server::TcpIncoming},
};

pub struct Gateway {
    listener: TcpListener,
    addr: SocketAddr,
    http: Option<(TcpListener, SocketAddr)>,
    store: Arc<dyn Store>,
    /// Wakes WatchChanges streams when a change commits, here or on
    /// another instance of a shared database.
    changes: ChangeSignal,
    /// Wakes the feeds when changes are kept in the inbox (a webhook, here
    /// or on another instance).
    received: ChangeSignal,
    api: ParticipantApi,
    audit_api: AuditApi,
    reporting_api: ReportingApi,
    config: Config,
    dispatcher: Arc<Dispatcher>,
    feeds: Feeds,
    /// Every target's reconcile counts, latency and breaker state.
    metrics: Arc<Metrics>,
    auth: Authenticator,
    /// Dev mode: ready tokens for the dev organisations.
    dev_tokens: Option<serde_json::Map<String, serde_json::Value>>,
    /// TLS on the gRPC port, from `[tls]`.
    tls: Option<ServerTlsConfig>,
    /// The time every rule and retry is decided at.
    clock: Clock,
}

/// The token checker: from `[auth]`, or in dev mode (without `[auth]`) a
/// local signing key with ready tokens, written to `<data_dir>/dev-tokens.json`.
async fn authentication(
    config: &Config,
) -> anyhow::Result<(Authenticator, Option<serde_json::Map<String, serde_json::Value>>)> {
    if let Some(auth) = &config.auth {
        return Ok((Authenticator::from_config(auth).await?, None));
    }
    anyhow::ensure!(config.mode == Mode::Dev, "section [auth] is required in production");
    let key = crate::auth::dev::signing_key(&config.data_dir)?;
    let jwks = crate::auth::dev::jwks(&key)?;
    let auth = Authenticator::new(&crate::auth::dev::config(), &jwks)?;
    let tokens = crate::auth::dev::tokens(&key, 12)?;
    let path = config.data_dir.join("dev-tokens.json");
    let _ = std::fs::remove_file(&path);
    crate::keys::write_private_bytes(&path, serde_json::to_string_pretty(&tokens)?.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok((auth, Some(tokens)))
}

/// The configured targets, and the clients their change feeds are read with.
struct Targets {
    all: Vec<Arc<dyn Target>>,
    arena: Option<Arc<ArenaTarget>>,
    nokut: Option<Arc<NokutTarget>>,
    nokut_secret: Option<String>,
    /// Where NOKUT should send webhooks, if not to our own HTTP listener.
    nokut_webhook_url: Option<String>,
}

/// The inbound readers and what they need at run time.
struct Feeds {
    arena: Option<Arc<ArenaFeed>>,
    nokut: Option<Arc<NokutFeed>>,
    nokut_wake: Arc<tokio::sync::Notify>,
    nokut_secret: Option<String>,
    nokut_webhook_url: Option<String>,
}

/// The targets in `[targets]`, and no others: whoever stands in for a system
/// (the dev command's in-process mocks, a test's) is configured there. Each
/// delivers through a circuit breaker that reports to `metrics`, under its
/// own name.
fn targets(config: &Config, metrics: &Arc<Metrics>, clock: &Clock) -> Targets {
    let t = &config.targets;
    let timeout = Duration::from_secs(t.timeout_secs.max(1));
    let mut all: Vec<Arc<dyn Target>> = Vec::new();
    let arena = t.arena.as_ref().map(|a| {
        Arc::new(
            ArenaTarget::new(ArenaConfig {
                base_url: a.base_url.clone(),
                client_id: a.client_id.clone(),
                client_secret: a.client_secret.expose().to_owned(),
                timeout,
            })
            .with_clock(clock.clone()),
        )
    });
    if let Some(a) = &arena {
        all.push(a.clone());
    }
    if let Some(n) = &t.nir {
        all.push(Arc::new(NirTarget::new(NirConfig {
            base_url: n.base_url.clone(),
            username: n.username.clone(),
            password: n.password.expose().to_owned(),
            timeout,
        })));
    }
    let (nokut, nokut_secret, nokut_webhook_url) = if let Some(n) = &t.nokut {
        let target = NokutTarget::new(NokutConfig {
            base_url: n.base_url.clone(),
            api_key: n.api_key.expose().to_owned(),
            timeout,
        });
        (Some(Arc::new(target)), n.webhook_secret.as_ref().map(|s| s.expose().to_owned()), n.webhook_url.clone())
    } else {
        (None, None, None)
    };
    if let Some(n) = &nokut {
        all.push(n.clone());
    }
    let s = &config.sync;
    let breaker = BreakerConfig {
        failure_threshold: s.breaker_failures,
        cool_down: Duration::from_millis(s.breaker_cool_down_ms),
        max_cool_down: Duration::from_millis(s.breaker_max_cool_down_ms),
    };
    let all = all.into_iter().map(|t| Resilient::wrap(t, breaker.clone(), Arc::clone(metrics))).collect();
    Targets { all, arena, nokut, nokut_secret, nokut_webhook_url }
}

impl Gateway {
    /// Opens the store (applying migrations), loads keys and binds the
    /// listener. Port 0 binds a free port; `local_addr` tells which.
    pub async fn build(config: Config, clock: Clock) -> anyhow::Result<Self> {
        config.validate()?;
        let keys = Keys::load(&config)?;
        let keyring = Arc::new(Keyring::load(&config)?);
        let (auth, dev_tokens) = authentication(&config).await?;
        let tls = config.tls.as_ref().map(crate::tls::server_config).transpose()?;
        let location = Location::of(&config);
        let metrics = Arc::new(Metrics::new());
        let Targets { all: targets, arena, nokut, nokut_secret, nokut_webhook_url } =
            targets(&config, &metrics, &clock);
        let wake = Arc::new(tokio::sync::Notify::new());
        let sync = SyncConfig {
            targets: targets.iter().map(|t| t.name().to_owned()).collect(),
            wake: wake.clone(),
            changes: ChangeSignal::default(),
            inbox: ChangeSignal::default(),
        };
        let (changes, received) = (sync.changes.clone(), sync.inbox.clone());
        let options = StoreOptions {
            location: location.clone(),
            sync,
            keyring,
            audit_key: keys.audit_key(),
            clock: clock.clone(),
            pool_size: config.database_pool_size,
        };
        let (store, report) =
            store::open(options).await.with_context(|| format!("cannot open the database at {location}"))?;
        if !report.applied.is_empty() {
            tracing::info!(applied = ?report.applied, schema = report.current, "database migrated");
        }
        let rules = Rules {
            id_mode: if config.mode == Mode::Dev { IdMode::Test } else { IdMode::Production },
            programme: config.programme.clone(),
        };
        let id_mode = rules.id_mode;
        let api = ParticipantApi::new(
            store.clone(),
            store.clone(),
            rules,
            keys.clone(),
            config.limits.clone(),
            clock.clone(),
        );
        let audit_api = AuditApi::new(store.clone(), keys.clone(), config.limits.clone());
        let reporting_api =
            ReportingApi::new(store.clone(), store.clone(), keys.clone(), config.limits.clone(), clock.clone());
        let feeds = Feeds {
            arena: arena.map(|arena| {
                Arc::new(ArenaFeed {
                    arena,
                    inbox: store.clone(),
                    participants: store.clone(),
                    keys,
                    id_mode,
                    clock: clock.clone(),
                })
            }),
            nokut: nokut.map(|nokut| Arc::new(NokutFeed { nokut, store: store.clone() })),
            nokut_wake: Arc::new(tokio::sync::Notify::new()),
            nokut_secret,
            nokut_webhook_url,
        };
        let listener = TcpListener::bind(config.listen).await.with_context(|| {
            format!(
                "cannot listen on {}; is another gateway running there? choose another with --listen",
                config.listen
            )
        })?;
        let addr = listener.local_addr()?;
        let http = match config.http_listen {
            Some(at) => {
                let l = TcpListener::bind(at).await.with_context(|| {
                    format!("cannot listen for HTTP on {at}; choose another address with http_listen")
                })?;
                let a = l.local_addr()?;
                Some((l, a))
            }
            None => None,
        };
        let dispatcher =
            Arc::new(Dispatcher::new(store.clone(), store.clone(), targets, wake, &config.sync, clock.clone()));
        Ok(Self {
            listener,
            addr,
            http,
            store,
            changes,
            received,
            api,
            audit_api,
            reporting_api,
            config,
            dispatcher,
            feeds,
            metrics,
            auth,
            dev_tokens,
            tls,
            clock,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The targets' metrics (reconciles by outcome, operations applied,
    /// latency, breaker state), shared with the running gateway and served
    /// on the HTTP listener's `/metrics`.
    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.metrics)
    }

    /// Dev mode: ready tokens by name (`kommune_0301`, `kommune_4601`,
    /// `nav`, `admin`), also in `<data_dir>/dev-tokens.json`.
    pub fn dev_tokens(&self) -> Option<&serde_json::Map<String, serde_json::Value>> {
        self.dev_tokens.as_ref()
    }

    /// The HTTP listener's address (webhooks), if there is one.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().map(|(_, a)| *a)
    }

    /// Serves until `shutdown` completes, then drains in-flight requests and
    /// closes the store after its last commit.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let (mut server, tls) = (Server::builder(), self.tls.is_some());
        if let Some(tls) = self.tls {
            server = server.tls_config(tls).context("cannot set up TLS on the gRPC port")?;
        }
        let (health_reporter, health) = tonic_health::server::health_reporter();
        health_reporter.set_serving::<ParticipantServiceServer<ParticipantApi>>().await;
        // Reflection as v1 and as v1alpha (which grpcio-reflection, older
        // grpcurl and Postman speak), both describing the same files.
        let descriptors = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(hurtigspor_proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET)
                .include_reflection_service(false)
        };
        let reflection = descriptors().build_v1().context("cannot build the reflection service")?;
        let reflection_v1alpha =
            descriptors().build_v1alpha().context("cannot build the v1alpha reflection service")?;
        let limits = &self.config.limits;
        let limiter = Arc::new(crate::auth::RateLimiter::new(limits.requests_per_second, limits.burst));
        let certificates = match self.config.tls.as_ref().and_then(|t| t.client_ca_file.as_ref()) {
            Some(_) => ClientCertificates::Required,
            None => ClientCertificates::NotAsked,
        };
        let authenticate = Authenticate(self.auth.clone(), limiter, certificates);
        let sync = InterceptedService::new(
            SyncServiceServer::new(crate::api::sync::SyncApi::new(
                self.store.clone(),
                self.changes.clone(),
                limits.max_streams_per_client,
            ))
            .max_decoding_message_size(limits.max_message_bytes),
            authenticate.clone(),
        );
        let reflection = InterceptedService::new(reflection, authenticate.clone());
        let reflection_v1alpha = InterceptedService::new(reflection_v1alpha, authenticate.clone());
        let audit = InterceptedService::new(
            AuditServiceServer::new(self.audit_api).max_decoding_message_size(limits.max_message_bytes),
            authenticate.clone(),
        );
        let reporting = InterceptedService::new(
            ReportingServiceServer::new(self.reporting_api).max_decoding_message_size(limits.max_message_bytes),
            authenticate.clone(),
        );
        health_reporter.set_serving::<SyncServiceServer<crate::api::sync::SyncApi>>().await;
        let participants = InterceptedService::new(
            ParticipantServiceServer::new(self.api)
                .max_decoding_message_size(limits.max_message_bytes)
                .max_encoding_message_size(16 * limits.max_message_bytes),
            authenticate,
        );
        // Tell load balancers to stop sending work before draining.
        let reporter = health_reporter.clone();
        let shutdown = async move {
            shutdown.await;
            reporter.set_not_serving::<ParticipantServiceServer<ParticipantApi>>().await;
        };
        let (stop_dispatcher, stopped) = tokio::sync::watch::channel(false);
        let mut background = tokio::task::JoinSet::new();
        background.spawn(Arc::clone(&self.dispatcher).run(stopped.clone()));
        background.spawn(self.auth.clone().refresh_keys(stopped.clone()));
        let store: Arc<dyn Store> = self.store.clone();
        let policy = RetryPolicy::from_settings(&self.config.sync, self.clock.clone());
        let poll = Duration::from_millis(self.config.sync.poll_interval_ms);
        let feeds = self.feeds;
        if let Some((listener, http_addr)) = self.http {
            let state = HttpState {
                store: store.clone(),
                clock: self.clock.clone(),
                nokut_secret: feeds.nokut_secret.as_ref().map(|s| Arc::from(s.as_bytes())),
                nokut_wake: feeds.nokut_wake.clone(),
                metrics: self.metrics.clone(),
            };
            let mut stop = stopped.clone();
            background.spawn(async move {
                let serve = axum::serve(listener, crate::http::router(state))
                    .with_graceful_shutdown(async move {
                        let _ = stop.wait_for(|s| *s).await;
                    })
                    .into_future();
                if let Err(e) = serve.await {
                    tracing::error!(error = %e, "the HTTP listener failed");
                }
            });
            tracing::info!(addr = %http_addr, "HTTP listening (NOKUT webhooks)");
            if let (Some(nokut), Some(_)) = (&feeds.nokut, &feeds.nokut_secret) {
                let url =
                    feeds.nokut_webhook_url.clone().unwrap_or_else(|| format!("http://{http_addr}/webhooks/nokut"));
                match nokut.nokut.subscribe(&url).await {
                    Ok(()) => tracing::info!("subscribed to NOKUT's webhooks"),
                    Err(e) => tracing::warn!(error = %e, "cannot subscribe to NOKUT's webhooks; polling covers them"),
                }
            }
        }
        if let Some(arena) = feeds.arena {
            let wake = Arc::new(tokio::sync::Notify::new());
            let received = self.received.subscribe();
            background.spawn(inbound::run(arena, store.clone(), policy.clone(), poll, wake, received, stopped.clone()));
        }
        if let Some(nokut) = feeds.nokut {
            let received = self.received.subscribe();
            background.spawn(inbound::run(
                nokut,
                store.clone(),
                policy,
                poll,
                feeds.nokut_wake,
                received,
                stopped.clone(),
            ));
        }
        tracing::info!(
            addr = %self.addr,
            mode = ?self.config.mode,
            tls = tls,
            client_certificates = certificates == ClientCertificates::Required,
            "gateway listening"
        );
        let result = server
            .timeout(Duration::from_secs(limits.request_timeout_secs))
            .trace_fn(|req| tracing::info_span!("grpc", method = %req.uri().path()))
            .add_service(health)
            .add_service(reflection)
            .add_service(reflection_v1alpha)
            .add_service(participants)
            .add_service(sync)
            .add_service(audit)
            .add_service(reporting)
            // Without TCP_NODELAY every small response waits for the peer's
            // delayed ACK (about 40 ms on Linux).
            .serve_with_incoming_shutdown(
                TcpIncoming::from(self.listener).with_nodelay(Some(true)).with_keepalive(Some(Duration::from_secs(60))),
                shutdown,
            )
            .await;
        let _ = stop_dispatcher.send(true);
        while background.join_next().await.is_some() {}
        self.store.close().await;
        tracing::info!("gateway stopped");
        result.context("the gRPC server failed")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_configured_target_is_wrapped_under_its_own_name_and_reports_to_the_shared_metrics() {
        use crate::config::{ArenaTarget, NirTarget, NokutTarget, Secret};
        let mut config = Config::dev_defaults();
        // Nothing is called: building a target only records where it is.
        let url = "http://127.0.0.1:9".to_owned();
        config.targets.arena = Some(ArenaTarget {
            base_url: url.clone(),
            client_id: "hurtigspor-gateway".into(),
            client_secret: Secret::new("arena-secret"),
        });
        config.targets.nir =
            Some(NirTarget { base_url: url.clone(), username: "intro".into(), password: Secret::new("nir-secret") });
        config.targets.nokut = Some(NokutTarget {
            base_url: url,
            api_key: Secret::new("nokut-key"),
            webhook_secret: None,
            webhook_url: None,
        });
        let metrics = Arc::new(Metrics::new());
        let targets = targets(&config, &metrics, &Clock::system());
        let names: Vec<_> = targets.all.iter().map(|t| t.name()).collect();
        assert_eq!(names, ["arena", "nir", "nokut"]);
        let text = metrics.render();
        for name in names {
            let line = format!(r#"hurtigspor_target_circuit_state{{target="{name}"}} 0"#);
            assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
        }
    }

    #[test]
    fn in_process_mocks_alone_give_no_target() {
        // Starting mocks is for whoever runs the gateway (`hurtigspor dev`),
        // which configures them as targets; the gateway only uses `[targets]`.
        let config = Config::dev_defaults();
        assert!(config.targets.in_process_mocks);
        assert!(targets(&config, &Arc::new(Metrics::new()), &Clock::system()).all.is_empty());
    }
}
