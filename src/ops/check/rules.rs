//! The rules of `ckpt check`, each a query over one root's tables (see the parent
//! module's docs for what each checks and why it is a plan, not a loop in Rust).

use crate::Result;
use crate::context::CheckpointSession;
use crate::kind::CheckpointKind;
use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Int64Type};
use futures::StreamExt;
use std::collections::{BTreeSet, HashMap};

use super::*;

/// The check of one root of the session.
pub(super) struct Checker<'a> {
    pub(super) session: &'a CheckpointSession,
    pub(super) schema: &'a str,
    pub(super) sample: usize,
    pub(super) report: RootReport,
    /// Checkpoints (file names) that do not read.
    pub(super) unreadable: BTreeSet<String>,
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

    pub(super) async fn run(
        &mut self,
        schema: &crate::catalog::CheckpointSchema,
        listing: Vec<crate::ops::ls::CheckpointInfo>,
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
