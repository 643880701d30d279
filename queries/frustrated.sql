-- The most frustrated conversations: the 20 summaries with the highest user_frustration
-- (1-5), with what the user asked for and how many errors the assistant made in them.
-- Ties go to the more concerning conversation, then by chat_id.
--
--   ckpt query data -f queries/frustrated.sql --format markdown
SELECT
    chat_id,
    user_frustration,
    concerning_score,
    CAST(coalesce(cardinality(assistant_errors), 0) AS BIGINT) AS assistant_errors,
    topic,
    request
FROM summaries
WHERE user_frustration IS NOT NULL
ORDER BY user_frustration DESC, concerning_score DESC NULLS LAST, chat_id
LIMIT 20;
