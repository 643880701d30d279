-- Summaries by cluster: each base cluster joined with the summaries of its conversations
-- (one row per chat_id, via unnest(chat_ids)): how many it holds, how frustrated and how
-- concerning they were on average, and how many assistant errors they report. Most
-- frustrated cluster first.
--
--   ckpt query data -f queries/summaries_by_cluster.sql
WITH members AS (
    SELECT name AS cluster, unnest(chat_ids) AS chat_id
    FROM clusters
)
SELECT
    m.cluster,
    count(*) AS conversations,
    round(avg(s.user_frustration), 2) AS avg_frustration,
    round(avg(s.concerning_score), 2) AS avg_concern,
    CAST(sum(coalesce(cardinality(s.assistant_errors), 0)) AS BIGINT) AS assistant_errors
FROM members m
JOIN summaries s ON s.chat_id = m.chat_id
GROUP BY m.cluster
ORDER BY avg_frustration DESC, m.cluster;
