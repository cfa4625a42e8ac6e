-- Version 6: two fewer indexes on `events`, which every change writes to.
--
-- `conversation_id` was always the event's scope: the conversation or
-- document it belongs to (the object itself for a conversation or a
-- document, the container for a message or a job). Deleting a conversation
-- or a document rewrites the events of its scope, so the scope alone finds
-- them: the subject index was never needed. The column is renamed to say so.
--
-- Pruning now removes the oldest events of each user by id (a prefix of the
-- user's sequence, found through the primary key), which the age index was
-- for. A prefix also never leaves a hole in the retained sequence, which
-- pruning by age could when timestamps were out of id order (a clock step).

DROP INDEX events_by_subject;
DROP INDEX events_by_age;
DROP INDEX events_by_conversation;

ALTER TABLE events RENAME COLUMN conversation_id TO scope_id;

CREATE INDEX events_by_scope ON events (user_id, scope_id) WHERE scope_id IS NOT NULL;
