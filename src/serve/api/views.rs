//! The views' endpoints: overview, check, examples, tree, map, cluster, summaries,
//! facets and summary — each a SQL plan over the checkpoint tables (see the parent
//! module's docs for what each answers).

use super::*;

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

pub(super) async fn overview(State(state): AppState) -> ApiResult<Json<Value>> {
    let mut roots = Vec::new();
    for (name, schema) in state.session.schemas() {
        let root = schema.root();
        let infos = crate::ops::ls::describe_root(root).await?;
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

pub(super) async fn check(State(state): AppState) -> Json<Value> {
    let report = state
        .check
        .get_or_init(|| async {
            crate::ops::check::check(state.roots.clone(), &state.check_options)
                .await
                .map_err(|e| e.to_string())
        })
        .await;
    Json(match report {
        Ok(r) => json!({ "report": r }),
        Err(e) => json!({ "error": e }),
    })
}

pub(super) async fn examples() -> Json<Value> {
    let list: Vec<Value> = EXAMPLES
        .iter()
        .map(|(name, sql)| {
            let read = crate::ops::query::parse(sql)
                .ok()
                .is_some_and(|s| s.iter().all(|(_, st)| safety::check_statement(st).is_ok()));
            json!({ "name": name, "sql": sql, "read_only": read })
        })
        .collect();
    Json(json!({ "examples": list }))
}

pub(super) async fn tree(State(state): AppState) -> ApiResult<Json<Value>> {
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
pub(super) struct MapParams {
    limit: Option<usize>,
}

pub(super) async fn map(
    State(state): AppState,
    Query(p): Query<MapParams>,
) -> ApiResult<Json<Value>> {
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
pub(super) struct ClusterParams {
    id: String,
}

pub(super) async fn cluster(
    State(state): AppState,
    Query(p): Query<ClusterParams>,
) -> ApiResult<Json<Value>> {
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
pub(super) struct SummariesParams {
    cluster: String,
    offset: Option<usize>,
    limit: Option<usize>,
}

pub(super) async fn summaries(
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

pub(super) async fn facets(
    State(state): AppState,
    Query(p): Query<ClusterParams>,
) -> ApiResult<Json<Value>> {
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
pub(super) struct SummaryParams {
    chat_id: String,
}

pub(super) async fn summary(
    State(state): AppState,
    Query(p): Query<SummaryParams>,
) -> ApiResult<Json<Value>> {
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
