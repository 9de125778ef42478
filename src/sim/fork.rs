//! Fork mode: the simulator plays Twilio's side of a one-way `<Start><Stream>` fork
//! (PROTOCOLS.md § "Twilio Media Streams", § "TwiML": `track="both_tracks"`).
//!
//! `start.tracks` lists the forked tracks; every 20 ms each forked track gets its own `media` frame
//! (`media.track` = `inbound`/`outbound`, its own `chunk` counter). The caller clips play on the
//! inbound track and the agent clips on the outbound track, alternating (caller clip 0, agent clip
//! 0, caller clip 1, …) with `quiet_ms` of silence before and between them; nobody waits for
//! replies, as a fork gets none. `stop` follows [`TAIL_MS`] after the last clip. Anything the
//! server sends (other than the closing handshake) is recorded in `unexpected_messages`: Twilio
//! rejects every message on a fork (error 31924).

use std::time::Duration;

use futures_util::stream::SplitStream;
use futures_util::StreamExt;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::Message;
use tracing::{info, warn};

use super::call::CallOptions;
use super::outbox::{Outbox, Ws};
use super::report::CallReport;
use crate::audio::{FRAME_BYTES, FRAME_MS, ULAW_SILENCE};

/// Quiet after the last clip before `stop`, ms: leaves time for the last utterance's final.
pub const TAIL_MS: u64 = 1500;
/// How long to wait for the server's close frame after ours.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Which tracks a fork carries (`--track`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ForkTracks {
    /// The caller only (`track="inbound_track"`).
    Inbound,
    /// The other party only (`track="outbound_track"`).
    Outbound,
    /// Both (`track="both_tracks"`).
    #[default]
    Both,
}

impl ForkTracks {
    /// `start.tracks`: `["inbound"]`, `["outbound"]` or `["inbound","outbound"]`.
    pub fn names(self) -> Vec<String> {
        [(0, "inbound"), (1, "outbound")]
            .into_iter()
            .filter(|&(i, _)| self.carries(i))
            .map(|(_, name)| name.to_string())
            .collect()
    }

    /// Whether track `index` (0 inbound, 1 outbound) is forked.
    fn carries(self, index: usize) -> bool {
        match self {
            ForkTracks::Inbound => index == 0,
            ForkTracks::Outbound => index == 1,
            ForkTracks::Both => true,
        }
    }
}

/// One 20 ms frame per track (index 0 inbound, 1 outbound).
pub(crate) type Frames = [[u8; FRAME_BYTES]; 2];

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    /// Silence until `until_ms`, then clip `next` (or hang up when there is none).
    Quiet { next: usize, until_ms: u64 },
    /// Sending clip `index`, `sent` bytes of it so far.
    Playing { index: usize, sent: usize },
}

/// The alternating clip schedule, driven once per 20 ms tick.
#[derive(Debug)]
pub(crate) struct ForkScript {
    /// `(track index, clip)` in the order they are said.
    clips: Vec<(usize, Vec<u8>)>,
    quiet_ms: u64,
    phase: Phase,
}

impl ForkScript {
    /// Caller clips (inbound) and agent clips (outbound), alternating; clips of tracks that are
    /// not forked are left out.
    pub(crate) fn new(
        tracks: ForkTracks,
        caller: &[Vec<u8>],
        agent: &[Vec<u8>],
        quiet_ms: u64,
    ) -> Self {
        let mut clips = Vec::new();
        for i in 0..caller.len().max(agent.len()) {
            for (track, list) in [(0, caller), (1, agent)] {
                if let Some(clip) = list.get(i).filter(|_| tracks.carries(track)) {
                    clips.push((track, clip.clone()));
                }
            }
        }
        let first = if clips.is_empty() { TAIL_MS } else { quiet_ms };
        ForkScript {
            clips,
            quiet_ms,
            phase: Phase::Quiet {
                next: 0,
                until_ms: first,
            },
        }
    }

    /// The frames to send at `now_ms`, or `None` when it is time to send `stop`.
    pub(crate) fn next_frames(&mut self, now_ms: u64) -> Option<Frames> {
        let (index, sent) = match self.phase {
            Phase::Playing { index, sent } => (index, sent),
            Phase::Quiet { until_ms, .. } if now_ms < until_ms => {
                return Some([[ULAW_SILENCE; FRAME_BYTES]; 2]);
            }
            Phase::Quiet { next, .. } if next >= self.clips.len() => return None,
            Phase::Quiet { next, .. } => {
                info!(
                    clip = next,
                    track = self.clips[next].0,
                    at_ms = now_ms,
                    "clip starts"
                );
                (next, 0)
            }
        };
        let (track, clip) = &self.clips[index];
        let end = (sent + FRAME_BYTES).min(clip.len());
        let mut frames = [[ULAW_SILENCE; FRAME_BYTES]; 2];
        frames[*track][..end - sent].copy_from_slice(&clip[sent..end]);
        self.phase = if end == clip.len() {
            let last = index + 1 == self.clips.len();
            let pause = if last { TAIL_MS } else { self.quiet_ms };
            Phase::Quiet {
                next: index + 1,
                until_ms: now_ms + FRAME_MS as u64 + pause,
            }
        } else {
            Phase::Playing { index, sent: end }
        };
        Some(frames)
    }
}

/// Run a fork on a connected socket: greeting with the tracks, frames per track, `stop`.
pub(super) async fn session(
    opts: CallOptions,
    tracks: ForkTracks,
    mut out: Outbox,
    mut stream: SplitStream<Ws>,
    mut report: CallReport,
) -> CallReport {
    let mut script = ForkScript::new(tracks, &opts.clips, &opts.agent_clips, opts.quiet_ms);
    let greeting = async {
        out.send_start(&opts.params, tracks.names()).await?;
        for frame in opts.inject_after_start.iter().cloned() {
            out.send_raw(frame).await?;
        }
        anyhow::Ok(())
    };
    let mut open = match greeting.await {
        Ok(()) => true,
        Err(error) => {
            warn!(error = %format!("{error:#}"), "could not start the fork");
            false
        }
    };
    let started = Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_millis(FRAME_MS as u64));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let mut hang_up = false;
    while open && !hang_up {
        tokio::select! {
            _ = ticker.tick() => {
                let now = started.elapsed().as_millis() as u64;
                if now >= opts.max_call_ms {
                    report.hit_call_limit = true;
                }
                match script.next_frames(now).filter(|_| !report.hit_call_limit) {
                    None => hang_up = true,
                    Some(frames) => {
                        for (index, frame) in frames.iter().enumerate().filter(|&(i, _)| tracks.carries(i)) {
                            if let Err(error) = out.send_track_media(index, frame, now).await {
                                warn!(error = %format!("{error:#}"), "sending failed");
                                open = false;
                                break;
                            }
                            let sent = if index == 0 { &mut report.sent_audio } else { &mut report.sent_agent_audio };
                            sent.extend_from_slice(frame);
                        }
                    }
                }
            }
            message = stream.next() => open = on_message(&mut report, message),
        }
    }
    if hang_up {
        info!("hanging up");
        out.hang_up().await;
        // A fork must stay silent up to the close: anything before it is still counted.
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
            while on_message(&mut report, stream.next().await) {}
        })
        .await;
    } else {
        report.closed_by_server = true;
        out.close().await;
    }
    info!(
        unexpected = report.unexpected_messages.len(),
        closed_by_server = report.closed_by_server,
        "fork ended"
    );
    report
}

/// Record a message from the server; false once the socket is closed or failed.
fn on_message(
    report: &mut CallReport,
    message: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
) -> bool {
    let what = match message {
        Some(Ok(Message::Text(text))) => text.as_str().chars().take(200).collect(),
        Some(Ok(Message::Binary(bytes))) => format!("binary frame of {} bytes", bytes.len()),
        Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return false,
        Some(Ok(_)) => return true, // ping/pong: answered by tungstenite
    };
    warn!(message = %what, "the relay sent a message on a fork (Twilio error 31924)");
    report.unexpected_messages.push(what);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ticks every 20 ms until hangup; returns (start ms of each clip per track, hangup ms).
    fn drive(script: &mut ForkScript) -> ([Vec<u64>; 2], u64) {
        let mut starts = [Vec::new(), Vec::new()];
        let mut was_loud = [false, false];
        for now in (0..60_000).step_by(20) {
            let Some(frames) = script.next_frames(now) else {
                return (starts, now);
            };
            for t in 0..2 {
                let loud = frames[t].iter().any(|&b| b != ULAW_SILENCE);
                if loud && !was_loud[t] {
                    starts[t].push(now);
                }
                was_loud[t] = loud;
            }
        }
        panic!("never hung up")
    }

    #[test]
    fn caller_and_agent_clips_alternate_on_their_tracks_then_the_tail() {
        let mut script = ForkScript::new(
            ForkTracks::Both,
            &[vec![1; 320], vec![3; 160]],
            &[vec![2; 400]],
            100,
        );
        let (starts, hangup) = drive(&mut script);
        // Caller 100..120 (2 frames), quiet 100 → agent at 240..280 (3 frames), quiet → caller at 400.
        assert_eq!(starts, [vec![100, 400], vec![240]]);
        assert_eq!(hangup, 400 + 20 + TAIL_MS);
        assert_eq!(ForkTracks::Both.names(), ["inbound", "outbound"]);
    }

    #[test]
    fn clips_of_tracks_not_forked_are_left_out() {
        let mut script =
            ForkScript::new(ForkTracks::Outbound, &[vec![1; 160]], &[vec![2; 160]], 100);
        let (starts, _) = drive(&mut script);
        assert_eq!(starts, [vec![], vec![100]]);
        assert_eq!(ForkTracks::Inbound.names(), ["inbound"]);
    }
}
