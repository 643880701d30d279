//! Is a pipeline run consistent? `ckpt check`: the checkpoints of a root checked against
//! each other and against Kura's guarantees, with a typed report of what is wrong.
//!
//! What is checked, per root (each rule runs when the checkpoints it needs are stored;
//! the others are listed as skipped, with the reason):
//!
//! - **Every checkpoint of a known kind** (by name, or by its columns):
//!   - [`Rule::Unreadable`]: it does not read. The listing's error first
//!     ([`describe_root`]: a damaged Parquet footer, a directory that cannot be listed),
//!     then a full scan of every column (a JSONL line that does not decode). A checkpoint
//!     that does not read takes no part in the other rules.
//!   - [`Rule::DuplicateId`]: an id (the kind's [`id_column`](crate::kind::CheckpointKind::id_column):
//!     `chat_id`, or `id` for the cluster kinds) on more than one row.
//!   - [`Rule::EmbeddingLength`] (summaries): embeddings of different lengths. Rows without
//!     an embedding are not counted (Kura's own summaries checkpoint has `null` on every
//!     row); the ids are the rows whose length is not the most common one.
//! - **Between checkpoints**, on the checkpoints SQL names `summaries`, `clusters`,
//!   `meta_clusters`, `dimensionality` and `conversations` (the Parquet file when a
//!   checkpoint is stored in both formats):
//!   - [`Rule::UnknownChatId`]: a chat id listed in a base cluster (`clusters.chat_ids`)
//!     that no summary has.
//!   - [`Rule::SummaryWithoutConversation`]: a summary whose `chat_id` has no
//!     conversation (only when a conversations checkpoint is stored: a run need not keep
//!     the conversations it started from).
//!   - [`Rule::UnclusteredSummary`]: a summary in no base cluster.
//!   - [`Rule::UnknownParent`]: a meta cluster whose `parent_id` names no meta cluster.
//!   - [`Rule::ParentCycle`]: meta clusters on a loop of parents (a cluster its own
//!     ancestor).
//!   - [`Rule::ParentChatIds`]: a meta cluster with children whose `chat_ids`, as a set,
//!     are not the union of its children's.
//!   - [`Rule::ProjectionOfUnknownCluster`]: a dimensionality row whose id is no meta
//!     cluster; [`Rule::MissingProjection`]: a meta cluster with no dimensionality row.
//!
//! What Kura guarantees, read from its own output (a real run's checkpoints) and from its
//! meta-clustering code, and how the rules follow it:
//! - `meta_clusters` holds **every level**, base clusters included (with their
//!   `parent_id` set), and the hierarchy's roots (`parent_id` null); `clusters` holds the
//!   base clusters as first saved, `parent_id` null. So the hierarchy rules read
//!   `meta_clusters` alone, and a meta cluster without children (a base cluster) has
//!   nothing to be the union of.
//! - A parent's `chat_ids` are its children's concatenated (`[c for child in children for
//!   c in child.chat_ids]`); when a level has one cluster, its parent is a copy with the
//!   same `chat_ids`. The union rule compares sets, so order and repeats do not matter.
//! - `dimensionality` projects every meta cluster (all levels, `level` 0 for the roots),
//!   one row each, with the same ids: hence the two projection rules, both ways.
//! - Every summary lands in a base cluster: k-means assigns every point, and Kura's HDBSCAN
//!   method puts the noise points in a cluster of their own.
//!
//! How it is built: a library operation ([`check`], [`CheckOptions`] → [`CheckReport`]),
//! which `ckpt check` calls and prints: library users get the command line's answers.
//! Every rule is a query over the tables of one
//! [`CheckpointSession`] (anti-joins with `NOT EXISTS`, `unnest(chat_ids)`, `GROUP BY ...
//! HAVING`, a `FULL JOIN` of (parent, chat id) pairs for the union rule), so it streams and
//! aggregates inside DataFusion, within the session's memory limit when one is set (joins
//! then sort and spill rather than hash one side in memory). What comes back to Rust is
//! bounded: the offending ids are streamed and only their count and the first
//! [`CheckOptions::sample`] (in sort order) are kept. The one exception are the meta
//! clusters' `(id, parent_id)` pairs, collected to follow parent chains (unknown parents
//! and cycles: a walk, not a join): there is one per meta cluster, a few per hundred
//! conversations. A rule's query that fails after every checkpoint it reads has been
//! read whole is an error of the whole check, not a problem of the report.

use std::collections::BTreeSet;

use serde::Serialize;

use crate::Result;
use crate::context::{CheckpointSession, SessionOptions};
use crate::ops::ls::describe_root;
use crate::storage::Root;

mod rules;
use rules::Checker;

/// How many ids a problem lists by default.
pub const DEFAULT_SAMPLE: usize = 10;

/// How `check` runs.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// Storage options, memory limit and decoding of the session the checks run in.
    pub session: SessionOptions,
    /// How many ids each problem lists (the first ones in sort order); the count is
    /// always the total.
    pub sample: usize,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            session: SessionOptions::default(),
            sample: DEFAULT_SAMPLE,
        }
    }
}

/// A kind of problem: one rule of consistency (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// A checkpoint of a known kind does not read.
    Unreadable,
    /// An id on more than one row of a checkpoint.
    DuplicateId,
    /// Summaries' embeddings of different lengths.
    EmbeddingLength,
    /// A base cluster's chat id that no summary has.
    UnknownChatId,
    /// A summary whose chat id has no conversation.
    SummaryWithoutConversation,
    /// A summary in no base cluster.
    UnclusteredSummary,
    /// A meta cluster's `parent_id` that names no meta cluster.
    UnknownParent,
    /// Meta clusters on a loop of parents.
    ParentCycle,
    /// A parent whose chat ids are not the union of its children's.
    ParentChatIds,
    /// A dimensionality row whose id is no meta cluster.
    ProjectionOfUnknownCluster,
    /// A meta cluster without a dimensionality row.
    MissingProjection,
}

impl Rule {
    /// Every rule, in the order the report lists them.
    pub const ALL: [Rule; 11] = [
        Rule::Unreadable,
        Rule::DuplicateId,
        Rule::EmbeddingLength,
        Rule::UnknownChatId,
        Rule::SummaryWithoutConversation,
        Rule::UnclusteredSummary,
        Rule::UnknownParent,
        Rule::ParentCycle,
        Rule::ParentChatIds,
        Rule::ProjectionOfUnknownCluster,
        Rule::MissingProjection,
    ];

    /// The rule's name, as the JSON report spells it (`duplicate_id`).
    pub fn name(self) -> &'static str {
        match self {
            Rule::Unreadable => "unreadable",
            Rule::DuplicateId => "duplicate_id",
            Rule::EmbeddingLength => "embedding_length",
            Rule::UnknownChatId => "unknown_chat_id",
            Rule::SummaryWithoutConversation => "summary_without_conversation",
            Rule::UnclusteredSummary => "unclustered_summary",
            Rule::UnknownParent => "unknown_parent",
            Rule::ParentCycle => "parent_cycle",
            Rule::ParentChatIds => "parent_chat_ids",
            Rule::ProjectionOfUnknownCluster => "projection_of_unknown_cluster",
            Rule::MissingProjection => "missing_projection",
        }
    }
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One thing wrong in a root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// The checkpoint (its file name in the root, as `ckpt ls` lists it) whose rows or
    /// values are wrong.
    pub checkpoint: String,
    /// The checkpoint it was checked against, for the rules between two.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub against: Option<String>,
    /// What is wrong.
    pub problem: Rule,
    /// How many ids are involved (0 for [`Rule::Unreadable`]).
    pub count: u64,
    /// The first ids involved, in sort order, at most [`CheckOptions::sample`]: the
    /// checkpoint's row ids, except for [`Rule::UnknownChatId`] (the chat ids that no
    /// summary has).
    pub ids: Vec<String>,
    /// The problem in words.
    pub message: String,
}

/// A rule that did not run on a root, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skipped {
    /// The rule that did not run.
    pub rule: Rule,
    /// Why (the checkpoint it needs is not stored, say).
    pub reason: String,
}

/// The check of one root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RootReport {
    /// The root's name in the session (`root`, or NAME of `--root NAME=URL`).
    pub root: String,
    /// Where it is (a path, or a URL without credentials).
    pub location: String,
    /// Whether no problem was found.
    pub consistent: bool,
    /// The checkpoints of known kinds that were checked (file names).
    pub checkpoints: Vec<String>,
    /// The rules that ran.
    pub checked: Vec<Rule>,
    /// The rules that did not run (a checkpoint they need is not stored, or does not read).
    pub skipped: Vec<Skipped>,
    /// What is wrong, rule by rule.
    pub problems: Vec<Problem>,
}

/// The check of one or more roots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckReport {
    /// Whether no root has a problem.
    pub consistent: bool,
    /// One report per root, in the order given.
    pub roots: Vec<RootReport>,
}

impl CheckReport {
    /// Every problem, with the root it is in.
    pub fn problems(&self) -> impl Iterator<Item = (&RootReport, &Problem)> {
        self.roots
            .iter()
            .flat_map(|r| r.problems.iter().map(move |p| (r, p)))
    }
}

impl std::fmt::Display for CheckReport {
    /// A human-readable report: one paragraph per root, one line per problem.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for r in &self.roots {
            let named = if r.root == r.location {
                r.location.clone()
            } else {
                format!("{} ({})", r.root, r.location)
            };
            if r.consistent {
                writeln!(
                    f,
                    "{named}: consistent ({} rules over {} checkpoints)",
                    r.checked.len(),
                    r.checkpoints.len()
                )?;
            } else {
                writeln!(f, "{named}: {} problem(s)", r.problems.len())?;
            }
            for p in &r.problems {
                let against = p
                    .against
                    .as_deref()
                    .map(|a| format!(" (against {a})"))
                    .unwrap_or_default();
                writeln!(
                    f,
                    "  {}: {}{against}: {}",
                    p.checkpoint, p.problem, p.message
                )?;
                if !p.ids.is_empty() {
                    let more = p.count.saturating_sub(p.ids.len() as u64);
                    let more = if more > 0 {
                        format!(" ... and {more} more")
                    } else {
                        String::new()
                    };
                    writeln!(f, "    ids: {}{more}", p.ids.join(", "))?;
                }
            }
            for s in &r.skipped {
                writeln!(f, "  skipped {}: {}", s.rule, s.reason)?;
            }
        }
        Ok(())
    }
}

/// Checks one root (a directory or URL; it must exist), named `root`.
pub async fn check_root(location: &str, opts: &CheckOptions) -> Result<CheckReport> {
    check(vec![("root".to_owned(), location.to_owned())], opts).await
}

/// Checks each root (NAME, directory or URL) on its own: problems are within a root, never
/// between two. A root that does not exist is an error (`no such root`); a checkpoint
/// that does not read is a problem of the report.
pub async fn check(roots: Vec<(String, String)>, opts: &CheckOptions) -> Result<CheckReport> {
    let mut opened = Vec::new();
    for (name, location) in roots {
        opened.push((name, Root::open_existing(&location, &opts.session.storage)?));
    }
    let mut listings = Vec::new();
    for (_, root) in &opened {
        listings.push(describe_root(root).await?);
    }
    let session = CheckpointSession::with_roots(opened, opts.session.clone()).await?;
    if opts.session.memory_limit.is_some() {
        // Sort-merge joins spill to disk; hash joins hold their build side in memory.
        session
            .context()
            .state_ref()
            .write()
            .config_mut()
            .options_mut()
            .optimizer
            .prefer_hash_join = false;
    }
    let mut reports = Vec::new();
    for ((name, schema), listing) in session.schemas().iter().zip(listings) {
        let mut checker = Checker {
            session: &session,
            schema: name,
            sample: opts.sample,
            report: RootReport {
                root: name.clone(),
                location: schema.root().display(),
                consistent: true,
                checkpoints: Vec::new(),
                checked: Vec::new(),
                skipped: Vec::new(),
                problems: Vec::new(),
            },
            unreadable: BTreeSet::new(),
        };
        checker.run(schema, listing).await?;
        let mut report = checker.report;
        report.consistent = report.problems.is_empty();
        reports.push(report);
    }
    Ok(CheckReport {
        consistent: reports.iter().all(|r| r.consistent),
        roots: reports,
    })
}
