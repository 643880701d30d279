//! The checkpoint kinds Kura writes, and the one Arrow schema of each.
//!
//! Every format and every code path (typed managers, SQL tables, COPY, convert) uses the
//! schemas defined here; nothing else declares a column of a known kind.
//!
//! Two extra facts ride on a field's Arrow metadata, so that the schema-driven JSONL codec
//! needs no per-kind code:
//! - [`JSON_TEXT`]: the column holds JSON text (Kura's free-form `metadata` object). In JSONL
//!   it is written and read as the JSON value itself, not as a string.
//! - [`COMPUTED_LEN_OF`]: the column is computed (`count` = number of `chat_ids`). Kura
//!   writes it and ignores it on load; so do we.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};

/// Field metadata key: the Utf8 column holds a JSON value as text.
pub const JSON_TEXT: &str = "ckpt.json";
/// Field metadata key: the column is the length of the named list column.
pub const COMPUTED_LEN_OF: &str = "ckpt.len_of";
/// Field metadata key: the JSON text used when the field is absent from a JSONL line.
pub const DEFAULT_JSON: &str = "ckpt.default";

/// A kind of checkpoint, as Kura writes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CheckpointKind {
    /// `ConversationSummary` rows; Kura's default name `summaries`.
    Summaries,
    /// Base `Cluster` rows; default name `clusters`.
    Clusters,
    /// `Cluster` rows of the hierarchy (parent_id links); default name `meta_clusters`.
    MetaClusters,
    /// `ProjectedCluster` rows (2-D coordinates); default name `dimensionality`.
    Dimensionality,
    /// Raw `Conversation` rows; default name `conversations`.
    Conversations,
}

impl CheckpointKind {
    pub const ALL: [CheckpointKind; 5] = [
        CheckpointKind::Summaries,
        CheckpointKind::Clusters,
        CheckpointKind::MetaClusters,
        CheckpointKind::Dimensionality,
        CheckpointKind::Conversations,
    ];

    /// Kura's default checkpoint name for this kind.
    pub fn default_name(self) -> &'static str {
        match self {
            CheckpointKind::Summaries => "summaries",
            CheckpointKind::Clusters => "clusters",
            CheckpointKind::MetaClusters => "meta_clusters",
            CheckpointKind::Dimensionality => "dimensionality",
            CheckpointKind::Conversations => "conversations",
        }
    }

    /// The Kura model the rows are.
    pub fn model_name(self) -> &'static str {
        match self {
            CheckpointKind::Summaries => "ConversationSummary",
            CheckpointKind::Clusters | CheckpointKind::MetaClusters => "Cluster",
            CheckpointKind::Dimensionality => "ProjectedCluster",
            CheckpointKind::Conversations => "Conversation",
        }
    }

    /// The kind a checkpoint name stands for (`summaries`, `summaries.jsonl`, ...), if any.
    pub fn from_name(name: &str) -> Option<Self> {
        let stem = crate::format::strip_extension(name).0;
        Self::ALL.into_iter().find(|k| k.default_name() == stem)
    }

    /// The logical schema: what SQL sees, what the native Parquet layout stores, and what
    /// JSONL lines are decoded into. Column order is Kura's `model_dump` order, so JSONL
    /// written from it matches Kura's own lines field for field.
    pub fn schema(self) -> SchemaRef {
        static SCHEMAS: OnceLock<HashMap<CheckpointKind, SchemaRef>> = OnceLock::new();
        SCHEMAS
            .get_or_init(|| {
                CheckpointKind::ALL
                    .into_iter()
                    .map(|k| (k, Arc::new(build_schema(k))))
                    .collect()
            })
            .get(&self)
            .cloned()
            .expect("every kind has a schema")
    }
}

impl std::fmt::Display for CheckpointKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.default_name())
    }
}

impl std::str::FromStr for CheckpointKind {
    type Err = crate::Error;
    fn from_str(s: &str) -> crate::Result<Self> {
        Self::from_name(s).ok_or_else(|| {
            crate::Error::config(format!(
                "unknown checkpoint kind {s:?}: expected one of summaries, clusters, meta_clusters, dimensionality, conversations"
            ))
        })
    }
}

fn utf8(name: &str, nullable: bool) -> Field {
    Field::new(name, DataType::Utf8, nullable)
}

/// `List<Utf8>` with a nullable item, the shape Arrow and Parquet writers expect.
pub fn string_list_type() -> DataType {
    DataType::List(Arc::new(Field::new("item", DataType::Utf8, true)))
}

pub fn float_list_type() -> DataType {
    DataType::List(Arc::new(Field::new("item", DataType::Float64, true)))
}

/// Timestamps are naive microseconds, as Kura's `datetime.now()` values are.
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, None)
}

pub fn message_fields() -> Fields {
    Fields::from(vec![
        Field::new("created_at", timestamp_type(), false),
        utf8("role", false),
        utf8("content", false),
    ])
}

pub fn messages_type() -> DataType {
    DataType::List(Arc::new(Field::new(
        "item",
        DataType::Struct(message_fields()),
        true,
    )))
}

fn json_object(name: &str) -> Field {
    Field::new(name, DataType::Utf8, false).with_metadata(HashMap::from([
        (JSON_TEXT.to_owned(), "object".to_owned()),
        (DEFAULT_JSON.to_owned(), "{}".to_owned()),
    ]))
}

fn count_of(list: &str) -> Field {
    Field::new("count", DataType::Int64, false).with_metadata(HashMap::from([(
        COMPUTED_LEN_OF.to_owned(),
        list.to_owned(),
    )]))
}

fn cluster_fields() -> Vec<Field> {
    vec![
        utf8("id", false),
        utf8("name", false),
        utf8("description", false),
        utf8("slug", false),
        Field::new("chat_ids", string_list_type(), false),
        utf8("parent_id", true),
    ]
}

fn build_schema(kind: CheckpointKind) -> Schema {
    let fields = match kind {
        CheckpointKind::Summaries => vec![
            utf8("summary", false),
            utf8("request", true),
            utf8("topic", true),
            Field::new("languages", string_list_type(), true),
            utf8("task", true),
            Field::new("concerning_score", DataType::Int32, true),
            Field::new("user_frustration", DataType::Int32, true),
            Field::new("assistant_errors", string_list_type(), true),
            utf8("chat_id", false),
            json_object("metadata"),
            Field::new("embedding", float_list_type(), true),
        ],
        CheckpointKind::Clusters | CheckpointKind::MetaClusters => {
            let mut f = cluster_fields();
            f.push(count_of("chat_ids"));
            f
        }
        CheckpointKind::Dimensionality => {
            let mut f = cluster_fields();
            f.push(Field::new("x_coord", DataType::Float64, false));
            f.push(Field::new("y_coord", DataType::Float64, false));
            f.push(Field::new("level", DataType::Int32, false));
            f.push(count_of("chat_ids"));
            f
        }
        CheckpointKind::Conversations => vec![
            utf8("chat_id", false),
            Field::new("created_at", timestamp_type(), false),
            Field::new("messages", messages_type(), false),
            json_object("metadata"),
        ],
    };
    Schema::new(fields)
}

/// Does this field hold JSON text that JSONL embeds as a value?
pub fn is_json_text(field: &Field) -> bool {
    field.metadata().contains_key(JSON_TEXT)
}

/// The list column this field is the computed length of, if it is computed.
pub fn computed_len_of(field: &Field) -> Option<&str> {
    field.metadata().get(COMPUTED_LEN_OF).map(String::as_str)
}

/// Recognises a schema as one of the kinds: all of the kind's stored columns are present
/// (under any layout). Used for Parquet files and directories whose name says nothing.
pub fn kind_of_columns<'a>(columns: impl IntoIterator<Item = &'a str>) -> Option<CheckpointKind> {
    let cols: std::collections::HashSet<&str> = columns.into_iter().collect();
    let has = |k: CheckpointKind| {
        k.schema()
            .fields()
            .iter()
            .filter(|f| computed_len_of(f).is_none())
            .all(|f| cols.contains(f.name().as_str()))
    };
    // Most specific first: a projected cluster also has every cluster column.
    [
        CheckpointKind::Summaries,
        CheckpointKind::Conversations,
        CheckpointKind::Dimensionality,
        CheckpointKind::Clusters,
    ]
    .into_iter()
    .find(|k| has(*k))
}
