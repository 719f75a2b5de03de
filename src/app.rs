//! Wiring: `App::build` opens the store, builds the clients and binds the hook; `run_until`
//! starts every worker and serves until shutdown, then gives in-flight work a bounded time to
//! finish. Whatever is unfinished stays in the store for the next start.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{ConfigError, Settings};
use crate::delivery::Delivery;
use crate::intake::{HookState, router};
use crate::metrics::Metrics;
use crate::notify::Notifier;
use crate::notify::console::Console;
use crate::notify::discord::Discord;
use crate::notify::telegram::Telegram;
use crate::notify::telegram_commands::OwnerCommands;
use crate::opentrain::OpenTrain;
use crate::proxy::Proxy;
use crate::quiet::OwnerTime;
use crate::store::{Store, StoreError, StoreOptions};
use crate::tracker::Tracker;
use crate::verify::Verifier;
use crate::worker::Pacer;
use crate::worker::now_ms;

/// How long shutdown waits for in-flight sends and reads.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr} ({key}): {source}")]
    Bind {
        key: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Other(String),
}

pub struct App {
    settings: Settings,
    store: Store,
    opentrain: OpenTrain,
    hook: TcpListener,
    proxy: Option<TcpListener>,
    /// The HTTP client Discord requests go through, when not the production one.
    discord_client: Option<reqwest::Client>,
}

impl App {
    pub async fn build(settings: Settings) -> Result<App, StartError> {
        let token = settings.opentrain_token()?.clone();
        let mut options =
            StoreOptions::new(settings.store.path.clone(), settings.store.synchronous);
        if !settings.store.group_commit {
            options.max_batch = 1;
        }
        let store = Store::open(&options).await?;
        let opentrain = OpenTrain::new(&settings.opentrain, token).map_err(StartError::Other)?;
        let hook = TcpListener::bind(settings.hook.listen)
            .await
            .map_err(|source| StartError::Bind {
                key: "hook.listen",
                addr: settings.hook.listen,
                source,
            })?;
        let proxy = if settings.proxy.enabled {
            Some(
                TcpListener::bind(settings.proxy.listen)
                    .await
                    .map_err(|source| StartError::Bind {
                        key: "proxy.listen",
                        addr: settings.proxy.listen,
                        source,
                    })?,
            )
        } else {
            None
        };
        Ok(App {
            settings,
            store,
            opentrain,
            hook,
            proxy,
            discord_client: None,
        })
    }

    /// Sends Discord's requests through `client` instead of a production one; tests give a
    /// client that resolves `discord.com` to a local fake and trusts its certificate.
    pub fn with_discord_client(mut self, client: reqwest::Client) -> App {
        self.discord_client = Some(client);
        self
    }

    /// The address the proxy listens on, when proxy mode is on.
    pub fn proxy_addr(&self) -> Option<SocketAddr> {
        self.proxy.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The address the hook listens on (useful with port 0).
    pub fn hook_addr(&self) -> SocketAddr {
        self.hook
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Runs until `shutdown` is cancelled.
    pub async fn run_until(self, shutdown: CancellationToken) -> Result<(), StartError> {
        let App {
            settings,
            store,
            opentrain,
            hook,
            proxy,
            discord_client,
        } = self;
        let workers = TaskTracker::new();
        let metrics = Arc::new(Metrics::new());
        let stop = shutdown.child_token();
        let app_url = settings.opentrain.app_url.clone();
        // Service notices (§3.8): problems are reported by the OpenTrain client, the tracker and
        // delivery, stored by the keeper, and shown by one board per channel.
        let (problems, keeper) = crate::notices::start(&store).await?;
        let opentrain = opentrain.reporting_to(problems.clone());
        let notices_changed = keeper.subscribe();
        workers.spawn(crate::notices::keep(keeper, store.clone(), stop.clone()));
        workers.spawn(crate::notices::log_notices(
            store.clone(),
            settings.notices_after,
            settings.owner.clone(),
            notices_changed.clone(),
            stop.clone(),
        ));
        let for_delivery = DeliveryShared {
            store: store.clone(),
            app_url: app_url.clone(),
            owner_time: OwnerTime {
                owner: settings.owner.clone(),
                reminders: settings.reminders.clone(),
            },
            metrics: metrics.clone(),
            problems,
            notices_after: settings.notices_after,
            notices_changed,
            grouping: settings.grouping,
        };

        let mut channels: Vec<&'static str> = Vec::new();
        if let Some(tg) = &settings.telegram {
            let telegram = Telegram::new(tg);
            let pacer = Pacer::new(telegram.min_interval()).with_window(telegram.window());
            channels.push(telegram.channel());
            if tg.owner_commands {
                let commands = OwnerCommands {
                    bot: telegram.bot().clone(),
                    chat: teloxide::types::ChatId(tg.chat_id),
                    store: store.clone(),
                    app_url: app_url.clone(),
                    pacer: pacer.clone(),
                    zone: settings.owner.zone.clone(),
                };
                workers.spawn(commands.run(stop.clone()));
            }
            spawn_delivery(&workers, &stop, telegram, pacer, &for_delivery);
        }
        if let Some(dc) = &settings.discord {
            let discord = match discord_client {
                Some(client) => Discord::with_client(dc, client),
                None => Discord::new(dc),
            }
            .map_err(StartError::Other)?;
            channels.push(discord.channel());
            let pacer = Pacer::new(discord.min_interval());
            spawn_delivery(&workers, &stop, discord, pacer, &for_delivery);
        }
        if settings.console {
            let console = Console::default();
            channels.push(console.channel());
            spawn_delivery(
                &workers,
                &stop,
                console,
                Pacer::new(Duration::ZERO),
                &for_delivery,
            );
        }
        // A channel enabled since the last start shows the approvals still open.
        store.ensure_deliveries(&channels, now_ms()).await?;
        // A chat no longer configured can no longer refuse anything: its notice says so.
        for_delivery.problems.forget_channels_except(&channels);

        let verifier = Arc::new(Verifier {
            store: store.clone(),
            opentrain: opentrain.clone(),
            channels: channels.clone(),
            reminders: settings.reminders.clone(),
            metrics: metrics.clone(),
            lease: Verifier::lease(settings.opentrain.request_timeout),
            not_found_for: settings.opentrain.not_found_for,
        });
        workers.spawn(verifier.run(stop.clone()));
        let tracker = Arc::new(Tracker {
            store: store.clone(),
            opentrain,
            poll_interval: settings.opentrain.poll_interval,
            reminders: settings.reminders.clone(),
            metrics: metrics.clone(),
            lease: Tracker::lease(settings.opentrain.request_timeout),
            problems: for_delivery.problems.clone(),
        });
        workers.spawn(tracker.clone().poll_updates(stop.clone()));
        workers.spawn(tracker.read_due(stop.clone()));
        if let Some(retention) = settings.store.retention {
            workers.spawn(crate::retention::run(
                store.clone(),
                retention,
                stop.clone(),
            ));
        }

        if let Some(listener) = proxy {
            let mut origin = settings.opentrain.api_url.clone();
            origin.set_path("/");
            let proxy = Arc::new(Proxy {
                store: store.clone(),
                app_url: app_url.clone(),
                origin,
                limits: settings.proxy.limits,
            });
            let stop = stop.clone();
            workers.spawn(async move {
                if let Err(e) = proxy.serve(listener, stop).await {
                    tracing::error!(error = %e, "the proxy stopped");
                }
            });
        }

        let state = Arc::new(HookState {
            store: store.clone(),
            token: settings.hook.token.clone(),
            metrics: metrics.clone(),
            metrics_open: hook
                .local_addr()
                .map(|a| a.ip().is_loopback())
                .unwrap_or(false),
            webhook_secret: settings.opentrain.webhook_secret.clone(),
            app_url,
            max_body_bytes: settings.hook.max_body_bytes,
            shutdown: stop.clone(),
        });
        tracing::info!(
            hook = %hook.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            channels = ?channels,
            store = %store.path().display(),
            "countersign is running"
        );
        // Bounded reads and connections: slow clients cannot tie up the hook (crate::serve).
        let served =
            crate::serve::serve(hook, router(state), settings.hook.limits, stop.clone()).await;
        stop.cancel();
        workers.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, workers.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                "shutdown: some work did not finish in time; it stays in the store for the next start"
            );
        }
        tracing::info!("countersign stopped");
        served.map_err(|e| StartError::Other(format!("the hook server failed: {e}")))
    }
}

/// What every channel's delivery worker shares.
struct DeliveryShared {
    store: Store,
    app_url: String,
    owner_time: OwnerTime,
    metrics: Arc<Metrics>,
    problems: crate::notices::Problems,
    notices_after: Duration,
    notices_changed: tokio::sync::watch::Receiver<()>,
    grouping: crate::config::Grouping,
}

fn spawn_delivery<N: Notifier>(
    workers: &TaskTracker,
    stop: &CancellationToken,
    notifier: N,
    pacer: Pacer,
    shared: &DeliveryShared,
) {
    let notifier = Arc::new(notifier);
    let board = crate::notices::NoticeBoard {
        notifier: notifier.clone(),
        store: shared.store.clone(),
        pacer: pacer.clone(),
        after: shared.notices_after,
        owner: shared.owner_time.owner.clone(),
        changed: shared.notices_changed.clone(),
    };
    workers.spawn(board.run(stop.clone()));
    let delivery = Delivery {
        notifier,
        store: shared.store.clone(),
        app_url: shared.app_url.clone(),
        metrics: shared.metrics.clone(),
        pacer,
        owner_time: shared.owner_time.clone(),
        problems: shared.problems.clone(),
        grouping: shared.grouping,
    };
    workers.spawn(delivery.run(stop.clone()));
}
