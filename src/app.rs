//! Wiring: builds the store, caches and services from a [`Config`], and runs
//! the listeners with a graceful shutdown.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic_health::ServingStatus;

use crate::accounts::Accounts;
use crate::authn::Authenticator;
use crate::authz::Authorizer;
use crate::config::Config;
use crate::domain::RolePermissions;
use crate::grpc::{self, AdminService, ExtAuthz};
use crate::http::{self, HttpState};
use crate::policy::Policy;
use crate::store::cache::KeyCache;
use crate::store::usage::UsageRecorder;
use crate::store::{self, DynStore};

pub struct App {
    pub config: Config,
    pub store: DynStore,
    pub keys: KeyCache,
    pub accounts: Accounts,
    pub ext_authz: ExtAuthz,
    pub admin: AdminService,
    usage: UsageRecorder,
}

impl App {
    pub async fn build(config: Config) -> anyhow::Result<App> {
        let store = store::connect(&config.database_url, config.auto_migrate, config.database_timeout).await?;
        Ok(App::with_store(config, store))
    }

    pub fn with_store(config: Config, store: DynStore) -> App {
        let roles = RolePermissions::default();
        let keys = KeyCache::new(store.clone(), &config.cache);
        let usage = UsageRecorder::default();
        let authn = Authenticator::new(keys.clone(), roles, usage.clone());
        let policy = Policy::new(config.public_paths.clone());
        let authorizer = Arc::new(Authorizer::new(authn, policy, config.require_auth));
        let ext_authz = ExtAuthz::new(authorizer.clone(), config.strip_credentials);
        let accounts = Accounts::new(store.clone(), roles, Some(keys.clone()));
        let admin = AdminService::new(authorizer, accounts.clone());
        App { config, store, keys, accounts, ext_authz, admin, usage }
    }

    /// Serves gRPC and HTTP until `shutdown` resolves. Then: health reports
    /// NOT_SERVING and readiness fails, `shutdown_delay` passes (so load
    /// balancers stop sending), listeners close and in-flight requests finish.
    pub async fn serve(
        self,
        grpc_listener: TcpListener,
        http_listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> anyhow::Result<()> {
        let (reporter, health) = tonic_health::server::health_reporter();
        grpc::set_health(&reporter, ServingStatus::Serving).await;
        let ready = Arc::new(AtomicBool::new(true));
        let (stop_tx, stop_rx) = watch::channel(false);

        let router = http::router(HttpState { store: self.store.clone(), ready: ready.clone() });
        let http = axum::serve(http_listener, router).with_graceful_shutdown(stopped(stop_rx.clone()));
        let grpc =
            grpc::serve(grpc_listener, self.ext_authz.clone(), self.admin.clone(), health, stopped(stop_rx.clone()));
        let usage = tokio::spawn(self.usage.clone().run(
            self.store.clone(),
            self.config.usage_flush_interval,
            stopped(stop_rx),
        ));
        let delay = self.config.shutdown_delay;
        let drain = async move {
            shutdown.await;
            tracing::info!("shutting down: reporting NOT_SERVING");
            ready.store(false, Ordering::Release);
            grpc::set_health(&reporter, ServingStatus::NotServing).await;
            tokio::time::sleep(delay).await;
            let _ = stop_tx.send(true);
            Ok::<(), anyhow::Error>(())
        };
        tokio::try_join!(
            async { grpc.await.map_err(anyhow::Error::from) },
            async { http.await.map_err(anyhow::Error::from) },
            drain
        )?;
        usage.await?;
        tracing::info!("stopped");
        Ok(())
    }
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    // An error means the sender is gone, which also means stop.
    let _ = rx.wait_for(|stop| *stop).await;
}

/// Resolves on SIGINT or SIGTERM. The handlers are installed when this is
/// called, not when first polled, so a signal that arrives during start-up is
/// not lost to the default action.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send {
    use tokio::signal::unix::{SignalKind, signal};
    let int = signal(SignalKind::interrupt());
    let term = signal(SignalKind::terminate());
    async move {
        match (int, term) {
            (Ok(mut int), Ok(mut term)) => {
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
            }
            (Err(e), _) | (_, Err(e)) => {
                tracing::error!(error = %e, "cannot listen for signals; stop with SIGKILL");
                std::future::pending::<()>().await;
            }
        }
    }
}
