//! Barge-in detector benchmark: onset latency (audio ms) per case, false clears over line noise
//! and the assistant's echo, and CPU per 20 ms caller frame.
//!
//! `cargo bench --bench barge_in` (release profile). `BARGE_IN_SWEEP=1` also prints how the
//! outcome moves with the echo margin and the onset length around the defaults.

use std::time::Instant;

use twilio_realtime_relay::barge_in::cases::{self, Case};
use twilio_realtime_relay::barge_in::signals::LineNoise;
use twilio_realtime_relay::barge_in::{Detector, DetectorSettings};

/// Target: clear within this much caller audio after the speech starts.
const TARGET_MS: usize = 250;

fn main() -> anyhow::Result<()> {
    let all = cases::all()?;
    let settings = DetectorSettings::default();
    println!("settings: {settings:?}");
    println!("{:<24} {:>12} {:>13}", "case", "onset (ms)", "false clears");
    let (mut worst, mut false_clears) = (0, 0);
    for case in &all {
        let outcome = cases::run(case, &settings);
        let latency = outcome.latency_ms(case);
        let wrong = outcome.false_onsets(case);
        false_clears += wrong;
        let shown = match (case.speech_start, latency) {
            (None, _) => "-".to_string(),
            (Some(_), Some(ms)) => {
                worst = worst.max(ms);
                ms.to_string()
            }
            (Some(_), None) => "missed".to_string(),
        };
        println!("{:<24} {:>12} {:>13}", case.name, shown, wrong);
    }
    println!("worst onset {worst} ms (target {TARGET_MS}), false clears {false_clears}");
    cpu(&all, &settings);
    memory(&settings);
    limits(&settings)?;
    if std::env::var_os("BARGE_IN_SWEEP").is_some() {
        sweep(&all);
    }
    Ok(())
}

/// Mean wall time per 20 ms caller frame over every case, repeated, with the assistant audio fed
/// as `cases::run` feeds it (one thread, nothing else of ours running).
fn cpu(all: &[Case], settings: &DetectorSettings) {
    const ROUNDS: usize = 20;
    let started = Instant::now();
    let mut frames = 0;
    for _ in 0..ROUNDS {
        for case in all {
            frames += cases::run(case, settings).frames;
        }
    }
    let per_frame = started.elapsed().as_secs_f64() * 1e6 / frames as f64;
    println!(
        "cpu: {per_frame:.2} µs per 20 ms frame (mean over {frames} frames = {:.0} s of audio; \
         detector set-up included, one per case)",
        frames as f64 / 50.0
    );
}

/// Resident memory per detector: RSS growth over 2000 live detectors (Linux `/proc/self/statm`).
fn memory(settings: &DetectorSettings) {
    const N: usize = 2000;
    let Some(before) = rss_bytes() else {
        println!("memory: /proc/self/statm unreadable, not measured");
        return;
    };
    let mut live: Vec<Detector> = (0..N).map(|_| Detector::new(settings.clone())).collect();
    // Touch every buffer once, as a call would.
    for detector in &mut live {
        detector.assistant_played(&[0x80; 160]);
        detector.caller_frame(&[0x80; 160]);
    }
    let after = rss_bytes().unwrap_or(before);
    println!(
        "memory: {:.1} KiB per detector (RSS growth over {N} detectors; {} bytes inline)",
        after.saturating_sub(before) as f64 / N as f64 / 1024.0,
        std::mem::size_of::<Detector>()
    );
    drop(live);
}

fn rss_bytes() -> Option<usize> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: usize = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// How far the defaults reach: the loudest echo (dB, 300 ms delay) with no false clear, the
/// quietest caller detected in time on a quiet line, and over the assistant's echo.
fn limits(settings: &DetectorSettings) -> anyhow::Result<()> {
    let clips = cases::clips()?;
    let line = LineNoise::default();
    let reply = cases::assistant_reply(&clips);
    let mut loudest_echo = None;
    for db in (-20..=-6).rev() {
        let case = cases::echo_at(&reply, 300, db as f32, &line);
        if cases::run(&case, settings).false_onsets(&case) == 0 {
            loudest_echo = Some(db);
            break;
        }
    }
    let in_time = |case: &Case| {
        cases::run(case, settings)
            .latency_ms(case)
            .is_some_and(|ms| ms <= TARGET_MS)
    };
    let quietest = |make: &dyn Fn(f32) -> Case| {
        (0..=40)
            .map(|db| -(db as f32))
            .take_while(|&db| in_time(&make(db)))
            .last()
    };
    let alone = quietest(&|db| cases::speech("question", &clips[1], db, &line));
    let over_echo = quietest(&|db| cases::double_talk(&reply, &clips[1], 1500, db, &line));
    println!(
        "limits: no false clear with echo up to {loudest_echo:?} dB; caller detected within \
         {TARGET_MS} ms down to {alone:?} dB alone and {over_echo:?} dB over the assistant \
         (clip's own level = 0 dB)"
    );
    Ok(())
}

/// Worst onset and false clears for a grid of echo margins and onset lengths.
fn sweep(all: &[Case]) {
    println!("\nsweep: margin_db onset_ms -> worst onset ms (missed counted as 9999), false clears, missed");
    for margin in [6.0, 9.0, 12.0, 15.0, 18.0] {
        for onset_ms in [32, 48, 64, 96, 128] {
            let settings = DetectorSettings {
                echo_margin_db: margin,
                onset_ms,
                ..DetectorSettings::default()
            };
            let (mut worst, mut wrong, mut missed) = (0, 0, Vec::new());
            for case in all {
                let outcome = cases::run(case, &settings);
                wrong += outcome.false_onsets(case);
                if case.speech_start.is_some() {
                    match outcome.latency_ms(case) {
                        Some(ms) if ms <= TARGET_MS => worst = worst.max(ms),
                        _ => missed.push(case.name.as_str()),
                    }
                }
            }
            println!("{margin:>5} {onset_ms:>4} -> worst {worst:>4}  false {wrong}  late/missed {missed:?}");
        }
    }
}
