//! Twilio protocols: Media Streams messages and TwiML documents.

pub mod media;
pub mod rest;
pub mod signature;
pub mod twiml;
