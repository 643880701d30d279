//! Kura's models as Rust values, and their conversion to and from record batches of the
//! kind's schema ([`CheckpointKind::schema`]). This conversion is the only thing the typed
//! managers add on top of the tables and sinks that SQL uses.
//!
//! The conversion is written out per kind rather than derived (serde_arrow) because
//! `metadata` is a free-form JSON object in Rust but JSON text in Arrow, and `count` is
//! computed: both are exactly the places where a derive would need per-field overrides.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Float64Builder, Int32Builder, ListBuilder, RecordBatch,
    StringBuilder, StructBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{Float64Type, Int32Type, TimestampMicrosecondType};
use chrono::NaiveDateTime;
use serde::{Deserialize, Serialize};

use crate::conform::conform;
use crate::kind::{CheckpointKind, message_fields};
use crate::{Error, Result};

/// Kura's free-form metadata: string keys, values str, int, float, bool or lists of those.
pub type Metadata = serde_json::Map<String, serde_json::Value>;

/// One conversation's summary (Kura's `ConversationSummary`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ConversationSummary {
    /// The model's summary of the conversation.
    pub summary: String,
    /// What the user asked for.
    #[serde(default)]
    pub request: Option<String>,
    /// The conversation's topic.
    #[serde(default)]
    pub topic: Option<String>,
    /// Human and programming languages in it.
    #[serde(default)]
    pub languages: Option<Vec<String>>,
    /// The task the assistant was given.
    #[serde(default)]
    pub task: Option<String>,
    /// 1–5.
    #[serde(default)]
    pub concerning_score: Option<i32>,
    /// 1–5.
    #[serde(default)]
    pub user_frustration: Option<i32>,
    /// Mistakes the assistant made.
    #[serde(default)]
    pub assistant_errors: Option<Vec<String>>,
    /// The conversation's id.
    pub chat_id: String,
    /// Free-form metadata.
    #[serde(default)]
    pub metadata: Metadata,
    /// The summary's embedding, when computed.
    #[serde(default)]
    pub embedding: Option<Vec<f64>>,
}

/// A group of conversations (Kura's `Cluster`); meta clusters are clusters with parents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Cluster {
    /// The cluster's id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its description.
    pub description: String,
    /// A short name.
    pub slug: String,
    /// The conversations in it.
    pub chat_ids: Vec<String>,
    /// The parent cluster, for a meta cluster's children.
    #[serde(default)]
    pub parent_id: Option<String>,
}

impl Cluster {
    /// What Kura writes as the computed `count` field.
    pub fn count(&self) -> usize {
        self.chat_ids.len()
    }
}

/// A cluster placed on the 2-D map (Kura's `ProjectedCluster`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ProjectedCluster {
    /// The cluster placed.
    #[serde(flatten)]
    pub cluster: Cluster,
    /// Its x coordinate on the map.
    pub x_coord: f64,
    /// Its y coordinate on the map.
    pub y_coord: f64,
    /// Its level in the hierarchy (0 for the top).
    pub level: i32,
}

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The user.
    User,
    /// The assistant.
    Assistant,
}

impl Role {
    /// The role as Kura writes it: `user` or `assistant`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// When it was written.
    pub created_at: NaiveDateTime,
    /// Who wrote it.
    pub role: Role,
    /// Its text.
    pub content: String,
}

/// A raw chat (Kura's `Conversation`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Conversation {
    /// The conversation's id.
    pub chat_id: String,
    /// When it was written.
    pub created_at: NaiveDateTime,
    /// Its messages, in order.
    pub messages: Vec<Message>,
    /// Free-form metadata.
    #[serde(default)]
    pub metadata: Metadata,
}

/// A Rust type whose values are the rows of a checkpoint kind.
pub trait Checkpoint: Sized + Send + Sync + 'static {
    /// The kind used when the name does not say (a type may serve several kinds: clusters
    /// and meta clusters are both `Cluster`).
    const KIND: CheckpointKind;

    /// The rows as one record batch of the kind's schema.
    fn to_batch(items: &[Self]) -> Result<RecordBatch>;

    /// Rows from a batch of the kind's schema (columns are matched by name and cast).
    fn from_batch(batch: &RecordBatch) -> Result<Vec<Self>>;
}

fn finish(kind: CheckpointKind, columns: Vec<ArrayRef>) -> Result<RecordBatch> {
    Ok(RecordBatch::try_new(kind.schema(), columns)?)
}

fn metadata_text(m: &Metadata) -> String {
    serde_json::to_string(m).expect("a JSON map always serialises")
}

fn parse_metadata(text: &str, row: usize) -> Result<Metadata> {
    serde_json::from_str(text)
        .map_err(|e| Error::data(format!("row {row}"), None, Some("metadata"), e.to_string()))
}

struct Columns<'a> {
    batch: &'a RecordBatch,
}

impl<'a> Columns<'a> {
    fn col(&self, name: &str) -> &'a ArrayRef {
        // `conform` guarantees every column of the kind's schema is present.
        self.batch
            .column_by_name(name)
            .expect("conformed batch has every column")
    }
    fn str(&self, name: &str) -> impl Fn(usize) -> Option<&'a str> + 'a {
        let a = self.col(name).as_string::<i32>();
        move |i| a.is_valid(i).then(|| a.value(i))
    }
    fn string(&self, name: &str) -> impl Fn(usize) -> String + 'a {
        let a = self.col(name).as_string::<i32>();
        move |i| a.value(i).to_owned()
    }
    fn i32(&self, name: &str) -> impl Fn(usize) -> Option<i32> + 'a {
        let a = self.col(name).as_primitive::<Int32Type>();
        move |i| a.is_valid(i).then(|| a.value(i))
    }
    fn f64(&self, name: &str) -> impl Fn(usize) -> f64 + 'a {
        let a = self.col(name).as_primitive::<Float64Type>();
        move |i| a.value(i)
    }
    fn str_list(&self, name: &str) -> impl Fn(usize) -> Option<Vec<String>> + 'a {
        let a = self.col(name).as_list::<i32>();
        move |i| {
            a.is_valid(i).then(|| {
                let v = a.value(i);
                let s = v.as_string::<i32>();
                (0..s.len()).map(|j| s.value(j).to_owned()).collect()
            })
        }
    }
    fn f64_list(&self, name: &str) -> impl Fn(usize) -> Option<Vec<f64>> + 'a {
        let a = self.col(name).as_list::<i32>();
        move |i| {
            a.is_valid(i).then(|| {
                let v = a.value(i);
                v.as_primitive::<Float64Type>().values().to_vec()
            })
        }
    }
}

fn str_list_builder() -> ListBuilder<StringBuilder> {
    ListBuilder::new(StringBuilder::new())
}

fn append_str_list(b: &mut ListBuilder<StringBuilder>, v: Option<&Vec<String>>) {
    match v {
        Some(items) => {
            for s in items {
                b.values().append_value(s);
            }
            b.append(true);
        }
        None => b.append(false),
    }
}

fn count_column(chat_ids: &ArrayRef) -> ArrayRef {
    let list = chat_ids.as_list::<i32>();
    let counts: Vec<i64> = list
        .offsets()
        .windows(2)
        .map(|w| (w[1] - w[0]) as i64)
        .collect();
    Arc::new(arrow::array::Int64Array::from(counts))
}

/// Kura's scores are `ge=1, le=5`: a summary outside that range is refused when saved,
/// as Kura would refuse to load it, rather than written into a checkpoint no one can read.
fn check_score(s: &ConversationSummary, field: &str, score: Option<i32>) -> Result<()> {
    match score {
        Some(v) if !(1..=5).contains(&v) => Err(Error::data(
            format!("summary of chat {:?}", s.chat_id),
            None,
            Some(field),
            format!(
                "{v} is out of Kura's range: input should be between 1 and 5 (None for no score)"
            ),
        )),
        _ => Ok(()),
    }
}

impl Checkpoint for ConversationSummary {
    const KIND: CheckpointKind = CheckpointKind::Summaries;

    fn to_batch(items: &[Self]) -> Result<RecordBatch> {
        let mut summary = StringBuilder::new();
        let mut request = StringBuilder::new();
        let mut topic = StringBuilder::new();
        let mut languages = str_list_builder();
        let mut task = StringBuilder::new();
        let mut concerning = Int32Builder::new();
        let mut frustration = Int32Builder::new();
        let mut errors = str_list_builder();
        let mut chat_id = StringBuilder::new();
        let mut metadata = StringBuilder::new();
        let mut embedding = ListBuilder::new(Float64Builder::new());
        for s in items {
            check_score(s, "concerning_score", s.concerning_score)?;
            check_score(s, "user_frustration", s.user_frustration)?;
            summary.append_value(&s.summary);
            request.append_option(s.request.as_deref());
            topic.append_option(s.topic.as_deref());
            append_str_list(&mut languages, s.languages.as_ref());
            task.append_option(s.task.as_deref());
            concerning.append_option(s.concerning_score);
            frustration.append_option(s.user_frustration);
            append_str_list(&mut errors, s.assistant_errors.as_ref());
            chat_id.append_value(&s.chat_id);
            metadata.append_value(metadata_text(&s.metadata));
            match &s.embedding {
                Some(e) => {
                    embedding.values().append_slice(e);
                    embedding.append(true);
                }
                None => embedding.append(false),
            }
        }
        finish(
            Self::KIND,
            vec![
                Arc::new(summary.finish()),
                Arc::new(request.finish()),
                Arc::new(topic.finish()),
                Arc::new(languages.finish()),
                Arc::new(task.finish()),
                Arc::new(concerning.finish()),
                Arc::new(frustration.finish()),
                Arc::new(errors.finish()),
                Arc::new(chat_id.finish()),
                Arc::new(metadata.finish()),
                Arc::new(embedding.finish()),
            ],
        )
    }

    fn from_batch(batch: &RecordBatch) -> Result<Vec<Self>> {
        let batch = conform(batch, &Self::KIND.schema())?;
        let c = Columns { batch: &batch };
        let (summary, request, topic, languages, task) = (
            c.string("summary"),
            c.str("request"),
            c.str("topic"),
            c.str_list("languages"),
            c.str("task"),
        );
        let (concerning, frustration, errors) = (
            c.i32("concerning_score"),
            c.i32("user_frustration"),
            c.str_list("assistant_errors"),
        );
        let (chat_id, metadata, embedding) = (
            c.string("chat_id"),
            c.string("metadata"),
            c.f64_list("embedding"),
        );
        (0..batch.num_rows())
            .map(|i| {
                Ok(ConversationSummary {
                    summary: summary(i),
                    request: request(i).map(str::to_owned),
                    topic: topic(i).map(str::to_owned),
                    languages: languages(i),
                    task: task(i).map(str::to_owned),
                    concerning_score: concerning(i),
                    user_frustration: frustration(i),
                    assistant_errors: errors(i),
                    chat_id: chat_id(i),
                    metadata: parse_metadata(&metadata(i), i)?,
                    embedding: embedding(i),
                })
            })
            .collect()
    }
}

fn cluster_columns<'a>(clusters: impl Iterator<Item = &'a Cluster>) -> Vec<ArrayRef> {
    let mut id = StringBuilder::new();
    let mut name = StringBuilder::new();
    let mut description = StringBuilder::new();
    let mut slug = StringBuilder::new();
    let mut chat_ids = str_list_builder();
    let mut parent_id = StringBuilder::new();
    for c in clusters {
        id.append_value(&c.id);
        name.append_value(&c.name);
        description.append_value(&c.description);
        slug.append_value(&c.slug);
        append_str_list(&mut chat_ids, Some(&c.chat_ids));
        parent_id.append_option(c.parent_id.as_deref());
    }
    vec![
        Arc::new(id.finish()),
        Arc::new(name.finish()),
        Arc::new(description.finish()),
        Arc::new(slug.finish()),
        Arc::new(chat_ids.finish()),
        Arc::new(parent_id.finish()),
    ]
}

fn clusters_from(batch: &RecordBatch) -> Vec<Cluster> {
    let c = Columns { batch };
    let (id, name, description, slug, chat_ids, parent_id) = (
        c.string("id"),
        c.string("name"),
        c.string("description"),
        c.string("slug"),
        c.str_list("chat_ids"),
        c.str("parent_id"),
    );
    (0..batch.num_rows())
        .map(|i| Cluster {
            id: id(i),
            name: name(i),
            description: description(i),
            slug: slug(i),
            chat_ids: chat_ids(i).unwrap_or_default(),
            parent_id: parent_id(i).map(str::to_owned),
        })
        .collect()
}

impl Checkpoint for Cluster {
    const KIND: CheckpointKind = CheckpointKind::Clusters;

    fn to_batch(items: &[Self]) -> Result<RecordBatch> {
        let mut cols = cluster_columns(items.iter());
        cols.push(count_column(&cols[4]));
        finish(Self::KIND, cols)
    }

    fn from_batch(batch: &RecordBatch) -> Result<Vec<Self>> {
        let batch = conform(batch, &Self::KIND.schema())?;
        Ok(clusters_from(&batch))
    }
}

impl Checkpoint for ProjectedCluster {
    const KIND: CheckpointKind = CheckpointKind::Dimensionality;

    fn to_batch(items: &[Self]) -> Result<RecordBatch> {
        let mut cols = cluster_columns(items.iter().map(|p| &p.cluster));
        let chat_ids = cols[4].clone();
        let mut x = Float64Builder::new();
        let mut y = Float64Builder::new();
        let mut level = Int32Builder::new();
        for p in items {
            x.append_value(p.x_coord);
            y.append_value(p.y_coord);
            level.append_value(p.level);
        }
        cols.push(Arc::new(x.finish()));
        cols.push(Arc::new(y.finish()));
        cols.push(Arc::new(level.finish()));
        cols.push(count_column(&chat_ids));
        finish(Self::KIND, cols)
    }

    fn from_batch(batch: &RecordBatch) -> Result<Vec<Self>> {
        let batch = conform(batch, &Self::KIND.schema())?;
        let c = Columns { batch: &batch };
        let (x, y, level) = (c.f64("x_coord"), c.f64("y_coord"), c.i32("level"));
        Ok(clusters_from(&batch)
            .into_iter()
            .enumerate()
            .map(|(i, cluster)| ProjectedCluster {
                cluster,
                x_coord: x(i),
                y_coord: y(i),
                level: level(i).unwrap_or_default(),
            })
            .collect())
    }
}

fn micros(t: &NaiveDateTime) -> i64 {
    t.and_utc().timestamp_micros()
}

fn from_micros(us: i64, row: usize, field: &str) -> Result<NaiveDateTime> {
    chrono::DateTime::from_timestamp_micros(us)
        .map(|t| t.naive_utc())
        .ok_or_else(|| {
            Error::data(
                format!("row {row}"),
                None,
                Some(field),
                "timestamp out of range",
            )
        })
}

/// A conversation's metadata as Kura's `Conversation.metadata` holds it (values str, int,
/// float, bool or lists of them), or an error naming the value it cannot hold: saved as
/// it is, Kura could not load the checkpoint.
fn conversation_metadata_text(c: &Conversation) -> Result<String> {
    let text = metadata_text(&c.metadata);
    let checked = crate::jsonl::value::parse(&text)
        .map_err(|e| e.message)
        .and_then(|v| crate::jsonl::lax::conversation_metadata(&v));
    match checked {
        Ok(v) => {
            let mut out = String::with_capacity(text.len());
            v.write(&mut out);
            Ok(out)
        }
        Err(message) => Err(Error::data(
            format!("conversation {:?}", c.chat_id),
            None,
            Some("metadata"),
            message,
        )),
    }
}

impl Checkpoint for Conversation {
    const KIND: CheckpointKind = CheckpointKind::Conversations;

    fn to_batch(items: &[Self]) -> Result<RecordBatch> {
        let mut chat_id = StringBuilder::new();
        let mut created = TimestampMicrosecondBuilder::new();
        let struct_builder = StructBuilder::from_fields(message_fields(), 0);
        let mut messages = ListBuilder::new(struct_builder);
        let mut metadata = StringBuilder::new();
        for c in items {
            chat_id.append_value(&c.chat_id);
            created.append_value(micros(&c.created_at));
            let sb = messages.values();
            for m in &c.messages {
                sb.field_builder::<TimestampMicrosecondBuilder>(0)
                    .expect("created_at")
                    .append_value(micros(&m.created_at));
                sb.field_builder::<StringBuilder>(1)
                    .expect("role")
                    .append_value(m.role.as_str());
                sb.field_builder::<StringBuilder>(2)
                    .expect("content")
                    .append_value(&m.content);
                // The Rust types hold naive datetimes.
                sb.field_builder::<arrow::array::Int32Builder>(3)
                    .expect("created_at_utc_offset")
                    .append_null();
                sb.append(true);
            }
            messages.append(true);
            metadata.append_value(conversation_metadata_text(c)?);
        }
        // The list's item field must match the schema's exactly (name, nullability).
        let messages = messages.finish();
        let schema = Self::KIND.schema();
        let messages =
            arrow::compute::cast(&messages, schema.field_with_name("messages")?.data_type())?;
        finish(
            Self::KIND,
            vec![
                Arc::new(chat_id.finish()),
                Arc::new(created.finish()),
                messages,
                Arc::new(metadata.finish()),
                arrow::array::new_null_array(&arrow::datatypes::DataType::Int32, items.len()),
            ],
        )
    }

    fn from_batch(batch: &RecordBatch) -> Result<Vec<Self>> {
        let batch = conform(batch, &Self::KIND.schema())?;
        let c = Columns { batch: &batch };
        let chat_id = c.string("chat_id");
        let created = batch
            .column_by_name("created_at")
            .expect("conformed")
            .as_primitive::<TimestampMicrosecondType>();
        let messages = batch
            .column_by_name("messages")
            .expect("conformed")
            .as_list::<i32>();
        let metadata = c.string("metadata");
        (0..batch.num_rows())
            .map(|i| {
                let list = messages.value(i);
                let s = list.as_struct();
                let at = s.column(0).as_primitive::<TimestampMicrosecondType>();
                let role = s.column(1).as_string::<i32>();
                let content = s.column(2).as_string::<i32>();
                let msgs = (0..s.len())
                    .map(|j| {
                        let r = match role.value(j) {
                            "user" => Role::User,
                            "assistant" => Role::Assistant,
                            other => {
                                return Err(Error::data(
                                    format!("row {i}"),
                                    None,
                                    Some("messages.role"),
                                    format!("expected \"user\" or \"assistant\", found {other:?}"),
                                ));
                            }
                        };
                        Ok(Message {
                            created_at: from_micros(at.value(j), i, "messages.created_at")?,
                            role: r,
                            content: content.value(j).to_owned(),
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                Ok(Conversation {
                    chat_id: chat_id(i),
                    created_at: from_micros(created.value(i), i, "created_at")?,
                    messages: msgs,
                    metadata: parse_metadata(&metadata(i), i)?,
                })
            })
            .collect()
    }
}
