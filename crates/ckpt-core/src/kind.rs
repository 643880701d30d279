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
//! - Kura's validation rules that the Arrow type cannot say: [`RANGE`] (`ge=1, le=5`),
//!   [`REQUIRED`] (a key that must be present although its value may be null),
//!   [`DEFAULT_FACTORY`] (`Cluster.id`), [`METADATA_DICT`] (the value types of
//!   `Conversation.metadata`).
//! - [`UTC_OFFSET_OF`]: the column holds the UTC offset of a datetime column. Kura's
//!   datetimes are aware (with an offset) or naive, row by row; the datetime column holds
//!   the UTC instant of an aware one and the wall-clock time of a naive one, and this
//!   column the offset in seconds (null: naive), so each is written back as it was read.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};

/// Field metadata key: the Utf8 column holds a JSON value as text.
pub const JSON_TEXT: &str = "ckpt.json";
/// Field metadata key: the column is the length of the named list column.
pub const COMPUTED_LEN_OF: &str = "ckpt.len_of";
/// Field metadata key: the JSON text used when the field is absent from a JSONL line.
pub const DEFAULT_JSON: &str = "ckpt.default";
/// Field metadata key: `GE..=LE`, the range Kura's model allows an integer field.
pub const RANGE: &str = "ckpt.range";
/// Field metadata key: the key is required although its value may be null.
pub const REQUIRED: &str = "ckpt.required";
/// Field metadata key: how an absent value is made (`uuid4_hex`, Kura's `uuid4().hex`).
pub const DEFAULT_FACTORY: &str = "ckpt.default_factory";
/// The [`JSON_TEXT`] value of Kura's `Conversation.metadata`: an object whose values are
/// str, int, float, bool, or lists of str, int or float (any object otherwise).
pub const METADATA_DICT: &str = "metadata_dict";
/// Field metadata key: the Int32 column is the UTC offset (seconds, null when naive) of
/// the named datetime column.
pub const UTC_OFFSET_OF: &str = "ckpt.utc_offset_of";

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
    /// Every kind, in pipeline order.
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

    /// The column that identifies a row: `chat_id` for summaries and conversations, `id`
    /// for the cluster kinds. Appended checkpoints resolve duplicates and find what is
    /// missing by it.
    pub fn id_column(self) -> &'static str {
        match self {
            CheckpointKind::Summaries | CheckpointKind::Conversations => "chat_id",
            CheckpointKind::Clusters
            | CheckpointKind::MetaClusters
            | CheckpointKind::Dimensionality => "id",
        }
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

/// A list of float64 (`embedding`).
pub fn float_list_type() -> DataType {
    DataType::List(Arc::new(Field::new("item", DataType::Float64, true)))
}

/// Microseconds without a zone: the UTC instant of an aware datetime or the wall-clock
/// time of a naive one; the column's [`UTC_OFFSET_OF`] companion says which.
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, None)
}

/// The UTC offset column of the datetime column `of`: `<of>_utc_offset`.
pub(crate) fn utc_offset_field(of: &str) -> Field {
    Field::new(format!("{of}_utc_offset"), DataType::Int32, true)
        .with_metadata(HashMap::from([(UTC_OFFSET_OF.to_owned(), of.to_owned())]))
}

/// The datetime column this column is the UTC offset of, if it is one.
pub fn utc_offset_of(field: &Field) -> Option<&str> {
    field.metadata().get(UTC_OFFSET_OF).map(String::as_str)
}

/// The fields of one message: `created_at`, `role`, `content`, `created_at_utc_offset`.
pub fn message_fields() -> Fields {
    Fields::from(vec![
        Field::new("created_at", timestamp_type(), false),
        utf8("role", false),
        utf8("content", false),
        utc_offset_field("created_at"),
    ])
}

/// A conversation's `messages` column: a list of message structs.
pub fn messages_type() -> DataType {
    DataType::List(Arc::new(Field::new(
        "item",
        DataType::Struct(message_fields()),
        true,
    )))
}

/// Kura's `metadata`; `kind` is the [`JSON_TEXT`] value (`object` or [`METADATA_DICT`]).
/// Missing or null reads as `{}`, ckpt's one leniency (Kura requires the key).
fn json_object(name: &str, kind: &str) -> Field {
    Field::new(name, DataType::Utf8, false).with_metadata(HashMap::from([
        (JSON_TEXT.to_owned(), kind.to_owned()),
        (DEFAULT_JSON.to_owned(), "{}".to_owned()),
    ]))
}

/// An optional integer score, `ge=1, le=5`.
fn score(name: &str) -> Field {
    Field::new(name, DataType::Int32, true)
        .with_metadata(HashMap::from([(RANGE.to_owned(), "1..=5".to_owned())]))
}

fn count_of(list: &str) -> Field {
    Field::new("count", DataType::Int64, false).with_metadata(HashMap::from([(
        COMPUTED_LEN_OF.to_owned(),
        list.to_owned(),
    )]))
}

fn cluster_fields() -> Vec<Field> {
    vec![
        utf8("id", false).with_metadata(HashMap::from([(
            DEFAULT_FACTORY.to_owned(),
            "uuid4_hex".to_owned(),
        )])),
        utf8("name", false),
        utf8("description", false),
        utf8("slug", false),
        Field::new("chat_ids", string_list_type(), false),
        // `Union[str, None]` without a default: the key is required, null allowed.
        utf8("parent_id", true)
            .with_metadata(HashMap::from([(REQUIRED.to_owned(), "true".to_owned())])),
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
            score("concerning_score"),
            score("user_frustration"),
            Field::new("assistant_errors", string_list_type(), true),
            utf8("chat_id", false),
            json_object("metadata", "object"),
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
            json_object("metadata", METADATA_DICT),
            utc_offset_field("created_at"),
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
            .filter(|f| computed_len_of(f).is_none() && utc_offset_of(f).is_none())
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
