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
//!   - [`Rule::DuplicateId`]: an id (the kind's [`id_column`](CheckpointKind::id_column):
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

use std::collections::{BTreeSet, HashMap};

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Int64Type};
use futures::StreamExt;
use serde::Serialize;

use crate::Result;
use crate::catalog::describe_root;
use crate::context::{CheckpointSession, SessionOptions};
use crate::kind::CheckpointKind;
use crate::storage::Root;

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
    pub rule: Rule,
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
    pub problems: Vec<Problem>,
}

/// The check of one or more roots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckReport {
    /// Whether no root has a problem.
    pub consistent: bool,
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

/// The check of one root of the session.
struct Checker<'a> {
    session: &'a CheckpointSession,
    schema: &'a str,
    sample: usize,
    report: RootReport,
    /// Checkpoints (file names) that do not read.
    unreadable: BTreeSet<String>,
}

/// `"name"`, quoted for SQL.
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The table name of a checkpoint file: its file name (a directory without the `/`)
/// names exactly that file, whatever other format the root holds.
fn table_name(file: &str) -> &str {
    file.trim_end_matches('/')
}

impl Checker<'_> {
    /// The SQL reference of a checkpoint of this root.
    fn table(&self, file: &str) -> String {
        format!("{}.{}", ident(self.schema), ident(table_name(file)))
    }

    fn ran(&mut self, rule: Rule) {
        if !self.report.checked.contains(&rule) {
            self.report.checked.push(rule);
        }
    }

    fn skip(&mut self, rule: Rule, reason: String) {
        self.report.skipped.push(Skipped { rule, reason });
    }

    fn problem(
        &mut self,
        checkpoint: &str,
        against: Option<&str>,
        rule: Rule,
        (count, ids): (u64, Vec<String>),
        message: String,
    ) {
        self.report.problems.push(Problem {
            checkpoint: checkpoint.to_owned(),
            against: against.map(str::to_owned),
            problem: rule,
            count,
            ids,
            message,
        });
    }

    fn unreadable(&mut self, file: &str, error: &str) {
        self.unreadable.insert(file.to_owned());
        self.problem(
            file,
            None,
            Rule::Unreadable,
            (0, Vec::new()),
            format!("does not read: {error}"),
        );
    }

    async fn run(
        &mut self,
        schema: &crate::catalog::CheckpointSchema,
        listing: Vec<crate::catalog::CheckpointInfo>,
    ) -> Result<()> {
        self.ran(Rule::Unreadable);
        // Every checkpoint of a known kind, on its own.
        for info in &listing {
            let Some(kind) = info.kind.as_deref().and_then(CheckpointKind::from_name) else {
                continue;
            };
            self.report.checkpoints.push(info.file.clone());
            if let Some(e) = &info.error {
                self.unreadable(&info.file, e);
                continue;
            }
            if let Err(e) = self.read_all(&info.file).await {
                self.unreadable(&info.file, &e.to_string());
                continue;
            }
            self.duplicate_ids(&info.file, kind).await?;
            if kind == CheckpointKind::Summaries {
                self.embedding_lengths(&info.file).await?;
            }
        }
        if !self.report.checked.contains(&Rule::DuplicateId) {
            self.skip(
                Rule::DuplicateId,
                "no readable checkpoint of a known kind".into(),
            );
        }
        if !self.report.checked.contains(&Rule::EmbeddingLength) {
            self.skip(Rule::EmbeddingLength, "no readable summaries".into());
        }

        // The checkpoints SQL names by kind, when stored and readable.
        let mut by_kind: HashMap<CheckpointKind, String> = HashMap::new();
        let mut missing: HashMap<CheckpointKind, String> = HashMap::new();
        for kind in CheckpointKind::ALL {
            let name = kind.default_name();
            match schema.lookup(name) {
                Some(e) if self.unreadable.contains(&e.file) => {
                    missing.insert(kind, format!("{} does not read", e.file));
                }
                Some(e) => {
                    by_kind.insert(kind, e.file);
                }
                None => {
                    missing.insert(kind, format!("no {name} checkpoint"));
                }
            }
        }
        let need = |kinds: &[CheckpointKind]| -> std::result::Result<Vec<String>, String> {
            kinds
                .iter()
                .map(|k| by_kind.get(k).cloned().ok_or_else(|| missing[k].clone()))
                .collect()
        };
        use CheckpointKind::{Clusters, Conversations, Dimensionality, MetaClusters, Summaries};
        match need(&[Clusters, Summaries]) {
            Ok(t) => {
                self.unknown_chat_ids(&t[0], &t[1]).await?;
                self.unclustered_summaries(&t[1], &t[0]).await?;
            }
            Err(why) => {
                self.skip(Rule::UnknownChatId, why.clone());
                self.skip(Rule::UnclusteredSummary, why);
            }
        }
        match need(&[Summaries, Conversations]) {
            Ok(t) => self.summaries_without_conversation(&t[0], &t[1]).await?,
            Err(why) => self.skip(Rule::SummaryWithoutConversation, why),
        }
        match need(&[MetaClusters]) {
            Ok(t) => {
                self.parents(&t[0]).await?;
                self.parent_chat_ids(&t[0]).await?;
            }
            Err(why) => {
                for rule in [Rule::UnknownParent, Rule::ParentCycle, Rule::ParentChatIds] {
                    self.skip(rule, why.clone());
                }
            }
        }
        match need(&[Dimensionality, MetaClusters]) {
            Ok(t) => self.projections(&t[0], &t[1]).await?,
            Err(why) => {
                self.skip(Rule::ProjectionOfUnknownCluster, why.clone());
                self.skip(Rule::MissingProjection, why);
            }
        }
        Ok(())
    }

    /// Scans every column of a checkpoint (the rows are dropped as they come).
    async fn read_all(&self, file: &str) -> Result<u64> {
        let df = self
            .session
            .sql(&format!("SELECT * FROM {}", self.table(file)))
            .await?;
        let mut stream = df.execute_stream().await?;
        let mut rows = 0u64;
        while let Some(batch) = stream.next().await {
            rows += batch?.num_rows() as u64;
        }
        Ok(rows)
    }

    /// Runs a query of one string column of distinct ids: their count and the first
    /// `sample` in sort order, streamed.
    async fn ids(&self, sql: &str) -> Result<(u64, Vec<String>)> {
        let mut stream = self.session.sql(sql).await?.execute_stream().await?;
        let mut count = 0u64;
        let mut first = BTreeSet::new();
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            let column = cast(batch.column(0), &DataType::Utf8)?;
            let ids = column.as_string::<i32>();
            for i in 0..ids.len() {
                count += 1;
                let id = if ids.is_null(i) { "null" } else { ids.value(i) };
                if first.len() < self.sample
                    || first.last().is_some_and(|l: &String| id < l.as_str())
                {
                    first.insert(id.to_owned());
                    if first.len() > self.sample {
                        first.pop_last();
                    }
                }
            }
        }
        Ok((count, first.into_iter().collect()))
    }

    /// Rows of a small result as Int64 columns.
    async fn ints(&self, sql: &str) -> Result<Vec<Vec<Option<i64>>>> {
        let batches = self.session.sql(sql).await?.collect().await?;
        let mut rows = Vec::new();
        for b in batches {
            let cols: Vec<_> = b
                .columns()
                .iter()
                .map(|c| cast(c, &DataType::Int64))
                .collect::<std::result::Result<_, _>>()?;
            for i in 0..b.num_rows() {
                rows.push(
                    cols.iter()
                        .map(|c| {
                            let c = c.as_primitive::<Int64Type>();
                            c.is_valid(i).then(|| c.value(i))
                        })
                        .collect(),
                );
            }
        }
        Ok(rows)
    }

    async fn duplicate_ids(&mut self, file: &str, kind: CheckpointKind) -> Result<()> {
        self.ran(Rule::DuplicateId);
        let col = ident(kind.id_column());
        let found = self
            .ids(&format!(
                "SELECT {col} FROM {} GROUP BY {col} HAVING count(*) > 1",
                self.table(file)
            ))
            .await?;
        if found.0 > 0 {
            let message = format!(
                "{} {} value(s) on more than one row",
                found.0,
                kind.id_column()
            );
            self.problem(file, None, Rule::DuplicateId, found, message);
        }
        Ok(())
    }

    async fn embedding_lengths(&mut self, file: &str) -> Result<()> {
        self.ran(Rule::EmbeddingLength);
        let t = self.table(file);
        let lengths = self
            .ints(&format!(
                "SELECT CAST(coalesce(array_length(embedding), 0) AS BIGINT) AS len, count(*) AS n \
                 FROM {t} WHERE embedding IS NOT NULL GROUP BY 1 ORDER BY n DESC, len LIMIT 11"
            ))
            .await?;
        if lengths.len() < 2 {
            return Ok(());
        }
        let common = lengths[0][0].unwrap_or(0);
        let shown: Vec<String> = lengths
            .iter()
            .take(10)
            .map(|r| format!("{} ({} rows)", r[0].unwrap_or(0), r[1].unwrap_or(0)))
            .collect();
        let more = if lengths.len() > 10 { ", ..." } else { "" };
        let found = self
            .ids(&format!(
                "SELECT DISTINCT chat_id FROM {t} WHERE embedding IS NOT NULL \
                 AND coalesce(array_length(embedding), 0) <> {common}"
            ))
            .await?;
        let message = format!(
            "embeddings of different lengths: {}{more}; the ids are the summaries whose \
             embedding is not {common} long",
            shown.join(", ")
        );
        self.problem(file, None, Rule::EmbeddingLength, found, message);
        Ok(())
    }

    async fn unknown_chat_ids(&mut self, clusters: &str, summaries: &str) -> Result<()> {
        self.ran(Rule::UnknownChatId);
        let (c, s) = (self.table(clusters), self.table(summaries));
        let found = self
            .ids(&format!(
                "SELECT DISTINCT l.chat_id FROM (SELECT unnest(chat_ids) AS chat_id FROM {c}) l \
                 WHERE NOT EXISTS (SELECT 1 FROM {s} s WHERE s.chat_id = l.chat_id)"
            ))
            .await?;
        if found.0 > 0 {
            let message = format!(
                "{} chat id(s) in base clusters that no summary has",
                found.0
            );
            self.problem(
                clusters,
                Some(summaries),
                Rule::UnknownChatId,
                found,
                message,
            );
        }
        Ok(())
    }

    async fn unclustered_summaries(&mut self, summaries: &str, clusters: &str) -> Result<()> {
        self.ran(Rule::UnclusteredSummary);
        let (s, c) = (self.table(summaries), self.table(clusters));
        let found = self
            .ids(&format!(
                "SELECT DISTINCT s.chat_id FROM {s} s WHERE NOT EXISTS \
                 (SELECT 1 FROM (SELECT unnest(chat_ids) AS chat_id FROM {c}) l \
                  WHERE l.chat_id = s.chat_id)"
            ))
            .await?;
        if found.0 > 0 {
            let message = format!("{} summaries in no base cluster", found.0);
            self.problem(
                summaries,
                Some(clusters),
                Rule::UnclusteredSummary,
                found,
                message,
            );
        }
        Ok(())
    }

    async fn summaries_without_conversation(
        &mut self,
        summaries: &str,
        conversations: &str,
    ) -> Result<()> {
        self.ran(Rule::SummaryWithoutConversation);
        let (s, v) = (self.table(summaries), self.table(conversations));
        let found = self
            .ids(&format!(
                "SELECT DISTINCT s.chat_id FROM {s} s \
                 WHERE NOT EXISTS (SELECT 1 FROM {v} v WHERE v.chat_id = s.chat_id)"
            ))
            .await?;
        if found.0 > 0 {
            let message = format!("{} summaries whose chat_id has no conversation", found.0);
            self.problem(
                summaries,
                Some(conversations),
                Rule::SummaryWithoutConversation,
                found,
                message,
            );
        }
        Ok(())
    }

    /// Parent links: parents that are no meta cluster, and loops of parents. Walked over
    /// the `(id, parent_id)` pairs, one per meta cluster.
    async fn parents(&mut self, meta: &str) -> Result<()> {
        self.ran(Rule::UnknownParent);
        self.ran(Rule::ParentCycle);
        let sql = format!("SELECT id, parent_id FROM {}", self.table(meta));
        let mut parent: HashMap<String, Option<String>> = HashMap::new();
        let mut stream = self.session.sql(&sql).await?.execute_stream().await?;
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            let id = cast(batch.column(0), &DataType::Utf8)?;
            let pid = cast(batch.column(1), &DataType::Utf8)?;
            let (id, pid) = (id.as_string::<i32>(), pid.as_string::<i32>());
            for i in 0..batch.num_rows() {
                let p = pid.is_valid(i).then(|| pid.value(i).to_owned());
                // With a duplicated id (reported apart), its first parent counts.
                parent.entry(id.value(i).to_owned()).or_insert(p);
            }
        }

        // Unknown parents: the children are the ids, the parents they name the message.
        let mut orphans: BTreeSet<&str> = BTreeSet::new();
        let mut named: BTreeSet<&str> = BTreeSet::new();
        for (id, p) in &parent {
            if let Some(p) = p
                && !parent.contains_key(p)
            {
                orphans.insert(id);
                named.insert(p);
            }
        }
        if !orphans.is_empty() {
            let shown: Vec<&str> = named.iter().take(self.sample).copied().collect();
            let more = if named.len() > shown.len() {
                ", ..."
            } else {
                ""
            };
            let message = format!(
                "{} meta cluster(s) whose parent_id names no meta cluster ({}{more})",
                orphans.len(),
                shown.join(", ")
            );
            let found = (
                orphans.len() as u64,
                orphans
                    .iter()
                    .take(self.sample)
                    .map(|s| s.to_string())
                    .collect(),
            );
            self.problem(meta, None, Rule::UnknownParent, found, message);
        }

        // Cycles: follow each chain until it ends, meets a chain already followed, or
        // comes back to itself.
        let mut ids: Vec<&str> = parent.keys().map(String::as_str).collect();
        ids.sort_unstable();
        let mut state: HashMap<&str, u8> = HashMap::new(); // 1: on the current path, 2: done
        let mut on_cycle: BTreeSet<&str> = BTreeSet::new();
        let mut first_cycle: Option<Vec<&str>> = None;
        for start in ids {
            let mut path: Vec<&str> = Vec::new();
            let mut at = Some(start);
            while let Some(id) = at {
                match state.get(id) {
                    Some(1) => {
                        let from = path.iter().position(|p| *p == id).unwrap_or(0);
                        let cycle = &path[from..];
                        on_cycle.extend(cycle.iter().copied());
                        if first_cycle.is_none() {
                            first_cycle = Some(cycle.to_vec());
                        }
                        break;
                    }
                    Some(_) => break,
                    None => {}
                }
                state.insert(id, 1);
                path.push(id);
                at = parent
                    .get_key_value(id)
                    .and_then(|(_, p)| p.as_deref())
                    .and_then(|p| parent.get_key_value(p).map(|(k, _)| k.as_str()));
            }
            for id in path {
                state.insert(id, 2);
            }
        }
        if let Some(cycle) = first_cycle {
            let mut shown: Vec<&str> = cycle.clone();
            shown.push(cycle[0]);
            let message = format!(
                "{} meta cluster(s) on a loop of parents (e.g. {})",
                on_cycle.len(),
                shown.join(" -> ")
            );
            let found = (
                on_cycle.len() as u64,
                on_cycle
                    .iter()
                    .take(self.sample)
                    .map(|s| s.to_string())
                    .collect(),
            );
            self.problem(meta, None, Rule::ParentCycle, found, message);
        }
        Ok(())
    }

    /// Parents whose chat ids (as a set) are not the union of their children's.
    async fn parent_chat_ids(&mut self, meta: &str) -> Result<()> {
        self.ran(Rule::ParentChatIds);
        let m = self.table(meta);
        let diff = format!(
            "WITH parents AS (SELECT DISTINCT c.parent_id AS parent FROM {m} c \
                WHERE c.parent_id IS NOT NULL \
                AND EXISTS (SELECT 1 FROM {m} p WHERE p.id = c.parent_id)), \
             kids AS (SELECT DISTINCT l.kp, l.chat_id FROM \
                (SELECT parent_id AS kp, unnest(chat_ids) AS chat_id FROM {m} \
                 WHERE parent_id IS NOT NULL) l JOIN parents ON parents.parent = l.kp), \
             own AS (SELECT DISTINCT l.op, l.chat_id FROM \
                (SELECT id AS op, unnest(chat_ids) AS chat_id FROM {m}) l \
                JOIN parents ON parents.parent = l.op) \
             SELECT coalesce(k.kp, o.op) AS pid, o.op IS NULL AS missing \
             FROM kids k FULL JOIN own o ON k.kp = o.op AND k.chat_id = o.chat_id \
             WHERE k.kp IS NULL OR o.op IS NULL"
        );
        let found = self
            .ids(&format!("SELECT DISTINCT pid FROM ({diff})"))
            .await?;
        if found.0 > 0 {
            let counts = self
                .ints(&format!(
                    "SELECT sum(CASE WHEN missing THEN 1 ELSE 0 END), \
                     sum(CASE WHEN missing THEN 0 ELSE 1 END) FROM ({diff})"
                ))
                .await?;
            let (missing, extra) = counts
                .first()
                .map(|r| (r[0].unwrap_or(0), r[1].unwrap_or(0)))
                .unwrap_or((0, 0));
            let message = format!(
                "{} parent(s) whose chat_ids are not the union of their children's: {missing} \
                 children's chat id(s) missing from their parent, {extra} of a parent's in none \
                 of its children",
                found.0
            );
            self.problem(meta, None, Rule::ParentChatIds, found, message);
        }
        Ok(())
    }

    /// Dimensionality rows and meta clusters, both ways.
    async fn projections(&mut self, dimensionality: &str, meta: &str) -> Result<()> {
        self.ran(Rule::ProjectionOfUnknownCluster);
        self.ran(Rule::MissingProjection);
        let (d, m) = (self.table(dimensionality), self.table(meta));
        let found = self
            .ids(&format!(
                "SELECT DISTINCT d.id FROM {d} d WHERE NOT EXISTS (SELECT 1 FROM {m} m WHERE m.id = d.id)"
            ))
            .await?;
        if found.0 > 0 {
            let message = format!(
                "{} projected cluster(s) whose id is no meta cluster",
                found.0
            );
            self.problem(
                dimensionality,
                Some(meta),
                Rule::ProjectionOfUnknownCluster,
                found,
                message,
            );
        }
        let found = self
            .ids(&format!(
                "SELECT DISTINCT m.id FROM {m} m WHERE NOT EXISTS (SELECT 1 FROM {d} d WHERE d.id = m.id)"
            ))
            .await?;
        if found.0 > 0 {
            let message = format!(
                "{} meta cluster(s) without a projection (no dimensionality row)",
                found.0
            );
            self.problem(
                meta,
                Some(dimensionality),
                Rule::MissingProjection,
                found,
                message,
            );
        }
        Ok(())
    }
}
