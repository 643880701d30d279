//! Scale-out: the same SQL over a cluster of ckpt workers.
//!
//! The distributed engine is datafusion-distributed's, not ours. A coordinator — any
//! [`CheckpointSession`](crate::CheckpointSession) given workers
//! ([`SessionOptions::workers`](crate::SessionOptions)) — plans a query as it always does;
//! then the distributed planner cuts the physical plan into stages at its shuffles and
//! merges, splits each file scan across tasks by file and byte range, and ships every
//! task's plan to a worker over Arrow Flight (gRPC). A worker ([`serve`], `ckpt worker`)
//! decodes the plan, runs it on its own cores against its own view of storage, and
//! streams Arrow batches back. The stage at the top of the plan runs in the coordinator:
//! that is where results are printed and where COPY's sink writes (workers only read).
//!
//! What is ours, and why it is here:
//! - the worker's session ([`WorkerOptions`], [`worker`]): ckpt's SQL functions (a shipped
//!   plan calls them by name), ckpt's codec (JSONL scans, appended checkpoints), Parquet
//!   reads that never mix two versions of a file, and an object-store registry that opens
//!   any root a plan names with the worker's own environment and `--storage-option`s.
//!   Plans carry URLs, never credentials;
//! - the coordinator's planner (`CoordinatorPlanner`): datafusion-distributed's, except for
//!   the plans of views planned inside another plan, and recursive queries, which stay here;
//! - an appended checkpoint's `LastWinsExec` runs in one task: "the last row wins" needs
//!   every file of the checkpoint, in order, in one place;
//! - a count of the plan fragments each worker ran, also logged, to see work spread
//!   ([`CkptWorker::tasks_run`]).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::context::QueryPlanner;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::execution::{SessionState, SessionStateBuilder};
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_planner::{DefaultPhysicalPlanner, PhysicalPlanner};
use datafusion::prelude::SessionContext;
use datafusion_distributed::{
    DesiredTaskCountEvent, DesiredTaskCountEventResponse, DesiredTaskCountHandler, DistributedExt,
    SessionStateBuilderExt, Worker, WorkerPlanRewriteEvent, WorkerPlanRewriteEventResponse,
    WorkerPlanRewriteHandler, WorkerQueryContext, WorkerResolver, WorkerSessionBuilder,
};
use url::Url;

use crate::scan::LastWinsExec;
use crate::scan::{CkptCodec, SkipLog};
use crate::storage::StorageOptions;
use crate::store_registry::StoreRegistry;
use crate::{Error, Result};

/// Parses `--workers`: `HOST:PORT` (or `http://HOST:PORT`), separated by commas.
pub fn parse_workers(spec: &str) -> Result<Vec<Url>> {
    let mut urls = Vec::new();
    for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let text = match item.contains("://") {
            true => item.to_owned(),
            false => format!("http://{item}"),
        };
        // Never shown with what comes before an `@`: that would be a password.
        let shown = item.rsplit('@').next().unwrap_or(item);
        let bad = |why: &str| {
            Error::config(format!(
                "--workers {shown:?}: {why}; give HOST:PORT[,HOST:PORT...], e.g. 10.0.0.5:50051"
            ))
        };
        let url = Url::parse(&text).map_err(|e| bad(&e.to_string()))?;
        if url.scheme() != "http" && url.scheme() != "https" {
            return Err(bad("workers speak gRPC over http:// or https://"));
        }
        if url.host_str().is_none_or(str::is_empty) || url.port().is_none() {
            return Err(bad("a worker needs a host and a port"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(bad("worker addresses take no credentials"));
        }
        urls.push(url);
    }
    if urls.is_empty() {
        return Err(Error::config(
            "--workers is empty; give HOST:PORT[,HOST:PORT...]",
        ));
    }
    Ok(urls)
}

/// The workers a coordinator sends tasks to: the fixed list it was given.
#[derive(Debug, Clone)]
struct FixedWorkers(Arc<[Url]>);

impl WorkerResolver for FixedWorkers {
    fn get_urls(&self) -> DfResult<Vec<Url>> {
        Ok(self.0.to_vec())
    }
}

/// Makes `builder` a coordinator's: the distributed planner, the workers, ckpt's codec,
/// and appended checkpoints kept in one task.
pub(crate) fn coordinator(builder: SessionStateBuilder, workers: &[Url]) -> SessionStateBuilder {
    let mut builder = builder
        .with_distributed_worker_resolver(FixedWorkers(workers.into()))
        .with_distributed_user_codec(CkptCodec::default())
        .with_distributed_desired_task_count_handler(AppendsInOneTask)
        .with_distributed_planner();
    match builder.query_planner().take() {
        Some(distributed) => builder.with_query_planner(Arc::new(CoordinatorPlanner {
            distributed,
            workers: workers.into(),
        })),
        None => builder,
    }
}

/// The coordinator's query planner: datafusion-distributed's, but for two kinds of plans,
/// planned here as DataFusion would:
/// - a plan planned while planning another, such as the inner plan of a view (Kura's
///   Parquet layout is one): it is part of the outer plan, which is distributed whole;
///   distributed on its own, it would be a distributed plan nested in another;
/// - a query with a recursive CTE: its recursive term runs its input again at every step,
///   and a stage sent to workers runs once per query (a worker would wait for a plan that
///   never comes, and the query time out).
#[derive(Debug)]
struct CoordinatorPlanner {
    distributed: Arc<dyn QueryPlanner + Send + Sync>,
    /// The workers, named in the error of a query that loses one.
    workers: Arc<[Url]>,
}

tokio::task_local! {
    /// Set while the coordinator plans a query (see [`CoordinatorPlanner`]).
    static PLANNING: ();
}

#[async_trait]
impl QueryPlanner for CoordinatorPlanner {
    async fn create_physical_plan(
        &self,
        plan: &LogicalPlan,
        session: &dyn Session,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let nested = PLANNING.try_with(|_| ()).is_ok();
        if nested || is_recursive(plan)? {
            return DefaultPhysicalPlanner::default()
                .create_physical_plan(plan, session)
                .await;
        }
        let plan = PLANNING
            .scope((), self.distributed.create_physical_plan(plan, session))
            .await?;
        Ok(Arc::new(NamesLostWorkers {
            input: plan,
            workers: Arc::clone(&self.workers),
        }))
    }
}

/// The top of a coordinator's plan: a failure of a worker's connection (a worker killed
/// or gone mid-query, which the transport reports as a bare HTTP/2 or gRPC error) is
/// reported naming the workers that no longer answer, found by trying to connect to each.
/// Everything else passes through unchanged.
#[derive(Debug)]
struct NamesLostWorkers {
    input: Arc<dyn ExecutionPlan>,
    workers: Arc<[Url]>,
}

impl datafusion::physical_plan::DisplayAs for NamesLostWorkers {
    fn fmt_as(
        &self,
        _t: datafusion::physical_plan::DisplayFormatType,
        f: &mut std::fmt::Formatter,
    ) -> std::fmt::Result {
        write!(f, "NamesLostWorkers: workers={}", self.workers.len())
    }
}

impl ExecutionPlan for NamesLostWorkers {
    fn name(&self) -> &str {
        "NamesLostWorkers"
    }

    fn properties(&self) -> &Arc<datafusion::physical_plan::PlanProperties> {
        self.input.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(
            &Arc<dyn datafusion::physical_expr::PhysicalExpr>,
        ) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        match (children.pop(), children.is_empty()) {
            (Some(input), true) => Ok(Arc::new(NamesLostWorkers {
                input,
                workers: Arc::clone(&self.workers),
            })),
            _ => Err(DataFusionError::Internal(
                "NamesLostWorkers has one child".into(),
            )),
        }
    }

    fn execute(
        &self,
        partition: usize,
        ctx: Arc<datafusion::execution::TaskContext>,
    ) -> DfResult<datafusion::execution::SendableRecordBatchStream> {
        use futures::StreamExt;
        let stream = self.input.execute(partition, ctx)?;
        let schema = stream.schema();
        let workers = Arc::clone(&self.workers);
        let named = stream.then(move |item| {
            let workers = Arc::clone(&workers);
            async move {
                match item {
                    Err(e) if is_connection_failure(&e) => {
                        Err(name_lost_workers(e, &workers).await)
                    }
                    other => other,
                }
            }
        });
        Ok(Box::pin(
            datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(schema, named),
        ))
    }
}

/// Whether an error is a failed connection to a worker (its transport's words).
fn is_connection_failure(e: &DataFusionError) -> bool {
    let text = e.to_string().to_lowercase();
    [
        "transport error",
        "h2 protocol error",
        "broken pipe",
        "connection reset",
        "connection refused",
        "error trying to connect",
        "tcp connect error",
        "status: unavailable",
        "stream closed",
    ]
    .iter()
    .any(|w| text.contains(w))
}

/// `e`, saying which workers no longer accept connections (each tried for at most 2 s; the
/// whole round again a few times, 200 ms apart, while every worker still answers: a worker
/// that is being killed closes its connections before its listening socket).
async fn name_lost_workers(e: DataFusionError, workers: &[Url]) -> DataFusionError {
    let mut lost = Vec::new();
    for round in 0..5 {
        if round > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        lost = unreachable_workers(workers).await;
        if !lost.is_empty() {
            break;
        }
    }
    let all: Vec<String> = workers
        .iter()
        .filter_map(|u| Some(format!("{}:{}", u.host_str()?, u.port_or_known_default()?)))
        .collect();
    let said = match lost.as_slice() {
        [] => format!(
            "a connection to a worker failed (workers: {}); the query cannot finish without it",
            all.join(", ")
        ),
        [one] => format!("worker {one} stopped answering; the query cannot finish without it"),
        many => format!(
            "workers {} stopped answering; the query cannot finish without them",
            many.join(", ")
        ),
    };
    DataFusionError::Execution(format!("{said}: {e}"))
}

/// The workers that refuse a connection or do not answer within 2 s, with why.
async fn unreachable_workers(workers: &[Url]) -> Vec<String> {
    let mut lost = Vec::new();
    for url in workers {
        let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else {
            continue;
        };
        let addr = format!("{host}:{port}");
        let tried = tokio::time::timeout(
            std::time::Duration::from_secs(2),
            tokio::net::TcpStream::connect(addr.as_str()),
        )
        .await;
        match tried {
            Ok(Ok(_)) => {}
            Ok(Err(why)) => lost.push(format!("{addr} ({why})")),
            Err(_) => lost.push(format!("{addr} (no answer within 2 s)")),
        }
    }
    lost
}

/// Whether a plan holds a recursive CTE, in any subquery too.
fn is_recursive(plan: &LogicalPlan) -> DfResult<bool> {
    let mut recursive = false;
    plan.apply_with_subqueries(|p| {
        recursive |= matches!(p, LogicalPlan::RecursiveQuery(_));
        Ok(match recursive {
            true => TreeNodeRecursion::Stop,
            false => TreeNodeRecursion::Continue,
        })
    })?;
    Ok(recursive)
}

/// A stage holding a [`LastWinsExec`] runs as one task (see the module documentation).
struct AppendsInOneTask;

#[async_trait]
impl DesiredTaskCountHandler for AppendsInOneTask {
    async fn handle(
        &self,
        ev: DesiredTaskCountEvent<'_>,
    ) -> Option<DfResult<DesiredTaskCountEventResponse>> {
        ev.plan
            .downcast_ref::<LastWinsExec>()
            .map(|_| Ok(DesiredTaskCountEventResponse::maximum(1)))
    }
}

/// How a worker runs what it is sent.
#[derive(Debug, Clone, Default)]
pub struct WorkerOptions {
    /// How this worker reaches storage: its environment (`AWS_*`, ...) and these options.
    pub storage: StorageOptions,
    /// Memory pool of the worker, shared by every task it runs; operators spill beyond it.
    pub memory_limit: Option<usize>,
}

/// A worker: datafusion-distributed's [`Worker`] with ckpt's session, and a count of the
/// tasks it ran.
#[derive(Clone)]
pub struct CkptWorker {
    worker: Worker,
    tasks: Arc<AtomicU64>,
}

impl std::fmt::Debug for CkptWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CkptWorker")
            .field("tasks_run", &self.tasks_run())
            .finish()
    }
}

impl CkptWorker {
    /// Plan fragments (tasks) this worker has decoded and started.
    pub fn tasks_run(&self) -> u64 {
        self.tasks.load(Ordering::Relaxed)
    }

    /// The gRPC service, to mount on a tonic server of one's own.
    pub fn into_worker(self) -> Worker {
        self.worker
    }
}

/// A worker with ckpt's session (see the module documentation).
pub fn worker(options: &WorkerOptions) -> Result<CkptWorker> {
    let tasks = Arc::new(AtomicU64::new(0));
    let runtime = runtime(options)?;
    let session = WorkerSession {
        storage: options.storage.clone(),
        skips: SkipLog::default(),
        tasks: tasks.clone(),
        runtime: runtime.clone(),
    };
    let worker = Worker::from_session_builder(session).with_runtime_env(runtime);
    Ok(CkptWorker { worker, tasks })
}

/// The runtime every task of a worker shares: stores opened on first use with the
/// worker's options, and its memory pool.
fn runtime(options: &WorkerOptions) -> Result<Arc<RuntimeEnv>> {
    let mut runtime = RuntimeEnvBuilder::new()
        .with_object_store_registry(Arc::new(StoreRegistry::new(options.storage.clone())))
        .with_object_list_cache_limit(0);
    if let Some(limit) = options.memory_limit {
        runtime = runtime.with_memory_pool(crate::memory::limited_pool(limit));
    }
    Ok(runtime.build_arc()?)
}

/// Builds the session each task runs in.
struct WorkerSession {
    storage: StorageOptions,
    skips: SkipLog,
    tasks: Arc<AtomicU64>,
    /// The worker's runtime (its stores), for the Parquet readers installed per task.
    runtime: Arc<RuntimeEnv>,
}

#[async_trait]
impl WorkerSessionBuilder for WorkerSession {
    async fn build_session_state(&self, ctx: WorkerQueryContext) -> DfResult<SessionState> {
        let state = ctx
            .builder
            .with_distributed_user_codec(
                CkptCodec::new(self.skips.clone()).with_storage(self.storage.clone()),
            )
            .with_distributed_worker_plan_rewrite_handler(TaskStart {
                tasks: self.tasks.clone(),
                runtime: self.runtime.clone(),
            })
            .build();
        let mut ctx = SessionContext::new_with_state(state);
        crate::functions::register(&mut ctx).map_err(|e| DataFusionError::External(e.into()))?;
        Ok(ctx.state())
    }
}

/// Runs on every plan a worker decodes: what DataFusion's plan message does not carry put
/// back (Parquet reads pinned to one version of each file, the declared fields of Kura's
/// layout), a count, a log line.
struct TaskStart {
    tasks: Arc<AtomicU64>,
    runtime: Arc<RuntimeEnv>,
}

impl WorkerPlanRewriteHandler for TaskStart {
    fn rewrite_worker_plan(
        &self,
        ev: WorkerPlanRewriteEvent,
    ) -> DfResult<WorkerPlanRewriteEventResponse> {
        let n = self.tasks.fetch_add(1, Ordering::Relaxed) + 1;
        let task = ev
            .session_config
            .get_extension::<datafusion_distributed::DistributedTaskContext>();
        let (index, count) = task.map_or((0, 1), |t| (t.task_index, t.task_count));
        tracing::info!(
            "task {} of {count} started: {} ({n} so far)",
            index + 1,
            ev.plan.name()
        );
        let plan = crate::scan::parquet::pin_parquet_reads(ev.plan, &self.runtime)?;
        let plan = crate::scan::kura::restore_declared_fields(plan)?;
        Ok(WorkerPlanRewriteEventResponse::new(plan))
    }
}

/// Serves `worker` on `listener` until `shutdown` completes; then stops taking tasks and
/// returns once the running ones have ended.
pub async fn serve(
    listener: tokio::net::TcpListener,
    worker: CkptWorker,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    tonic::transport::Server::builder()
        .add_service(worker.into_worker().into_worker_server())
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown,
        )
        .await
        .map_err(|e| Error::config(format!("the worker's server stopped: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_lists_parse() {
        let urls = parse_workers("127.0.0.1:50051, localhost:7, http://h:9,").unwrap();
        let shown: Vec<&str> = urls.iter().map(Url::as_str).collect();
        assert_eq!(
            shown,
            [
                "http://127.0.0.1:50051/",
                "http://localhost:7/",
                "http://h:9/"
            ]
        );
        for bad in ["", " , ", "ftp://h:1", "http://u:secret@h:1", "h:notaport"] {
            let e = parse_workers(bad).unwrap_err().to_string();
            assert!(e.contains("--workers"), "{bad:?}: {e}");
            assert!(!e.contains("secret"), "{e}");
        }
    }
}
