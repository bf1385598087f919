//! Build binds and returns the real address; run serves until shutdown.

use crate::{
    api::participants::{Clock, ParticipantApi},
    config::{Config, Mode},
    domain::{national_id::IdMode, participant::Rules},
    keys::Keys,
    store::{Store, sqlite::SqliteStore},
};
use anyhow::Context;
use hurtigspor_proto::v1::participant_service_server::ParticipantServiceServer;
use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};
use tokio::net::TcpListener;
use tonic::transport::{Server, server::TcpIncoming};

pub struct Gateway {
    listener: TcpListener,
    addr: SocketAddr,
    store: Arc<SqliteStore>,
    api: ParticipantApi,
    config: Config,
}

impl Gateway {
    /// Opens the store (applying migrations), loads keys and binds the
    /// listener. Port 0 binds a free port; `local_addr` tells which.
    pub async fn build(config: Config, clock: Clock) -> anyhow::Result<Self> {
        config.validate()?;
        let keys = Keys::load(&config)?;
        let path = config.database_path();
        let (store, report) =
            SqliteStore::open(&path).with_context(|| format!("cannot open the database at {}", path.display()))?;
        if !report.applied.is_empty() {
            tracing::info!(applied = ?report.applied, schema = report.current, "database migrated");
        }
        let store = Arc::new(store);
        let rules = Rules {
            id_mode: if config.mode == Mode::Dev { IdMode::Test } else { IdMode::Production },
            programme: config.programme.clone(),
        };
        let api = ParticipantApi::new(store.clone() as Arc<dyn Store>, rules, keys, config.limits.clone(), clock);
        let listener = TcpListener::bind(config.listen).await.with_context(|| {
            format!(
                "cannot listen on {}; is another gateway running there? choose another with --listen",
                config.listen
            )
        })?;
        let addr = listener.local_addr()?;
        Ok(Self { listener, addr, store, api, config })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `shutdown` completes, then drains in-flight requests and
    /// closes the store after its last commit.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let (health_reporter, health) = tonic_health::server::health_reporter();
        health_reporter.set_serving::<ParticipantServiceServer<ParticipantApi>>().await;
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(hurtigspor_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .context("cannot build the reflection service")?;
        let limits = &self.config.limits;
        let participants = ParticipantServiceServer::new(self.api)
            .max_decoding_message_size(limits.max_message_bytes)
            .max_encoding_message_size(16 * limits.max_message_bytes);
        // Tell load balancers to stop sending work before draining.
        let reporter = health_reporter.clone();
        let shutdown = async move {
            shutdown.await;
            reporter.set_not_serving::<ParticipantServiceServer<ParticipantApi>>().await;
        };
        tracing::info!(addr = %self.addr, mode = ?self.config.mode, "gateway listening");
        let result = Server::builder()
            .timeout(Duration::from_secs(limits.request_timeout_secs))
            .trace_fn(|req| tracing::info_span!("grpc", method = %req.uri().path()))
            .add_service(health)
            .add_service(reflection)
            .add_service(participants)
            // Without TCP_NODELAY every small response waits for the peer's
            // delayed ACK (about 40 ms on Linux).
            .serve_with_incoming_shutdown(
                TcpIncoming::from(self.listener).with_nodelay(Some(true)).with_keepalive(Some(Duration::from_secs(60))),
                shutdown,
            )
            .await;
        self.store.close().await;
        tracing::info!("gateway stopped");
        result.context("the gRPC server failed")
    }
}
