//! The `call` subcommand: a Twilio Media Streams simulator.
