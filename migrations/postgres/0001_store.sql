-- The relay's store (src/store). Times are milliseconds since the Unix epoch (UTC); JSON
-- columns hold the shapes `/api/calls` and the transcript files show.

-- One row per call. `record` is the CallRecord JSON; the columns beside it are what is
-- queried: the list order (in progress first, newest first), status, the holding instance.
CREATE TABLE calls (
    call_sid TEXT PRIMARY KEY NOT NULL,
    instance_id TEXT,
    status TEXT NOT NULL,
    ended BIGINT NOT NULL DEFAULT 0,
    started_at BIGINT NOT NULL,
    ended_at BIGINT,
    last_sequence BIGINT,
    record TEXT NOT NULL
);
CREATE INDEX calls_started_at ON calls (started_at);
CREATE INDEX calls_status ON calls (status);
CREATE INDEX calls_list ON calls (ended, started_at);
CREATE INDEX calls_instance ON calls (instance_id, ended);

-- A transcript's header (the file's fields without `turns`).
CREATE TABLE transcripts (
    call_sid TEXT PRIMARY KEY NOT NULL,
    header TEXT NOT NULL
);

-- One row per completed turn, in the order of the transcript (`idx` from 0). Tool calls are
-- turns of role `tool`; `tool_name` names the function.
CREATE TABLE turns (
    call_sid TEXT NOT NULL,
    idx BIGINT NOT NULL,
    role TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    tool_name TEXT,
    turn TEXT NOT NULL,
    PRIMARY KEY (call_sid, idx)
);
CREATE INDEX turns_tool ON turns (tool_name);

-- Settings of outbound calls until their stream starts, by the `CallRef` TwiML parameter.
CREATE TABLE call_settings (
    reference TEXT PRIMARY KEY NOT NULL,
    created_at BIGINT NOT NULL,
    settings TEXT NOT NULL
);

-- Every relay instance: `state` is live, stopped (clean shutdown) or lost (its heartbeat
-- stopped and its calls were closed as server_lost).
CREATE TABLE instances (
    id TEXT PRIMARY KEY NOT NULL,
    address TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    heartbeat_at BIGINT NOT NULL,
    state TEXT NOT NULL
);
