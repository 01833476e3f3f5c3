//! Wiring: builds the store, caches and services from a [`Config`], and runs
//! the listeners with a graceful shutdown.

use crate::clock::{self, SharedClock};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic_health::ServingStatus;

use crate::accounts::{AccountError, Accounts, Caches, Invalidator};
use crate::authn::jwt::{Jwt, JwtKeys, JwtSettings};
use crate::authn::oidc::Providers;
use crate::authn::revocation::Revocations;
use crate::authn::throttle::LoginThrottle;
use crate::authn::{Authenticator, Sources};
use crate::authz::Authorizer;
use crate::budget::Budgets;
use crate::budget::ledger::{Ledger, LocalLedger};
use crate::budget::redis::RedisLedger;
use crate::config::{Config, JwtConfig};
use crate::domain::{DEFAULT_GROUP, Role};
use crate::grpc::ext_proc::{LogSettle, Settle};
use crate::grpc::{self, AdminService, ExtAuthz, ExtProc};
use crate::http::{self, HttpState};
use crate::meter::Metered;
use crate::ratelimit::local::LocalLimiter;
use crate::ratelimit::redis::RedisLimiter;
use crate::ratelimit::{LimitPolicy, Limiter};
use crate::reload::PolicyReloader;
use crate::store::bus::Bus;
use crate::store::metering::Metering;
use crate::store::usage::UsageRecorder;
use crate::store::{self, DynStore, cache};

pub struct App {
    pub config: Config,
    /// Where every door reads the time.
    pub clock: SharedClock,
    pub store: DynStore,
    pub accounts: Accounts,
    pub authorizer: Arc<Authorizer>,
    pub ext_authz: ExtAuthz,
    pub admin: AdminService,
    pub budgets: Arc<Budgets>,
    /// Where metered responses (ext_proc) are settled.
    pub settle: Arc<dyn Settle>,
    /// Metered LLM usage (tokens, spend) per day, user, group, key and model:
    /// the budgets' usage sink (every settlement records into it, as would
    /// `app.metering.record(UsageEvent { .. })`); written to `usage_daily` in
    /// batches every `metering_flush_interval` (`GATEHOUSE_USAGE_FLUSH_MS`)
    /// by `serve`.
    pub metering: Metering,
    revocations: Revocations,
    usage: UsageRecorder,
    providers: Arc<Providers>,
    local: LocalLimiter,
    redis: Option<RedisLimiter>,
    bus: Bus,
    invalidator: Invalidator,
}

/// The signing keys the configuration asks for.
pub fn jwt_keys(config: &JwtConfig) -> anyhow::Result<JwtKeys> {
    if let Some(path) = &config.private_key_file {
        return Ok(JwtKeys::from_pem_file(config.algorithm, path)?);
    }
    match &config.secret {
        Some(secret) => Ok(JwtKeys::hmac(secret)?),
        None => {
            tracing::warn!(
                "JWT_SECRET is not set: signing session tokens with a random key; they will not survive a \
                 restart or be accepted by other replicas"
            );
            Ok(JwtKeys::ephemeral())
        }
    }
}

impl App {
    pub async fn build(config: Config) -> anyhow::Result<App> {
        App::build_with_clock(config, clock::system()).await
    }

    /// With a clock of the caller's (a test's that moves time on).
    pub async fn build_with_clock(config: Config, clock: SharedClock) -> anyhow::Result<App> {
        let store = store::connect_with(&config.database_settings(), config.auto_migrate).await?;
        let app = App::with_store(config, store, clock)?;
        if let Err(e) = app.revocations.sync(app.clock.now()).await {
            tracing::warn!(error = %e, "could not load token revocations at start-up; retrying in the background");
        }
        app.bootstrap_admin().await?;
        Ok(app)
    }

    pub fn with_store(config: Config, store: DynStore, clock: SharedClock) -> anyhow::Result<App> {
        crate::telemetry::metrics();
        let roles = config.roles;
        let breaker = cache::Breaker::default();
        let keys = cache::key_cache(store.clone(), &config.cache, &breaker);
        let users = cache::user_cache(store.clone(), &config.cache, &breaker);
        let jwt = Arc::new(
            Jwt::new(jwt_keys(&config.jwt)?, jwt_settings(&config.jwt))
                .with_session_max(config.jwt.session_max_seconds),
        );
        let redis_target = match &config.redis_url {
            Some(url) => Some(Arc::new(
                crate::redis_target::RedisTarget::parse(url.expose()).map_err(|e| anyhow::anyhow!("REDIS_URL: {e}"))?,
            )),
            None => None,
        };
        let bus = Bus::new(redis_target.clone());
        let publish: Arc<dyn crate::store::bus::Publish> = Arc::new(bus.clone());
        let revocations =
            Revocations::new(store.clone(), publish.clone(), jwt.settings().leeway_seconds, clock.clone());
        let usage = UsageRecorder::default();
        let metering = Metering::default();
        let groups = cache::group_cache(store.clone(), &config.cache, &breaker);
        let caches = Caches { keys: keys.clone(), users: users.clone(), groups: groups.clone(), bus: publish };
        let invalidator = Invalidator { caches: caches.clone(), revocations: revocations.clone() };
        let accounts = Accounts::new(store.clone(), roles, config.accounts.clone(), Some(caches), clock.clone());
        let providers = Arc::new(Providers::new(
            config.oidc.clone(),
            config.oidc_allow_insecure_http,
            Arc::new(crate::authn::fetch::HttpFetch::new()?),
        )?);
        let sources = Sources {
            providers: providers.clone(),
            accounts: Arc::new(accounts.clone()),
            keys: keys.clone(),
            users: users.clone(),
            jwt,
            revocations: revocations.clone(),
            usage: usage.clone(),
            verified: cache::expiring_map(Some(config.cache.capacity)),
        };
        let authn = Authenticator::new(sources, roles);
        let policy = config.compile_policy()?;
        let local = LocalLimiter::default();
        let redis = redis_target.map(|target| RedisLimiter::new(target, local.clone(), config.redis_timeout));
        let limiter: Arc<dyn Limiter> = match &redis {
            Some(r) => Arc::new(r.clone()),
            None => Arc::new(local.clone()),
        };
        let ledger: Arc<dyn Ledger> = match &redis {
            Some(r) => Arc::new(RedisLedger::new(r.clone(), Duration::from_millis(250))),
            None => Arc::new(LocalLedger::default()),
        };
        let budgets = Arc::new(Budgets::new(ledger, config.budgets.clone(), Arc::new(metering.clone())));
        let limits = LimitPolicy { limiter, groups, default: config.default_limit, anonymous: config.anonymous_limit };
        let authorizer =
            Arc::new(Authorizer::new(authn, policy, limits, config.require_auth).with_budgets(budgets.clone()));
        let ext_authz = ExtAuthz::new(authorizer.clone(), config.strip_credentials, clock.clone());
        let admin = AdminService::new(authorizer.clone(), accounts.clone());
        let settle = Arc::new(Settlement { budgets: budgets.clone(), clock: clock.clone() });
        Ok(App {
            config,
            clock,
            store,
            accounts,
            authorizer,
            ext_authz,
            admin,
            budgets,
            settle,
            metering,
            revocations,
            usage,
            providers,
            local,
            redis,
            bus,
            invalidator,
        })
    }

    /// Creates the configured first admin unless a user with that email exists.
    async fn bootstrap_admin(&self) -> anyhow::Result<()> {
        let Some((email, password)) = &self.config.bootstrap_admin else { return Ok(()) };
        let created = self
            .accounts
            .create_user_with_password(email, None, Role::Admin, DEFAULT_GROUP, Some(password.clone()))
            .await;
        match created {
            Ok(user) => tracing::info!(user_id = %user.id, "bootstrap admin created"),
            Err(AccountError::Conflict(_)) => tracing::debug!("bootstrap admin already exists"),
            Err(e) => return Err(e).context("GATEHOUSE_BOOTSTRAP_ADMIN_EMAIL / _PASSWORD"),
        }
        Ok(())
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
        // Every background task is spawned on `tasks` and ends when `stop` is
        // cancelled; shutdown waits for all of them (bounded by `JOIN_TIMEOUT`).
        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();

        let state = HttpState {
            ready: ready.clone(),
            accounts: self.accounts.clone(),
            authorizer: self.authorizer.clone(),
            throttle: LoginThrottle::new(self.config.login_throttle.clone()),
            auth_limits: http::auth::AuthLimits {
                limiter: match &self.redis {
                    Some(redis) => Arc::new(redis.clone()),
                    None => Arc::new(self.local.clone()),
                },
                register: self.config.register_limit,
                refresh: self.config.refresh_limit,
                login: self.config.login_limit,
            },
            trusted_proxy_hops: self.config.trusted_proxy_hops,
            max_body_bytes: self.config.max_body_bytes,
            request_timeout: self.config.http_request_timeout,
            providers: self.providers.clone(),
            redis: self.redis.clone(),
            bus: self.bus.clone(),
            github: self.config.github.clone(),
            public_url: self.config.public_url.clone(),
            http_client: crate::authn::fetch::http_client()?,
            audit: crate::audit::Audit::new(self.store.clone(), self.clock.clone()),
            clock: self.clock.clone(),
            metering: self.metering.clone(),
            console: self.config.console,
            secure_cookies: self.config.public_url.starts_with("https://") || self.config.tls.is_some(),
        };
        let router = http::router(state);
        let header_timeout = self.config.http_header_timeout;
        let (grpc_tls, http_tls) = match &self.config.tls {
            Some(files) => {
                let tls = crate::tls::Reloading::load(files)?;
                let configs = (Some(tls.grpc.clone()), Some(tls.http.clone()));
                tasks.spawn(tls.run(crate::tls::RELOAD_INTERVAL, stop.clone().cancelled_owned()));
                configs
            }
            None => (None, None),
        };
        let http_stopped = stop.clone().cancelled_owned();
        let http: std::pin::Pin<Box<dyn Future<Output = std::io::Result<()>> + Send>> = match http_tls {
            None => Box::pin(http::server::serve(http_listener, router, header_timeout, http_stopped)),
            Some(config) => {
                let listener = crate::tls::HttpsListener::new(http_listener, config)?;
                Box::pin(http::server::serve(listener, router, header_timeout, http_stopped))
            }
        };
        // The admin API beside Check, or on a listener of its own.
        let admin_apart = match self.config.admin_grpc_addr {
            Some(addr) => {
                let listener =
                    TcpListener::bind(addr).await.with_context(|| format!("admin gRPC listener on {addr}"))?;
                tracing::info!(addr = %listener.local_addr()?, "gRPC admin API listener");
                Some(listener)
            }
            None => None,
        };
        let admin_beside_check = admin_apart.is_none().then(|| self.admin.clone());
        let admin_server = admin_apart.map(|listener| {
            grpc::serve(
                listener,
                grpc_tls.clone(),
                None,
                None,
                Some(self.admin.clone()),
                health.clone(),
                stop.clone().cancelled_owned(),
            )
        });
        let grpc = grpc::serve(
            grpc_listener,
            grpc_tls,
            Some(self.ext_authz.clone()),
            Some(ExtProc::new(self.settle.clone())),
            admin_beside_check,
            health,
            stop.clone().cancelled_owned(),
        );
        let grpc = async move {
            match admin_server {
                Some(admin) => tokio::try_join!(grpc, admin).map(|_| ()),
                None => grpc.await,
            }
        };
        tasks.spawn(self.usage.clone().run(
            self.store.clone(),
            self.config.usage_flush_interval,
            stop.clone().cancelled_owned(),
        ));
        tasks.spawn(self.metering.clone().run(
            self.store.clone(),
            self.config.metering_flush_interval,
            stop.clone().cancelled_owned(),
        ));
        tasks.spawn(self.revocations.clone().run(self.config.revocation_poll_interval, stop.clone().cancelled_owned()));
        tasks.spawn(self.bus.clone().subscribe(self.invalidator.clone(), stop.clone().cancelled_owned()));
        let feed = crate::store::changes::ChangeFeed::new(self.store.clone());
        let poll = self.config.change_poll_interval;
        tasks.spawn(feed.run(self.invalidator.clone(), poll, stop.clone().cancelled_owned()));
        tasks.spawn(self.local.clone().run_purge(Duration::from_secs(60), stop.clone().cancelled_owned()));
        tasks.spawn(self.budgets.clone().run_expiry(stop.clone()));
        if let Some(redis) = &self.redis {
            tasks.spawn(redis.clone().connect(stop.clone().cancelled_owned()));
        }
        let reloader = PolicyReloader {
            authorizer: self.authorizer.clone(),
            config_file: self.config.config_file.clone(),
            watched: self.config.policy_source().map(ToOwned::to_owned),
            interval: self.config.policy_reload_interval,
        };
        tasks.spawn(reloader.run(stop.clone().cancelled_owned()));
        tasks.spawn(crate::telemetry::run_upkeep(Duration::from_secs(5), stop.clone().cancelled_owned()));
        if let Some(addr) = self.config.metrics_addr {
            let listener = TcpListener::bind(addr).await.with_context(|| format!("metrics listener on {addr}"))?;
            tracing::info!(addr = %listener.local_addr()?, "metrics listener (no authentication)");
            let serve =
                http::server::serve(listener, http::metrics_router(), header_timeout, stop.clone().cancelled_owned());
            tasks.spawn(async move {
                if let Err(e) = serve.await {
                    tracing::error!(error = %e, "metrics listener failed");
                }
            });
        }
        for issuer in self.providers.all() {
            tasks.spawn(issuer.clone().run(stop.clone().cancelled_owned()));
        }
        let delay = self.config.shutdown_delay;
        let drain = async move {
            shutdown.await;
            tracing::info!("shutting down: reporting NOT_SERVING");
            ready.store(false, Ordering::Release);
            grpc::set_health(&reporter, ServingStatus::NotServing).await;
            tokio::time::sleep(delay).await;
            stop.cancel();
            Ok::<(), anyhow::Error>(())
        };
        tokio::try_join!(
            async { grpc.await.map_err(anyhow::Error::from) },
            async { http.await.map_err(anyhow::Error::from) },
            drain
        )?;
        // The last usage flush, the change feed, the pollers: all of them.
        tasks.close();
        if tokio::time::timeout(JOIN_TIMEOUT, tasks.wait()).await.is_err() {
            tracing::warn!(
                left = tasks.len(),
                "background tasks still running after {JOIN_TIMEOUT:?}; stopping anyway"
            );
        }
        tracing::info!("stopped");
        Ok(())
    }
}

fn jwt_settings(c: &JwtConfig) -> JwtSettings {
    JwtSettings {
        algorithm: c.algorithm,
        issuer: c.issuer.clone(),
        audience: c.audience.clone(),
        expiry_seconds: c.expiry_seconds,
        leeway_seconds: c.leeway_seconds,
        refresh_grace_seconds: c.refresh_grace_seconds,
    }
}

/// How long shutdown waits for background tasks once the listeners closed.
const JOIN_TIMEOUT: Duration = Duration::from_secs(10);

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

/// What ext_proc measured goes to the budgets: the reservation is settled
/// (or charged in full when nothing was measured) and the usage recorded.
struct Settlement {
    budgets: Arc<Budgets>,
    clock: SharedClock,
}

#[async_trait::async_trait]
impl Settle for Settlement {
    async fn settle(&self, attribution: &crate::grpc::ext_proc::Attribution, status: u16, metered: Metered) {
        LogSettle.settle(attribution, status, metered).await;
        self.budgets.settle(attribution, &metered, self.clock.now()).await;
    }
}
