//! `twilio-realtime-relay`: puts an OpenAI Realtime (GA) voice assistant on a Twilio phone number.
//!
//! Twilio fetches TwiML from `/incoming-call`, opens a Media Streams WebSocket to `/media-stream`, and
//! the relay bridges it to one Realtime API WebSocket per call, passing G.711 μ-law through both ways,
//! handling barge-in (Twilio `clear` + `conversation.item.truncate` at what the caller heard) and
//! writing a transcript of every call. A call simulator and a Realtime stand-in ship in the same
//! crate so that everything runs offline.
//!
//! # Layout
//! - [`config`]: the typed configuration (flags, environment, `.env`), secrets redacted.
//! - [`envfile`]: loading `.env` (empty values unset, near-miss names warned, errors by line).
//! - [`telemetry`]: tracing setup (text or JSON).
//! - [`active`]: calls in progress by CallSid and per-call settings of outbound calls.
//! - [`api`]: the HTTP API under `/api` (bearer token) and Twilio's status callback.
//! - [`console`]: the operator console at `/` (sign-in, live calls, history, place a call, set-up).
//! - [`app`]: `AppState`, the one `build_router` and the one `serve` used by `main` and tests.
//! - [`server`]: accepting and serving HTTP connections: timeouts, the connection cap and its reserve.
//! - [`routes`]: HTTP handlers: `/incoming-call` TwiML, `/health`, `/metrics`, the `/media-stream` upgrade.
//! - [`stats`]: process-wide counters behind `/health` and `/metrics`.
//! - [`metrics`]: the Prometheus registry behind `/metrics`.
//! - [`twilio`]: Twilio protocols: Media Streams messages, TwiML, request signatures, the REST client.
//! - [`realtime`]: OpenAI Realtime GA client/server events and the session shape.
//! - [`live`]: OpenAI GPT-Live client/server events, the session start shape and the SDK's
//!   transcript grouper (deltas into turns).
//! - `borrowed`: the serde helper both protocols' per-frame probes use to borrow optional strings.
//! - [`tools`]: the assistant's tools: `TOOLS_FILE` webhooks (signed), MCP servers, `transfer_call`.
//! - [`upstream`]: opening the voice API's WebSocket, Realtime or GPT-Live (ws/wss, auth, timeout).
//! - [`bridge`]: one call: the two relay tasks, playback tracking and barge-in, and the seam to
//!   the voice APIs (`bridge::voice`: Realtime, GPT-Live).
//! - [`barge_in`]: local barge-in detection (VAD + echo rule) for upstreams without speech events.
//! - [`records`]: the call record (`/api/calls`) and how Twilio's status callbacks change it.
//! - [`store`]: the store (SQLite or PostgreSQL): records, transcript turns, outbound calls'
//!   settings, the instance registry and crash recovery, the JSON export and `import`.
//! - [`events`]: live per-call event feeds (SSE).
//! - [`cluster`]: several instances on one PostgreSQL: event feeds and hang-ups across them (LISTEN/NOTIFY).
//! - [`transcript`]: the per-call transcript and its atomic JSON file (the export).
//! - [`transcribe`]: live transcription of forked calls (OpenAI, Deepgram, Whisper backends).
//! - [`audio`]: G.711 μ-law codec and framing constants.
//! - [`verify`]: `X-Twilio-Signature` checks on everything Twilio calls.
//! - [`wav`]: reading caller clips and writing what the caller heard.
//! - [`recording`]: call recordings (`RECORDING=on`): per-call tracks, the stereo WAV, retention,
//!   the download.
//! - [`sim`]: the `call` subcommand, a Twilio Media Streams simulator.
//! - [`fake_openai`]: the `fake-openai` subcommand, a local Realtime API stand-in.
//! - [`fake_twilio`]: the `fake-twilio` subcommand, a local stand-in for Twilio's REST API and
//!   voice side that places calls (TwiML, signed streams and status callbacks).
//! - [`demo`]: the `demo` subcommand: stand-in + relay + simulated call in one process.
//! - [`load`]: the `load` subcommand, a frame-tagged load generator for capacity benchmarks.
#![forbid(unsafe_code)]

pub mod active;
pub mod api;
pub mod app;
pub mod audio;
pub mod barge_in;
mod borrowed;
pub mod bridge;
pub mod cluster;
pub mod config;
pub mod console;
pub mod demo;
pub mod envfile;
pub mod events;
pub mod fake_openai;
pub mod fake_twilio;
pub mod live;
pub mod load;
pub mod metrics;
pub mod realtime;
pub mod recording;
pub mod records;
pub mod routes;
pub mod server;
pub mod sim;
pub mod stats;
pub mod store;
pub mod telemetry;
pub mod tools;
pub mod transcribe;
pub mod transcript;
pub mod twilio;
pub mod upstream;
pub mod verify;
pub mod wav;
