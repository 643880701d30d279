//! The JSON API of `ckpt serve` (documented with curl examples in docs/serve.md). Every
//! answer is a SQL plan over the checkpoint tables of the session, run under the
//! server's time limit and checked like the SQL box's ([`super::safety`]):
//!
//! - `POST /api/query` `{"sql": "...", "id": "..."}` → `{"columns": [{"name", "type"}],
//!   "rows": [[...]], "truncated": bool}`, at most the row cap; with `?format=csv|json|parquet`
//!   the whole result, streamed as a download. `id` (optional) names the query for
//!   `POST /api/cancel` `{"id": "..."}`.
//! - `GET /api/overview`: roots, their checkpoints, the run's numbers; `GET /api/check`:
//!   `ckpt check`'s report; `GET /api/examples`: the queries of `queries/`.
//! - `GET /api/tree`: every cluster (id, name, parent, size); `GET /api/map?limit=N`: the
//!   projected clusters, the largest N; `GET /api/cluster?id=`: one cluster and its
//!   children; `GET /api/summaries?cluster=&offset=&limit=`: its summaries, paged;
//!   `GET /api/facets?id=`: counts over summary fields and metadata keys;
//!   `GET /api/summary?chat_id=`: one summary, its conversation and metadata.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type, SchemaRef, UInt64Type};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::common::ScalarValue;
use datafusion::dataframe::DataFrame;
use datafusion::physical_plan::SendableRecordBatchStream;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};

use super::State as Shared;
use super::safety::{self, Refusal};
use crate::Error;

type AppState = State<Arc<Shared>>;

/// How many projected clusters `/api/map` sends by default (the largest): enough to
/// cover the map, few enough to draw at every frame of a pan.
pub const MAP_POINTS: usize = 5000;
/// Rows of a page of summaries, by default and at most.
pub const PAGE: usize = 50;
pub const MAX_PAGE: usize = 500;

/// The example queries offered by the SQL box: the project's `queries/`.
const EXAMPLES: [(&str, &str); 8] = [
    ("topics", include_str!("../../queries/topics.sql")),
    (
        "cluster_sizes",
        include_str!("../../queries/cluster_sizes.sql"),
    ),
    ("hierarchy", include_str!("../../queries/hierarchy.sql")),
    (
        "summaries_by_cluster",
        include_str!("../../queries/summaries_by_cluster.sql"),
    ),
    ("metadata", include_str!("../../queries/metadata.sql")),
    ("frustrated", include_str!("../../queries/frustrated.sql")),
    ("nearest", include_str!("../../queries/nearest.sql")),
    ("to_parquet", include_str!("../../queries/to_parquet.sql")),
];

pub(crate) fn routes(state: Arc<Shared>) -> Router {
    Router::new()
        .route("/api/query", post(query))
        .route("/api/cancel", post(cancel))
        .route("/api/overview", get(overview))
        .route("/api/check", get(check))
        .route("/api/examples", get(examples))
        .route("/api/tree", get(tree))
        .route("/api/map", get(map))
        .route("/api/cluster", get(cluster))
        .route("/api/summaries", get(summaries))
        .route("/api/facets", get(facets))
        .route("/api/summary", get(summary))
        .fallback(|| async {
            safety::error_response(StatusCode::NOT_FOUND, "no such page or endpoint")
        })
        .with_state(state)
}

/// Why a request failed, as the JSON answer says it.
#[derive(Debug)]
pub enum ApiError {
    /// Not a read, or not allowed: 403.
    Refused(Refusal),
    /// A bad request or SQL that does not plan or run: 400, with the engine's message.
    Bad(String),
    /// Over the time limit: 504.
    Timeout(Duration),
    /// Stopped by `/api/cancel`.
    Cancelled,
    /// Nothing there: 404.
    NotFound(String),
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        // The error's Display: the engine's message, secrets redacted, no backtrace.
        ApiError::Bad(e.to_string())
    }
}

impl From<datafusion::error::DataFusionError> for ApiError {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        Error::from(e).into()
    }
}

impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> Self {
        ApiError::Refused(r)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            ApiError::Refused(r) => (StatusCode::FORBIDDEN, r.0),
            ApiError::Bad(m) => (StatusCode::BAD_REQUEST, m),
            ApiError::Timeout(d) => (
                StatusCode::GATEWAY_TIMEOUT,
                format!(
                    "the query ran longer than the limit of {} s (--query-timeout) and was stopped",
                    d.as_secs_f64()
                ),
            ),
            ApiError::Cancelled => (StatusCode::CONFLICT, "the query was cancelled".to_owned()),
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, m),
        };
        safety::error_response(status, &message)
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// A result as the API sends it.
#[derive(Debug, Default)]
pub struct Table {
    pub columns: Vec<(String, String)>,
    pub rows: Vec<Vec<Value>>,
    pub truncated: bool,
}

impl Table {
    fn to_json(&self) -> Value {
        json!({
            "columns": self.columns.iter().map(|(n, t)| json!({"name": n, "type": t})).collect::<Vec<_>>(),
            "rows": self.rows,
            "truncated": self.truncated,
        })
    }

    /// Rows as objects keyed by column name (the views' queries name their columns once).
    fn objects(&self) -> Vec<Value> {
        self.rows
            .iter()
            .map(|r| {
                Value::Object(
                    self.columns
                        .iter()
                        .zip(r)
                        .map(|((n, _), v)| (n.clone(), v.clone()))
                        .collect(),
                )
            })
            .collect()
    }

    fn first(&self) -> Option<Value> {
        self.objects().into_iter().next()
    }
}

/// The cells of a column as JSON: numbers and booleans as themselves, other values as
/// the text `ckpt query` prints for them.
fn column_values(array: &ArrayRef) -> ApiResult<Vec<Value>> {
    use datafusion::arrow::compute::cast;
    let n = array.len();
    let mut out = Vec::with_capacity(n);
    let dt = array.data_type();
    if dt.is_integer() && *dt != DataType::UInt64 {
        let a = cast(array, &DataType::Int64).map_err(|e| ApiError::Bad(e.to_string()))?;
        let a = a.as_primitive::<Int64Type>();
        for i in 0..n {
            out.push(if a.is_null(i) {
                Value::Null
            } else {
                json!(a.value(i))
            });
        }
    } else if *dt == DataType::UInt64 {
        let a = array.as_primitive::<UInt64Type>();
        for i in 0..n {
            out.push(if a.is_null(i) {
                Value::Null
            } else {
                json!(a.value(i))
            });
        }
    } else if dt.is_floating() {
        let a = cast(array, &DataType::Float64).map_err(|e| ApiError::Bad(e.to_string()))?;
        let a = a.as_primitive::<Float64Type>();
        for i in 0..n {
            let v = a.value(i);
            out.push(match (a.is_null(i), v.is_finite()) {
                (true, _) => Value::Null,
                (false, true) => json!(v),
                (false, false) => json!(v.to_string()),
            });
        }
    } else if *dt == DataType::Boolean {
        let a = array.as_boolean();
        for i in 0..n {
            out.push(if a.is_null(i) {
                Value::Null
            } else {
                json!(a.value(i))
            });
        }
    } else if *dt == DataType::Null {
        out.resize(n, Value::Null);
    } else {
        let options = FormatOptions::default();
        let f = ArrayFormatter::try_new(array.as_ref(), &options)
            .map_err(|e| ApiError::Bad(e.to_string()))?;
        for i in 0..n {
            out.push(if array.is_null(i) {
                Value::Null
            } else {
                Value::String(f.value(i).to_string())
            });
        }
    }
    Ok(out)
}

/// Appends a batch's rows to a table, at most `room` of them.
fn append_rows(table: &mut Table, batch: &RecordBatch, room: usize) -> ApiResult<()> {
    let take = batch.num_rows().min(room);
    let batch = batch.slice(0, take);
    let columns: Vec<Vec<Value>> = batch
        .columns()
        .iter()
        .map(column_values)
        .collect::<ApiResult<_>>()?;
    for i in 0..take {
        table
            .rows
            .push(columns.iter().map(|c| c[i].clone()).collect());
    }
    Ok(())
}

fn columns_of(schema: &SchemaRef) -> Vec<(String, String)> {
    schema
        .fields()
        .iter()
        .map(|f| (f.name().clone(), f.data_type().to_string()))
        .collect()
}

/// Plans one statement of the SQL box: it must be a read, and so must its plan.
async fn plan_read(state: &Shared, sql: &str) -> ApiResult<DataFrame> {
    let mut statements = crate::exec::parse(sql)?;
    let statement = match statements.len() {
        1 => statements.remove(0).1,
        0 => return Err(ApiError::Bad("no SQL statement given".to_owned())),
        n => {
            return Err(ApiError::Bad(format!("one statement at a time, found {n}")));
        }
    };
    safety::check_statement(&statement)?;
    let ctx = state.session.context();
    let plan = ctx
        .state()
        .statement_to_plan(statement)
        .await
        .map_err(|e| ApiError::from(crate::exec::statement_error(sql, e.into())))?;
    safety::check_plan(&plan)?;
    Ok(ctx.execute_logical_plan(plan).await?)
}

/// Plans one of the views' own queries, with `$1`, `$2`... bound to `params`; checked
/// like the SQL box's all the same.
async fn plan_view(state: &Shared, sql: &str, params: Vec<ScalarValue>) -> ApiResult<DataFrame> {
    let ctx = state.session.context();
    let df = ctx.sql(sql).await?;
    let df = if params.is_empty() {
        df
    } else {
        df.with_param_values(params)?
    };
    safety::check_plan(df.logical_plan())?;
    Ok(df)
}

/// Runs a planned query to at most `cap` rows, under the time limit.
async fn collect(state: &Shared, df: DataFrame, cap: usize) -> ApiResult<Table> {
    let limit = state.query_timeout;
    let run = async move {
        let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
        let mut stream = df.execute_stream().await?;
        let mut table = Table {
            columns: columns_of(&schema),
            ..Default::default()
        };
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            let room = cap - table.rows.len();
            if batch.num_rows() > room {
                append_rows(&mut table, &batch, room)?;
                table.truncated = true;
                break;
            }
            append_rows(&mut table, &batch, room)?;
        }
        // Stopping here drops the stream, and with it the plan's running tasks.
        Ok::<_, ApiError>(table)
    };
    match tokio::time::timeout(limit, run).await {
        Ok(r) => r,
        Err(_) => Err(ApiError::Timeout(limit)),
    }
}

async fn view(state: &Shared, sql: &str, params: Vec<ScalarValue>, cap: usize) -> ApiResult<Table> {
    let df = plan_view(state, sql, params).await?;
    collect(state, df, cap).await
}

fn text(v: &str) -> ScalarValue {
    ScalarValue::Utf8(Some(v.to_owned()))
}

#[derive(Debug, Deserialize)]
pub struct QueryBody {
    pub sql: String,
    /// Names the query for `/api/cancel`.
    #[serde(default)]
    pub id: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct QueryParams {
    #[serde(default)]
    pub format: Option<String>,
}

/// Removes a query from the running ones when its request ends, however it ends.
struct Running<'a> {
    state: &'a Shared,
    id: Option<String>,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        if let Some(id) = &self.id {
            self.state.running.lock().remove(id);
        }
    }
}

async fn query(
    State(state): AppState,
    Query(params): Query<QueryParams>,
    body: Result<Json<QueryBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(body) = match body {
        Ok(b) => b,
        Err(e) => return ApiError::Bad(e.body_text()).into_response(),
    };
    let (abort, registration) = futures::future::AbortHandle::new_pair();
    let _running = Running {
        state: &state,
        id: body.id.clone(),
    };
    if let Some(id) = &body.id {
        state.running.lock().insert(id.clone(), abort);
    }
    let work = async {
        let df = plan_read(&state, &body.sql).await?;
        match params.format.as_deref() {
            None | Some("table") => {
                Ok(Json(collect(&state, df, state.row_cap).await?.to_json()).into_response())
            }
            Some(f) => {
                let format = Download::parse(f)?;
                download(&state, df, format).await
            }
        }
    };
    match futures::future::Abortable::new(work, registration).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => e.into_response(),
        Err(_) => ApiError::Cancelled.into_response(),
    }
}

#[derive(Debug, Deserialize)]
struct CancelBody {
    id: String,
}

async fn cancel(State(state): AppState, Json(body): Json<CancelBody>) -> Response {
    let found = state.running.lock().remove(&body.id);
    if let Some(handle) = &found {
        handle.abort();
    }
    Json(json!({ "cancelled": found.is_some() })).into_response()
}

/// The formats of a download.
#[derive(Debug, Clone, Copy)]
enum Download {
    Csv,
    Json,
    Parquet,
}

impl Download {
    fn parse(s: &str) -> ApiResult<Download> {
        match s {
            "csv" => Ok(Download::Csv),
            "json" => Ok(Download::Json),
            "parquet" => Ok(Download::Parquet),
            other => Err(ApiError::Bad(format!(
                "format {other:?}: choose csv, json or parquet"
            ))),
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Download::Csv => "text/csv; charset=utf-8",
            Download::Json => "application/x-ndjson",
            Download::Parquet => "application/vnd.apache.parquet",
        }
    }

    fn file_name(self) -> &'static str {
        match self {
            Download::Csv => "result.csv",
            Download::Json => "result.jsonl",
            Download::Parquet => "result.parquet",
        }
    }
}

/// Writes batches one at a time into bytes to send.
enum Encoder {
    Csv { header: bool },
    Json,
    Parquet(Box<datafusion::parquet::arrow::ArrowWriter<Vec<u8>>>),
}

impl Encoder {
    fn new(format: Download, schema: SchemaRef) -> ApiResult<Encoder> {
        Ok(match format {
            Download::Csv => Encoder::Csv { header: true },
            Download::Json => Encoder::Json,
            Download::Parquet => Encoder::Parquet(Box::new(
                datafusion::parquet::arrow::ArrowWriter::try_new(Vec::new(), schema, None)
                    .map_err(Error::from)?,
            )),
        })
    }

    fn batch(&mut self, batch: &RecordBatch) -> Result<Bytes, Error> {
        match self {
            Encoder::Csv { header } => {
                let mut w = datafusion::arrow::csv::WriterBuilder::new()
                    .with_header(*header)
                    .build(Vec::new());
                w.write(batch)?;
                *header = false;
                Ok(Bytes::from(w.into_inner()))
            }
            Encoder::Json => {
                let mut w = datafusion::arrow::json::LineDelimitedWriter::new(Vec::new());
                w.write(batch)?;
                w.finish()?;
                Ok(Bytes::from(w.into_inner()))
            }
            // The writer keeps a row group until it is full; what it has written (row
            // groups done) is sent as it comes.
            Encoder::Parquet(w) => {
                w.write(batch)?;
                Ok(Bytes::from(std::mem::take(w.inner_mut())))
            }
        }
    }

    fn finish(self) -> Result<Bytes, Error> {
        match self {
            Encoder::Csv { .. } | Encoder::Json => Ok(Bytes::new()),
            Encoder::Parquet(w) => Ok(Bytes::from(w.into_inner()?)),
        }
    }
}

/// The whole result, streamed in the format asked for. The first batch is awaited before
/// answering, so that an error of the plan's start is a JSON answer, not a cut download;
/// the time limit holds for the whole download.
async fn download(state: &Shared, df: DataFrame, format: Download) -> ApiResult<Response> {
    let deadline = tokio::time::Instant::now() + state.query_timeout;
    let limit = state.query_timeout;
    let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
    let mut stream: SendableRecordBatchStream =
        match tokio::time::timeout_at(deadline, df.execute_stream()).await {
            Ok(s) => s?,
            Err(_) => return Err(ApiError::Timeout(limit)),
        };
    let first = match tokio::time::timeout_at(deadline, stream.next()).await {
        Ok(b) => b.transpose()?,
        Err(_) => return Err(ApiError::Timeout(limit)),
    };
    let mut encoder = Encoder::new(format, schema.clone())?;
    let mut head = Vec::new();
    if let Some(b) = &first {
        head.push(encoder.batch(b).map_err(ApiError::from)?);
    } else if let Encoder::Csv { .. } = encoder {
        head.push(encoder.batch(&RecordBatch::new_empty(schema))?);
    }
    struct Rest {
        stream: Option<SendableRecordBatchStream>,
        encoder: Option<Encoder>,
    }
    let rest = Rest {
        stream: first.is_some().then_some(stream),
        encoder: Some(encoder),
    };
    let tail = futures::stream::try_unfold(rest, move |mut rest| async move {
        loop {
            let Some(stream) = rest.stream.as_mut() else {
                return match rest.encoder.take() {
                    Some(e) => Ok(Some((e.finish()?, rest))),
                    None => Ok(None),
                };
            };
            let next = match tokio::time::timeout_at(deadline, stream.next()).await {
                Ok(n) => n,
                Err(_) => {
                    return Err(Error::config(format!(
                        "the download ran longer than the limit of {} s and was stopped",
                        limit.as_secs_f64()
                    )));
                }
            };
            match next {
                Some(batch) => {
                    let batch = batch.map_err(Error::from)?;
                    let encoder = rest.encoder.as_mut().expect("encoder until the end");
                    let bytes = encoder.batch(&batch)?;
                    if !bytes.is_empty() {
                        return Ok(Some((bytes, rest)));
                    }
                }
                None => rest.stream = None,
            }
        }
    });
    let body = futures::stream::iter(head.into_iter().map(Ok::<_, Error>))
        .chain(tail)
        .map(|r| r.map_err(|e| std::io::Error::other(e.to_string())));
    Ok((
        [
            (header::CONTENT_TYPE, format.content_type().to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{}\"", format.file_name()),
            ),
        ],
        Body::from_stream(body),
    )
        .into_response())
}

/// The checkpoint table the hierarchy is read from: `meta_clusters`, else `clusters`.
fn cluster_table(state: &Shared) -> Option<&'static str> {
    use datafusion::catalog::SchemaProvider;
    let schema = state.session.default_schema();
    ["meta_clusters", "clusters"]
        .into_iter()
        .find(|t| schema.table_exist(t))
}

fn has_table(state: &Shared, name: &str) -> bool {
    use datafusion::catalog::SchemaProvider;
    state.session.default_schema().table_exist(name)
}

fn require_clusters(state: &Shared) -> ApiResult<&'static str> {
    cluster_table(state).ok_or_else(|| {
        ApiError::NotFound("the root has neither meta_clusters nor clusters".to_owned())
    })
}

async fn overview(State(state): AppState) -> ApiResult<Json<Value>> {
    let mut roots = Vec::new();
    for (name, schema) in state.session.schemas() {
        let root = schema.root();
        let infos = crate::catalog::describe_root(root).await?;
        roots.push(json!({
            "name": name,
            "location": root.display().to_string(),
            "checkpoints": infos,
        }));
    }
    // The run's numbers: rows of each kind's table in the default root.
    let mut numbers = serde_json::Map::new();
    for (key, table) in [
        ("conversations", "conversations"),
        ("summaries", "summaries"),
        ("clusters", "clusters"),
        ("meta_clusters", "meta_clusters"),
        ("projected", "dimensionality"),
    ] {
        if has_table(&state, table) {
            let t = view(
                &state,
                &format!("SELECT count(*) AS n FROM {table}"),
                vec![],
                1,
            )
            .await?;
            numbers.insert(key.to_owned(), t.rows[0][0].clone());
        }
    }
    if has_table(&state, "dimensionality") {
        let t = view(
            &state,
            "SELECT count(DISTINCT level) AS n FROM dimensionality",
            vec![],
            1,
        )
        .await?;
        numbers.insert("levels".to_owned(), t.rows[0][0].clone());
    }
    Ok(Json(json!({
        "roots": roots,
        "numbers": numbers,
        "hierarchy": cluster_table(&state),
        "row_cap": state.row_cap,
        "query_timeout_seconds": state.query_timeout.as_secs_f64(),
    })))
}

async fn check(State(state): AppState) -> Json<Value> {
    let report = state
        .check
        .get_or_init(|| async {
            crate::check::check(state.roots.clone(), &state.check_options)
                .await
                .map_err(|e| e.to_string())
        })
        .await;
    Json(match report {
        Ok(r) => json!({ "report": r }),
        Err(e) => json!({ "error": e }),
    })
}

async fn examples() -> Json<Value> {
    let list: Vec<Value> = EXAMPLES
        .iter()
        .map(|(name, sql)| {
            let read = crate::exec::parse(sql)
                .ok()
                .is_some_and(|s| s.iter().all(|(_, st)| safety::check_statement(st).is_ok()));
            json!({ "name": name, "sql": sql, "read_only": read })
        })
        .collect();
    Json(json!({ "examples": list }))
}

async fn tree(State(state): AppState) -> ApiResult<Json<Value>> {
    let table = require_clusters(&state)?;
    let t = view(
        &state,
        &format!("SELECT id, name, parent_id, count FROM {table} ORDER BY count DESC, name"),
        vec![],
        usize::MAX,
    )
    .await?;
    Ok(Json(json!({ "table": table, "clusters": t.objects() })))
}

#[derive(Debug, Deserialize)]
struct MapParams {
    limit: Option<usize>,
}

async fn map(State(state): AppState, Query(p): Query<MapParams>) -> ApiResult<Json<Value>> {
    if !has_table(&state, "dimensionality") {
        return Ok(Json(json!({ "points": [], "total": 0 })));
    }
    let limit = p.limit.unwrap_or(MAP_POINTS).clamp(1, 50_000);
    let total = view(&state, "SELECT count(*) FROM dimensionality", vec![], 1).await?;
    // The largest clusters first: at any zoom they are the ones a reader looks for.
    let t = view(
        &state,
        &format!(
            "SELECT id, name, parent_id, x_coord AS x, y_coord AS y, level, count \
             FROM dimensionality ORDER BY count DESC, id LIMIT {limit}"
        ),
        vec![],
        limit,
    )
    .await?;
    Ok(Json(
        json!({ "points": t.objects(), "total": total.rows[0][0] }),
    ))
}

#[derive(Debug, Deserialize)]
struct ClusterParams {
    id: String,
}

async fn cluster(State(state): AppState, Query(p): Query<ClusterParams>) -> ApiResult<Json<Value>> {
    let table = require_clusters(&state)?;
    let one = view(
        &state,
        &format!("SELECT id, name, description, slug, parent_id, count FROM {table} WHERE id = $1"),
        vec![text(&p.id)],
        1,
    )
    .await?;
    let Some(cluster) = one.first() else {
        return Err(ApiError::NotFound(format!("no cluster with id {:?}", p.id)));
    };
    let children = view(
        &state,
        &format!(
            "SELECT id, name, count FROM {table} WHERE parent_id = $1 ORDER BY count DESC, name"
        ),
        vec![text(&p.id)],
        usize::MAX,
    )
    .await?;
    Ok(Json(json!({
        "cluster": cluster,
        "children": children.objects(),
    })))
}

/// The summaries of a cluster (`$1`), as a subquery. A semi-join: no DISTINCT over the
/// cluster's chat ids (a million for the top cluster of a large run).
fn summaries_of(table: &str) -> String {
    format!(
        "(SELECT * FROM summaries \
          WHERE chat_id IN (SELECT unnest(chat_ids) FROM {table} WHERE id = $1))"
    )
}

#[derive(Debug, Deserialize)]
struct SummariesParams {
    cluster: String,
    offset: Option<usize>,
    limit: Option<usize>,
}

async fn summaries(
    State(state): AppState,
    Query(p): Query<SummariesParams>,
) -> ApiResult<Json<Value>> {
    let table = require_clusters(&state)?;
    if !has_table(&state, "summaries") {
        return Ok(Json(json!({ "total": 0, "rows": [] })));
    }
    let offset = p.offset.unwrap_or(0);
    let limit = p.limit.unwrap_or(PAGE).clamp(1, MAX_PAGE);
    let of = summaries_of(table);
    let total = view(
        &state,
        &format!("SELECT count(*) FROM {of} s"),
        vec![text(&p.cluster)],
        1,
    )
    .await?;
    let page = view(
        &state,
        // The page's chat ids first, then their rows: sorting only the ids, not every
        // summary's text, is several times faster on a large cluster.
        &format!(
            "WITH page AS (SELECT s.chat_id FROM {of} s \
                           ORDER BY s.chat_id LIMIT {limit} OFFSET {offset}) \
             SELECT s.chat_id, s.summary, s.topic, s.task, \
             array_to_string(s.languages, ', ') AS languages, \
             s.concerning_score, s.user_frustration \
             FROM summaries s WHERE s.chat_id IN (SELECT chat_id FROM page) \
             ORDER BY s.chat_id"
        ),
        vec![text(&p.cluster)],
        limit,
    )
    .await?;
    Ok(Json(json!({
        "total": total.rows[0][0],
        "offset": offset,
        "limit": limit,
        "rows": page.objects(),
    })))
}

async fn facets(State(state): AppState, Query(p): Query<ClusterParams>) -> ApiResult<Json<Value>> {
    let table = require_clusters(&state)?;
    if !has_table(&state, "summaries") {
        return Ok(Json(json!({ "facets": [] })));
    }
    let of = summaries_of(table);
    let id = text(&p.id);
    let mut out = Vec::new();
    for (name, value) in [
        ("topic", "s.topic"),
        ("task", "s.task"),
        ("concerning_score", "s.concerning_score"),
        ("user_frustration", "s.user_frustration"),
    ] {
        let t = view(
            &state,
            &format!(
                "SELECT CAST({value} AS VARCHAR) AS value, count(*) AS n FROM {of} s \
                 GROUP BY {value} ORDER BY n DESC, value LIMIT 10"
            ),
            vec![id.clone()],
            10,
        )
        .await?;
        out.push(json!({ "name": name, "values": t.objects() }));
    }
    for (name, list) in [
        ("languages", "s.languages"),
        ("metadata keys", "json_object_keys(s.metadata)"),
    ] {
        let t = view(
            &state,
            &format!(
                "SELECT value, count(*) AS n FROM \
                 (SELECT unnest({list}) AS value FROM {of} s) \
                 GROUP BY value ORDER BY n DESC, value LIMIT 10"
            ),
            vec![id.clone()],
            10,
        )
        .await?;
        let keys = t.objects();
        out.push(json!({ "name": name, "values": keys }));
        if name != "metadata keys" {
            continue;
        }
        // The values of the commonest metadata keys.
        for key in keys.iter().take(5) {
            // The key is written into the SQL as a literal: only keys of plain characters
            // are (a placeholder has no type inside a JSON function's arguments).
            let Some(k) = key.get("value").and_then(Value::as_str).filter(|k| {
                k.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-. ".contains(c))
            }) else {
                continue;
            };
            let t = view(
                &state,
                &format!(
                    "SELECT value, count(*) AS n FROM \
                     (SELECT json_as_text(s.metadata, '{k}') AS value FROM {of} s) \
                     WHERE value IS NOT NULL GROUP BY value ORDER BY n DESC, value LIMIT 10"
                ),
                vec![id.clone()],
                10,
            )
            .await?;
            out.push(json!({ "name": format!("metadata.{k}"), "values": t.objects() }));
        }
    }
    Ok(Json(json!({ "facets": out })))
}

#[derive(Debug, Deserialize)]
struct SummaryParams {
    chat_id: String,
}

async fn summary(State(state): AppState, Query(p): Query<SummaryParams>) -> ApiResult<Json<Value>> {
    let id = text(&p.chat_id);
    let mut summary = Value::Null;
    if has_table(&state, "summaries") {
        let t = view(
            &state,
            "SELECT chat_id, summary, request, topic, task, \
             array_to_string(languages, ', ') AS languages, concerning_score, user_frustration, \
             array_to_string(assistant_errors, '; ') AS assistant_errors, metadata \
             FROM summaries WHERE chat_id = $1",
            vec![id.clone()],
            1,
        )
        .await?;
        summary = t.first().unwrap_or(Value::Null);
    }
    let mut conversation = Value::Null;
    if has_table(&state, "conversations") {
        let head = view(
            &state,
            "SELECT chat_id, CAST(created_at AS VARCHAR) AS created_at, metadata \
             FROM conversations WHERE chat_id = $1",
            vec![id.clone()],
            1,
        )
        .await?;
        if let Some(c) = head.first() {
            let messages = view(
                &state,
                "SELECT get_field(m, 'role') AS role, get_field(m, 'content') AS content, \
                 CAST(get_field(m, 'created_at') AS VARCHAR) AS created_at \
                 FROM (SELECT unnest(messages) AS m FROM conversations WHERE chat_id = $1)",
                vec![id.clone()],
                usize::MAX,
            )
            .await?;
            conversation = json!({ "conversation": c, "messages": messages.objects() });
        }
    }
    if summary.is_null() && conversation.is_null() {
        return Err(ApiError::NotFound(format!(
            "no summary or conversation with chat_id {:?}",
            p.chat_id
        )));
    }
    Ok(Json(
        json!({ "summary": summary, "conversation": conversation }),
    ))
}
