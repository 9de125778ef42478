//! Integration tests: the real router and server on 127.0.0.1:0, the Realtime stand-in on
//! 127.0.0.1:0, and the Twilio simulator as the caller. One binary, shared `support`.

mod api;
mod calls;
mod cluster;
mod console;
mod fake_deepgram;
mod fake_twilio;
mod fake_webhook;
mod fake_whisper;
mod fork;
mod fork_end;
mod hostile;
mod http;
mod http_limits;
mod instances;
mod limits;
mod live;
mod logs;
mod long_calls;
mod outbound;
mod pg;
mod reconnect;
mod recording;
mod signatures;
mod storage;
mod store;
mod stream_guard;
mod support;
mod tools;
mod twilio_rest;
mod twiml;
