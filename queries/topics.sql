-- Counts by topic: how many conversations Kura summarised under each topic, most
-- frequent first. Summaries without a topic are counted as '(none)'.
--
--   ckpt query data -f queries/topics.sql
SELECT
    coalesce(topic, '(none)') AS topic,
    count(*) AS conversations
FROM summaries
GROUP BY coalesce(topic, '(none)')
ORDER BY conversations DESC, topic;
