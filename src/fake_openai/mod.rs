//! The `fake-openai` subcommand: a local stand-in for the OpenAI Realtime API (GA).
