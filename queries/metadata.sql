-- Metadata by model: Kura keeps each conversation's source metadata as a free-form JSON
-- object. Per model (metadata->>'model'): conversations, average number of turns
-- (json_get_int), how many it won (json_get_bool), and how many carry tags.
-- To filter, put the operator in parentheses: WHERE (metadata->>'model') = 'gpt-4'
-- (`->>` binds more loosely than `=`).
--
--   ckpt query data -f queries/metadata.sql
SELECT
    metadata->>'model' AS model,
    count(*) AS conversations,
    round(avg(json_get_int(metadata, 'conversation_turns')), 2) AS avg_turns,
    sum(CASE WHEN json_get_bool(metadata, 'winner') THEN 1 ELSE 0 END) AS wins,
    sum(CASE WHEN json_contains(metadata, 'tags') THEN 1 ELSE 0 END) AS tagged
FROM summaries
GROUP BY metadata->>'model'
ORDER BY conversations DESC, model;
