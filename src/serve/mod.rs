//! `ckpt serve`: an explorer of a pipeline run in the browser, straight from its
//! checkpoints. One HTTP server holds one [`CheckpointSession`] over the roots and answers
//! a small JSON API (`api`) whose every answer is a SQL plan over the checkpoint
//! tables; the page (`assets/`: HTML, CSS and plain ES modules, embedded in the binary)
//! draws the overview, the cluster tree, the map, the cluster pages and a SQL box from it.
//!
//! The data is people's conversations, so the server is careful about who asks and what
//! (`safety`): it listens on 127.0.0.1 unless told otherwise, answers only requests
//! addressed to it by its own address or `localhost` (DNS rebinding), sends no CORS
//! headers, runs only read statements, under a time and memory limit, and serves the page
//! under a strict Content-Security-Policy.
//!
//! Why this is hand-written and not an off-the-shelf explorer: Kura's own app reads files
//! uploaded into the browser and holds everything there, which neither reaches a bucket
//! nor stays smooth at a million summaries; a SQL admin UI would not know the
//! hierarchy, the projection or the conversations. axum is the HTTP layer (tonic, for
//! the workers, links it already); the rest is a few SQL plans and a small page.

pub(crate) mod api;
pub(crate) mod safety;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;

use crate::context::{CheckpointSession, SessionOptions};
use crate::ops::check::{CheckOptions, CheckReport};
use crate::{Error, Result};

/// The default time limit of one query.
pub const DEFAULT_QUERY_TIMEOUT: Duration = Duration::from_secs(30);
/// The default number of rows `POST /api/query` answers with (downloads have no cap).
pub const DEFAULT_ROW_CAP: usize = 1000;
/// The default address: this machine only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// How `ckpt serve` runs.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// NAME → directory or URL; the first is the default schema.
    pub roots: Vec<(String, String)>,
    /// Memory limit, storage options, workers of the session every query runs in.
    pub session: SessionOptions,
    /// Where to listen (`HOST:PORT`; port 0 picks a free one).
    pub listen: String,
    /// How long one query may run before it is stopped.
    pub query_timeout: Duration,
    /// How many rows `POST /api/query` answers with at most.
    pub row_cap: usize,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            roots: Vec::new(),
            session: SessionOptions::default(),
            listen: DEFAULT_LISTEN.to_owned(),
            query_timeout: DEFAULT_QUERY_TIMEOUT,
            row_cap: DEFAULT_ROW_CAP,
        }
    }
}

/// What every request handler shares.
pub(crate) struct State {
    pub(crate) session: CheckpointSession,
    pub(crate) roots: Vec<(String, String)>,
    pub(crate) query_timeout: Duration,
    pub(crate) row_cap: usize,
    /// The address served, for the Host check.
    pub(crate) served: SocketAddr,
    /// `ckpt check` of the roots, run once in the background (it reads every checkpoint).
    pub(crate) check: tokio::sync::OnceCell<std::result::Result<CheckReport, String>>,
    pub(crate) check_options: CheckOptions,
    /// Queries running for the page, by the id it gave them, so that its cancel button
    /// can stop them (dropping a query's future stops its plan).
    pub(crate) running:
        parking_lot::Mutex<std::collections::HashMap<String, futures::future::AbortHandle>>,
}

/// A server bound to its address, not yet answering.
pub struct Server {
    listener: tokio::net::TcpListener,
    router: Router,
    addr: SocketAddr,
}

impl Server {
    /// Opens the session over the roots and binds the address. Warns on stderr when the
    /// address is not a loopback one: the page then serves the roots' data to the network.
    pub async fn bind(options: ServeOptions) -> Result<Server> {
        let session =
            CheckpointSession::new(options.roots.clone(), options.session.clone()).await?;
        safety::restrict_session(&session)?;
        let listener = tokio::net::TcpListener::bind(&options.listen)
            .await
            .map_err(|e| Error::io(format!("cannot listen on {}", options.listen), e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::io("cannot read the address listened on", e))?;
        if !addr.ip().is_loopback() {
            eprintln!(
                "warning: listening on {addr}, not a loopback address: anyone who can reach it can read the checkpoints of {}",
                options
                    .roots
                    .iter()
                    .map(|(n, _)| n.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        let router = router(session, &options, addr);
        Ok(Server {
            listener,
            router,
            addr,
        })
    }

    /// The address served (the port chosen when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://HOST:PORT/`.
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// Answers requests until `shutdown` completes.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<()> {
        axum::serve(self.listener, self.router)
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(|e| Error::io("the HTTP server stopped", e))
    }
}

/// The routes over a session, for a server at `served`.
pub fn router(session: CheckpointSession, options: &ServeOptions, served: SocketAddr) -> Router {
    let check_options = CheckOptions {
        session: options.session.clone(),
        ..Default::default()
    };
    let state = Arc::new(State {
        session,
        roots: options.roots.clone(),
        query_timeout: options.query_timeout,
        row_cap: options.row_cap.max(1),
        served,
        check: tokio::sync::OnceCell::new(),
        check_options,
        running: Default::default(),
    });
    api::routes(state.clone())
        .merge(assets())
        .layer(axum::middleware::from_fn_with_state(state, safety::guard))
}

/// `ckpt serve`: binds, prints `listening on http://HOST:PORT/` on stdout, answers until
/// `shutdown` completes.
pub async fn serve(
    options: ServeOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let server = Server::bind(options).await?;
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "listening on {}", server.url());
        let _ = out.flush();
    }
    server.run(shutdown).await
}

/// The page: embedded, so the binary serves it offline and alone.
fn assets() -> Router {
    use axum::routing::get;
    fn asset(
        content_type: &'static str,
        body: &'static str,
    ) -> impl Fn() -> std::future::Ready<axum::response::Response> + Clone + Send + Sync + 'static
    {
        move || {
            use axum::response::IntoResponse;
            std::future::ready(
                ([(axum::http::header::CONTENT_TYPE, content_type)], body).into_response(),
            )
        }
    }
    Router::new()
        .route(
            "/",
            get(asset(
                "text/html; charset=utf-8",
                include_str!("assets/index.html"),
            )),
        )
        .route(
            "/app.js",
            get(asset(
                "text/javascript; charset=utf-8",
                include_str!("assets/app.js"),
            )),
        )
        .route(
            "/map.js",
            get(asset(
                "text/javascript; charset=utf-8",
                include_str!("assets/map.js"),
            )),
        )
        .route(
            "/dom.js",
            get(asset(
                "text/javascript; charset=utf-8",
                include_str!("assets/dom.js"),
            )),
        )
        .route(
            "/style.css",
            get(asset(
                "text/css; charset=utf-8",
                include_str!("assets/style.css"),
            )),
        )
}
