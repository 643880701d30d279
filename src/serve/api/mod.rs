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

mod download;
mod views;

use download::{Download, download};
use views::{check, cluster, examples, facets, map, overview, summaries, summary, tree};

/// How many projected clusters `/api/map` sends by default (the largest): enough to
/// cover the map, few enough to draw at every frame of a pan.
pub const MAP_POINTS: usize = 5000;
/// Rows of a page of summaries, by default and at most.
pub const PAGE: usize = 50;
pub const MAX_PAGE: usize = 500;

/// The example queries offered by the SQL box: the project's `queries/`.
const EXAMPLES: [(&str, &str); 8] = [
    ("topics", include_str!("../../../queries/topics.sql")),
    (
        "cluster_sizes",
        include_str!("../../../queries/cluster_sizes.sql"),
    ),
    ("hierarchy", include_str!("../../../queries/hierarchy.sql")),
    (
        "summaries_by_cluster",
        include_str!("../../../queries/summaries_by_cluster.sql"),
    ),
    ("metadata", include_str!("../../../queries/metadata.sql")),
    (
        "frustrated",
        include_str!("../../../queries/frustrated.sql"),
    ),
    ("nearest", include_str!("../../../queries/nearest.sql")),
    (
        "to_parquet",
        include_str!("../../../queries/to_parquet.sql"),
    ),
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
    let mut statements = crate::ops::query::parse(sql)?;
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
        .map_err(|e| ApiError::from(crate::ops::query::statement_error(sql, e.into())))?;
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
