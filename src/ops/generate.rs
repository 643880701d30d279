//! Deterministic, realistic checkpoints of all five kinds, for `data/`, tests and
//! benchmarks. The same seed gives the same bytes on every machine (ChaCha8).
//!
//! Shapes follow Kura's output: summaries of ~700 bytes of text with 5–7 metadata keys and
//! embeddings whose numbers are float32 values (as models emit them), clusters of about
//! 50–100 conversations, a meta-cluster hierarchy over them, and 2-D projections.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{Duration, NaiveDate, NaiveDateTime};
use futures::StreamExt;
use rand::{Rng, SeedableRng, seq::IndexedRandom};
use rand_chacha::ChaCha8Rng;
use serde_json::json;

use crate::Result;
use crate::format::{Compression, FileFormat, Layout};
use crate::manager::CheckpointManager;
use crate::progress::{ProgressFn, ProgressUpdate};
use crate::sink::WriteStats;
use crate::storage::Root;
use crate::types::{
    Cluster, Conversation, ConversationSummary, Message, Metadata, ProjectedCluster, Role,
};

#[derive(Clone)]
/// What `ckpt generate` writes.
pub struct GenerateOptions {
    /// How many conversation summaries (the other kinds follow from them).
    pub summaries: usize,
    /// Embedding dimension; 0 writes no embeddings.
    pub dim: usize,
    /// The seed: the same seed writes the same checkpoints.
    pub seed: u64,
    /// The formats to write each checkpoint in.
    pub formats: Vec<FileFormat>,
    /// The Parquet codec.
    pub compression: Compression,
    /// The Parquet layout.
    pub layout: Layout,
    /// Also write raw conversations (as large as the summaries again).
    pub conversations: bool,
    /// Told the rows made so far of all the rows to make (`done`/`total` count rows).
    pub progress: Option<ProgressFn>,
}

impl std::fmt::Debug for GenerateOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GenerateOptions")
            .field("summaries", &self.summaries)
            .field("dim", &self.dim)
            .field("seed", &self.seed)
            .field("formats", &self.formats)
            .field("compression", &self.compression)
            .field("layout", &self.layout)
            .field("conversations", &self.conversations)
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            summaries: 1000,
            dim: 16,
            seed: 42,
            formats: vec![FileFormat::Jsonl],
            compression: Compression::default(),
            layout: Layout::default(),
            conversations: true,
            progress: None,
        }
    }
}

const TOPICS: &[&str] = &[
    "python debugging",
    "data analysis",
    "creative writing",
    "travel planning",
    "cooking",
    "mathematics",
    "career advice",
    "health and fitness",
    "web development",
    "history",
    "physics homework",
    "poetry",
    "legal questions",
    "personal finance",
    "machine learning",
    "language learning",
];
const LANGUAGES: &[&str] = &[
    "english",
    "python",
    "spanish",
    "javascript",
    "french",
    "sql",
    "german",
    "rust",
];
const MODELS: &[&str] = &[
    "gpt-4",
    "claude-v1",
    "vicuna-13b-v1.2",
    "alpaca-13b",
    "llama-13b",
    "gpt-3.5-turbo",
];
const VERBS: &[&str] = &[
    "asked for help with",
    "wanted an explanation of",
    "requested a rewrite of",
    "sought advice on",
    "needed a step-by-step guide to",
    "asked to compare approaches to",
];
const OBJECTS: &[&str] = &[
    "a recursive function",
    "a quarterly sales report",
    "a short story opening",
    "a week-long itinerary",
    "a vegetarian recipe",
    "an integral with trigonometric terms",
    "a cover letter",
    "a training plan",
    "a REST API design",
    "the causes of a historical war",
    "Newton's second law",
    "a sonnet about the sea",
    "a rental contract clause",
    "a household budget",
    "gradient descent",
    "irregular verb conjugation",
];
const FOLLOWUPS: &[&str] = &[
    "then asked for a shorter version",
    "then requested more detail on one step",
    "then asked for examples",
    "then pointed out a mistake and asked for a correction",
    "then asked how to test the result",
    "then wanted the answer formatted as a table",
];
const ERRORS: &[&str] = &[
    "The assistant initially misread the constraint.",
    "An example contained an off-by-one error.",
    "The assistant repeated part of the previous answer.",
    "A formula was stated without units.",
];

fn sentence(rng: &mut ChaCha8Rng, topic: &str) -> String {
    format!(
        "The user {} {} in the area of {}, {}. The assistant provided a structured answer covering the main points, explained its reasoning, and {}.",
        VERBS.choose(rng).expect("non-empty"),
        OBJECTS.choose(rng).expect("non-empty"),
        topic,
        FOLLOWUPS.choose(rng).expect("non-empty"),
        [
            "offered further help",
            "summarised the key steps",
            "suggested next steps",
            "checked the result"
        ]
        .choose(rng)
        .expect("non-empty"),
    )
}

fn chat_id(i: usize, rng: &mut ChaCha8Rng) -> String {
    format!(
        "{}_{}_{}",
        81 + i % 80,
        MODELS.choose(rng).expect("non-empty"),
        i
    )
}

fn base_time() -> NaiveDateTime {
    NaiveDate::from_ymd_opt(2025, 6, 12)
        .and_then(|d| d.and_hms_micro_opt(11, 4, 56, 965_428))
        .expect("valid date")
}

/// Summary `i` of a generated set (independent per index, so it can be streamed).
pub fn summary(i: usize, dim: usize, seed: u64) -> ConversationSummary {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let topic = TOPICS[i % TOPICS.len()];
    let id = chat_id(i, &mut rng);
    let summary = format!(
        "{} {}",
        sentence(&mut rng, topic),
        sentence(&mut rng, topic)
    );
    let request = format!(
        "The user's overall request for the assistant is to help with {} and refine the answer.",
        topic
    );
    let task = format!(
        "The task is to {} for a question about {}.",
        ["explain", "write", "analyse", "plan"][i % 4],
        topic
    );
    let nlang = rng.random_range(0..3);
    let mut languages: Vec<String> = vec!["english".into()];
    for _ in 0..nlang {
        let l = LANGUAGES.choose(&mut rng).expect("non-empty").to_string();
        if !languages.contains(&l) {
            languages.push(l);
        }
    }
    let errors: Vec<String> = (0..rng.random_range(0..3))
        .map(|_| ERRORS.choose(&mut rng).expect("non-empty").to_string())
        .collect();
    let mut metadata = Metadata::new();
    metadata.insert(
        "conversation_turns".into(),
        json!(2 * rng.random_range(1..5)),
    );
    metadata.insert(
        "model".into(),
        json!(MODELS.choose(&mut rng).expect("non-empty")),
    );
    metadata.insert("winner".into(), json!(rng.random_bool(0.5)));
    metadata.insert("question_id".into(), json!(81 + i % 80));
    metadata.insert(
        "opponent_model".into(),
        json!(MODELS.choose(&mut rng).expect("non-empty")),
    );
    if rng.random_bool(0.6) {
        metadata.insert("temperature".into(), json!([0.0, 0.2, 0.7, 1.0][i % 4]));
    }
    if rng.random_bool(0.4) {
        metadata.insert(
            "tags".into(),
            json!([topic.split(' ').next().unwrap_or(topic), "mt-bench"]),
        );
    }
    let embedding = (dim > 0).then(|| {
        // float32 values, as embedding models emit them, stored as f64.
        (0..dim)
            .map(|_| (rng.random_range(-1.0f32..1.0f32)) as f64)
            .collect::<Vec<f64>>()
    });
    ConversationSummary {
        summary,
        request: Some(request),
        topic: (!i.is_multiple_of(7)).then(|| topic.to_owned()),
        // Kura writes `languages: null` for some rows and `[]` for others; keep both.
        languages: match i % 23 {
            0 => None,
            11 => Some(vec![]),
            _ => Some(languages),
        },
        task: Some(task),
        concerning_score: Some(
            1 + (rng.random_range(0..100u32) / 70) as i32 + i.is_multiple_of(97) as i32 * 3,
        ),
        user_frustration: Some(rng.random_range(1..=5)),
        assistant_errors: if i.is_multiple_of(19) {
            None
        } else {
            Some(errors)
        },
        chat_id: id,
        metadata,
        embedding,
    }
}

/// Conversation `i`, the raw chat behind summary `i`.
pub fn conversation(i: usize, seed: u64) -> Conversation {
    let mut rng =
        ChaCha8Rng::seed_from_u64(seed ^ 0xC0FFEE ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let id = {
        let s = summary(i, 0, seed);
        s.chat_id
    };
    let start = base_time() + Duration::seconds(i as i64 * 37);
    let turns = 2 * rng.random_range(1..4);
    let topic = TOPICS[i % TOPICS.len()];
    let messages = (0..turns)
        .map(|t| {
            let role = if t % 2 == 0 {
                Role::User
            } else {
                Role::Assistant
            };
            let content = match role {
                Role::User => format!(
                    "Could you help me with {} ({})? {}",
                    topic,
                    OBJECTS.choose(&mut rng).expect("non-empty"),
                    FOLLOWUPS.choose(&mut rng).expect("non-empty")
                ),
                Role::Assistant => format!(
                    "Certainly. {} {}",
                    sentence(&mut rng, topic),
                    sentence(&mut rng, topic)
                ),
            };
            Message {
                created_at: start + Duration::microseconds(t as i64 * 1_000_057),
                role,
                content,
            }
        })
        .collect();
    let mut metadata = Metadata::new();
    metadata.insert("model".into(), json!(MODELS[i % MODELS.len()]));
    metadata.insert("winner".into(), json!(i.is_multiple_of(2)));
    metadata.insert("question_id".into(), json!(81 + i % 80));
    Conversation {
        chat_id: id,
        created_at: start,
        messages,
        metadata,
    }
}

fn hex_id(rng: &mut ChaCha8Rng) -> String {
    format!("{:016x}{:016x}", rng.random::<u64>(), rng.random::<u64>())
}

/// Base clusters over the summaries' chat ids (one per topic), then a meta-cluster
/// hierarchy: parents grouping 2–3 clusters, and a root level above those.
pub fn clusters(summaries: usize, seed: u64) -> (Vec<Cluster>, Vec<Cluster>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xC1u64);
    let n_topics = TOPICS.len().min(summaries.max(1));
    let mut base: Vec<Cluster> = (0..n_topics)
        .map(|t| Cluster {
            id: hex_id(&mut rng),
            name: format!("Help with {}", TOPICS[t]),
            description: format!("Users asked the assistant for help with {}; the assistant explained, rewrote and checked answers on request.", TOPICS[t]),
            slug: TOPICS[t].replace(' ', "_"),
            chat_ids: Vec::new(),
            parent_id: None,
        })
        .collect();
    for i in 0..summaries {
        let id = summary(i, 0, seed).chat_id;
        base[i % n_topics].chat_ids.push(id);
    }
    // Level 1: parents of 3 base clusters each; level 2: one root over the parents.
    let mut meta: Vec<Cluster> = Vec::new();
    let mut parents: Vec<Cluster> = Vec::new();
    for (g, group) in base.chunks_mut(3).enumerate() {
        let parent = Cluster {
            id: hex_id(&mut rng),
            name: format!("Assistance group {}", g + 1),
            description: format!(
                "Conversations about {}.",
                group
                    .iter()
                    .map(|c| c.slug.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            slug: format!("group_{}", g + 1),
            chat_ids: group.iter().flat_map(|c| c.chat_ids.clone()).collect(),
            parent_id: None,
        };
        for c in group.iter_mut() {
            c.parent_id = Some(parent.id.clone());
        }
        parents.push(parent);
    }
    let root = Cluster {
        id: hex_id(&mut rng),
        name: "All assistance requests".into(),
        description: "Every conversation, grouped by the kind of help asked for.".into(),
        slug: "all_requests".into(),
        chat_ids: parents.iter().flat_map(|c| c.chat_ids.clone()).collect(),
        parent_id: None,
    };
    for p in parents.iter_mut() {
        p.parent_id = Some(root.id.clone());
    }
    meta.extend(base.iter().cloned());
    meta.extend(parents);
    meta.push(root);
    let base_without_parents = base
        .into_iter()
        .map(|c| Cluster {
            parent_id: None,
            ..c
        })
        .collect();
    (base_without_parents, meta)
}

/// Meta clusters placed on a 2-D map; level 0 is the root level, as Kura numbers it.
pub fn projections(meta: &[Cluster], seed: u64) -> Vec<ProjectedCluster> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xD1u64);
    let depth = |c: &Cluster| {
        let mut d = 0;
        let mut cur = c.parent_id.clone();
        while let Some(p) = cur {
            d += 1;
            cur = meta
                .iter()
                .find(|m| m.id == p)
                .and_then(|m| m.parent_id.clone());
        }
        d
    };
    meta.iter()
        .map(|c| ProjectedCluster {
            cluster: c.clone(),
            x_coord: rng.random_range(-5.0..5.0),
            y_coord: rng.random_range(-5.0..5.0),
            level: depth(c),
        })
        .collect()
}

/// What `generate` wrote: (file name, stats).
pub type Generated = Vec<(String, WriteStats)>;

/// Writes all five kinds into `root` in each requested format. Summaries and
/// conversations are streamed, so memory stays flat for any `summaries`.
pub async fn generate(root: &Root, opts: &GenerateOptions) -> Result<Generated> {
    let mut out = Vec::new();
    let (base, meta) = clusters(opts.summaries, opts.seed);
    let projected = projections(&meta, opts.seed);
    let per_format = opts.summaries * (1 + opts.conversations as usize)
        + base.len()
        + meta.len()
        + projected.len();
    let report = Report {
        progress: opts.progress.clone(),
        total: (per_format * opts.formats.len()) as u64,
        done: Arc::new(AtomicU64::new(0)),
    };
    for &format in &opts.formats {
        let m = CheckpointManager::new(root.clone(), format)?
            .compression(opts.compression)
            .layout(opts.layout);
        let (dim, seed) = (opts.dim, opts.seed);
        let made = report.clone();
        let stats = m
            .save_stream(
                "summaries",
                futures::stream::iter(0..opts.summaries).map(move |i| {
                    made.row("summaries");
                    summary(i, dim, seed)
                }),
            )
            .await?;
        out.push((m.file_name("summaries")?, stats));
        if opts.conversations {
            let made = report.clone();
            let stats = m
                .save_stream(
                    "conversations",
                    futures::stream::iter(0..opts.summaries).map(move |i| {
                        made.row("conversations");
                        conversation(i, seed)
                    }),
                )
                .await?;
            out.push((m.file_name("conversations")?, stats));
        }
        out.push((m.file_name("clusters")?, m.save("clusters", &base).await?));
        report.rows("clusters", base.len());
        out.push((
            m.file_name("meta_clusters")?,
            m.save("meta_clusters", &meta).await?,
        ));
        report.rows("meta_clusters", meta.len());
        out.push((
            m.file_name("dimensionality")?,
            m.save("dimensionality", &projected).await?,
        ));
        report.rows("dimensionality", projected.len());
    }
    Ok(out)
}

/// Rows made so far, for `GenerateOptions::progress`.
#[derive(Clone)]
struct Report {
    progress: Option<ProgressFn>,
    total: u64,
    done: Arc<AtomicU64>,
}

impl Report {
    fn rows(&self, checkpoint: &str, n: usize) {
        let Some(p) = &self.progress else { return };
        let done = self.done.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
        p(&ProgressUpdate {
            checkpoint,
            rows: done,
            done,
            total: self.total,
        });
    }

    /// One streamed row; the callback is called every 256 rows, not for each.
    fn row(&self, checkpoint: &str) {
        let Some(p) = &self.progress else { return };
        let done = self.done.fetch_add(1, Ordering::Relaxed) + 1;
        if done.is_multiple_of(256) {
            p(&ProgressUpdate {
                checkpoint,
                rows: done,
                done,
                total: self.total,
            });
        }
    }
}
