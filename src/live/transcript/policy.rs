//! The speaker/backchannel policy, ported line for line from openai-python 3.51.0
//! `lib/live/_transcript_grouping.py` (`TranscriptGrouping`, itself "a direct port of the
//! TypeScript policy"): no clocks, callbacks or transport. Times are ms on the session timeline.

use super::{CloseReason, GrouperOptions, Segment, Speaker, Update};

/// The built-in acknowledgments (`_ACKNOWLEDGMENTS`), already normalized.
const ACKNOWLEDGMENTS: [&str; 16] = [
    "aha", "alright", "gotcha", "hm", "hmm", "mhm", "mm", "mm hmm", "okay", "ok", "right", "sure",
    "uh huh", "yeah", "yep", "yes",
];

/// Characters stripped around an acknowledgment besides whitespace.
const PUNCTUATION: &str = ".,!?;:\"'()[]{}";

/// `_normalize_acknowledgment`: lower case, hyphens as spaces, surrounding whitespace and
/// punctuation stripped, whitespace runs collapsed. Rust's Unicode whitespace stands in for
/// ECMAScript `\s` (plus the BOM, which `\s` includes).
pub(super) fn normalize(text: &str) -> String {
    let is_space = |c: char| c.is_whitespace() || c == '\u{feff}';
    let lowered = text.to_lowercase().replace('-', " ");
    let trimmed = lowered.trim_matches(|c: char| is_space(c) || PUNCTUATION.contains(c));
    trimmed
        .split(is_space)
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// One transcript delta: who, what, when (`TranscriptFragment`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Fragment {
    pub speaker: Speaker,
    pub text: String,
    pub start_ms: u64,
    pub end_ms: u64,
}

#[derive(Debug, Clone)]
struct Turn {
    speaker: Speaker,
    text: String,
    start_ms: u64,
    end_ms: u64,
    id: String,
    previous_id: Option<String>,
    emitted: bool,
    can_drop_as_backchannel: bool,
}

/// `TranscriptGrouping`: the current turn, a buffered turn of the other speaker that may become
/// the next one (or be dropped as a backchannel), and the ids handed out.
#[derive(Debug)]
pub(super) struct Grouping {
    options: GrouperOptions,
    acknowledgments: Vec<String>,
    current: Option<Turn>,
    buffered: Option<Turn>,
    last_id: Option<String>,
    next_id: u64,
    last_assistant_end: Option<u64>,
}

/// `a - b` on the signed line: fragments may overlap.
fn diff(a: u64, b: u64) -> i128 {
    i128::from(a) - i128::from(b)
}

impl Grouping {
    pub(super) fn new(options: GrouperOptions) -> Self {
        let mut acknowledgments: Vec<String> =
            ACKNOWLEDGMENTS.iter().map(|a| (*a).to_string()).collect();
        acknowledgments.extend(
            options
                .additional_acknowledgments
                .iter()
                .map(|a| normalize(a))
                .filter(|a| !a.is_empty()),
        );
        Grouping {
            options,
            acknowledgments,
            current: None,
            buffered: None,
            last_id: None,
            next_id: 0,
            last_assistant_end: None,
        }
    }

    /// The current turn's speaker.
    pub(super) fn speaker(&self) -> Option<Speaker> {
        self.current.as_ref().map(|t| t.speaker)
    }

    /// `process`: fragments that arrived together (same interval), the current speaker's first.
    pub(super) fn process(&mut self, fragments: Vec<Fragment>) -> Vec<Update> {
        let mut events = Vec::new();
        let preferred = self.speaker().unwrap_or(Speaker::User);
        let (mut ordered, others): (Vec<_>, Vec<_>) =
            fragments.into_iter().partition(|f| f.speaker == preferred);
        ordered.extend(others);
        let Some(first) = ordered.first() else {
            return events;
        };
        let (first_start, has_user) = (
            first.start_ms,
            ordered.iter().any(|f| f.speaker == Speaker::User),
        );
        let mut deadline = self.deadline();
        while let Some(due) = deadline.filter(|d| *d < first_start) {
            events.extend(self.advance(due, false));
            let next = self.deadline();
            // Each advance closes or promotes a turn; stop should one ever change nothing.
            if next == Some(due) {
                break;
            }
            deadline = next;
        }
        if self.current.is_some() && !ordered.iter().any(|f| Some(f.speaker) == self.speaker()) {
            events.extend(self.advance(first_start, has_user));
        }
        for fragment in ordered {
            events.extend(self.ingest(fragment));
        }
        events
    }

    /// `advance`: time has reached `time_ms` with nothing new (or only the other speaker).
    pub(super) fn advance(&mut self, time_ms: u64, has_incoming_user: bool) -> Vec<Update> {
        if let (Some(current), Some(_)) = (&self.current, &self.buffered) {
            if time_ms >= current.end_ms + self.options.min_turn_separation_ms
                && !self.keep_backchannel(time_ms)
            {
                if self.keep_buffered(Some(time_ms), None) {
                    if self.buffered.is_some() {
                        return self.promote();
                    }
                } else {
                    self.buffered = None;
                }
            }
        }
        if let Some(current) = &self.current {
            if current.speaker == Speaker::Assistant
                && !has_incoming_user
                && time_ms >= current.end_ms + self.options.assistant_silence_ms
            {
                return self.finish_current(CloseReason::Inactivity);
            }
        }
        Vec::new()
    }

    /// `deadline`: when [`Grouping::advance`] would next change something, if ever.
    pub(super) fn deadline(&self) -> Option<u64> {
        let current = self.current.as_ref()?;
        if let Some(buffered) = &self.buffered {
            let separation = current.end_ms + self.options.min_turn_separation_ms;
            if self.might_be_backchannel()
                && buffered.can_drop_as_backchannel
                && !self.user_continued()
                && !self.recent_assistant()
            {
                return Some(
                    separation.max(buffered.end_ms + self.options.backchannel_isolation_ms),
                );
            }
            return Some(separation);
        }
        (current.speaker == Speaker::Assistant)
            .then(|| current.end_ms + self.options.assistant_silence_ms)
    }

    /// `close`: end the current and buffered turns (a dropped backchannel is not emitted).
    pub(super) fn close(&mut self, time_ms: u64, reason: CloseReason) -> Vec<Update> {
        let keep = self.keep_buffered(Some(time_ms), None);
        let buffered = self.buffered.take().filter(|_| keep);
        let mut events = self.finish_current(reason);
        if let Some(mut buffered) = buffered.filter(|b| !b.text.is_empty()) {
            events.extend(self.emit(&mut buffered));
            events.extend(self.finish(&buffered, reason));
        }
        if reason == CloseReason::TimestampReset {
            self.last_assistant_end = None;
        }
        events
    }

    fn ingest(&mut self, fragment: Fragment) -> Vec<Update> {
        let Some(current) = self.current.as_mut() else {
            let mut turn = self.new_turn(&fragment);
            let events = self.emit(&mut turn);
            self.current = Some(turn);
            return events;
        };
        if fragment.speaker == current.speaker {
            append(current, &fragment, self.buffered.is_some());
            return self.emit_current();
        }
        let (current_speaker, current_end) = (current.speaker, current.end_ms);
        if current_speaker == Speaker::User && self.user_continued() {
            self.buffered = None;
        }
        if current_speaker == Speaker::Assistant {
            self.buffer(&fragment, None);
            return self.promote();
        }
        let min_separation = i128::from(self.options.min_turn_separation_ms);
        if diff(fragment.start_ms, current_end) < min_separation {
            let possible = self.possible_acknowledgment(&fragment);
            self.buffer(&fragment, Some(possible));
            return Vec::new();
        }
        if self.buffered.is_some() && self.standalone_acknowledgment(&fragment, true) {
            self.buffer(&fragment, Some(true));
            return Vec::new();
        }
        if self.buffered.is_none() && self.standalone_acknowledgment(&fragment, false) {
            self.buffer(&fragment, Some(false));
            return Vec::new();
        }
        let keep = self.keep_buffered(None, Some(&fragment));
        let buffered = self.buffered.take().filter(|_| keep);
        let mut events = self.finish_current(CloseReason::SpeakerChange);
        let mut turn = match buffered {
            Some(mut turn) => {
                append(&mut turn, &fragment, false);
                turn
            }
            None => self.new_turn(&fragment),
        };
        events.extend(self.emit(&mut turn));
        self.current = Some(turn);
        events
    }

    fn new_turn(&mut self, fragment: &Fragment) -> Turn {
        let id = format!("segment_{}", self.next_id);
        self.next_id += 1;
        Turn {
            speaker: fragment.speaker,
            text: fragment.text.clone(),
            start_ms: fragment.start_ms,
            end_ms: fragment.end_ms,
            id,
            previous_id: None,
            emitted: false,
            can_drop_as_backchannel: true,
        }
    }

    fn buffer(&mut self, fragment: &Fragment, can_drop: Option<bool>) {
        if let Some(buffered) = self.buffered.as_mut() {
            append(buffered, fragment, false);
        } else {
            self.buffered = Some(self.new_turn(fragment));
        }
        if let (Some(can_drop), Some(buffered)) = (can_drop, self.buffered.as_mut()) {
            buffered.can_drop_as_backchannel = can_drop;
        }
    }

    fn promote(&mut self) -> Vec<Update> {
        let Some(mut turn) = self.buffered.take() else {
            return Vec::new();
        };
        let mut events = self.finish_current(CloseReason::SpeakerChange);
        events.extend(self.emit(&mut turn));
        self.current = Some(turn);
        events
    }

    fn finish_current(&mut self, reason: CloseReason) -> Vec<Update> {
        match self.current.take() {
            Some(turn) => self.finish(&turn, reason),
            None => Vec::new(),
        }
    }

    fn finish(&mut self, turn: &Turn, reason: CloseReason) -> Vec<Update> {
        if turn.speaker == Speaker::Assistant {
            self.last_assistant_end = Some(turn.end_ms);
        }
        if turn.emitted {
            vec![Update::Closed {
                segment: snapshot(turn),
                reason,
            }]
        } else {
            Vec::new()
        }
    }

    fn emit_current(&mut self) -> Vec<Update> {
        let Some(mut turn) = self.current.take() else {
            return Vec::new();
        };
        let events = self.emit(&mut turn);
        self.current = Some(turn);
        events
    }

    fn emit(&mut self, turn: &mut Turn) -> Vec<Update> {
        if turn.text.is_empty() {
            return Vec::new();
        }
        if !turn.emitted {
            turn.previous_id = self.last_id.replace(turn.id.clone());
            turn.emitted = true;
        }
        vec![Update::Updated(snapshot(turn))]
    }

    fn might_be_backchannel(&self) -> bool {
        matches!((&self.current, &self.buffered), (Some(c), Some(b))
            if c.speaker == Speaker::User && b.speaker == Speaker::Assistant
                && b.end_ms - b.start_ms < self.options.backchannel_max_duration_ms)
    }

    fn user_continued(&self) -> bool {
        self.might_be_backchannel()
            && matches!((&self.current, &self.buffered), (Some(c), Some(b))
                if b.can_drop_as_backchannel && c.end_ms > b.end_ms)
    }

    fn recent_assistant(&self) -> bool {
        matches!((&self.current, &self.buffered, self.last_assistant_end), (Some(c), Some(b), Some(end))
            if diff(b.start_ms, end) < i128::from(self.options.backchannel_isolation_ms)
                && b.start_ms <= c.start_ms)
    }

    fn keep_backchannel(&self, time_ms: u64) -> bool {
        self.might_be_backchannel()
            && self.buffered.as_ref().is_some_and(|b| {
                b.can_drop_as_backchannel
                    && time_ms < b.end_ms + self.options.backchannel_isolation_ms
            })
            && !self.user_continued()
            && !self.recent_assistant()
    }

    /// `_maybe_drop_backchannel`: whether the buffered turn survives (`true` when there is none).
    fn keep_buffered(&self, time_ms: Option<u64>, next: Option<&Fragment>) -> bool {
        let Some(buffered) = self
            .buffered
            .as_ref()
            .filter(|_| self.might_be_backchannel())
        else {
            return true;
        };
        if self.user_continued() {
            return false;
        }
        if self.recent_assistant() {
            return true;
        }
        let isolation = self.options.backchannel_isolation_ms;
        match next {
            Some(next) if diff(next.start_ms, buffered.end_ms) < i128::from(isolation) => {
                return true
            }
            None if time_ms.is_none_or(|t| t < buffered.end_ms + isolation) => return true,
            _ => {}
        }
        !buffered.can_drop_as_backchannel
    }

    /// `_standalone_acknowledgment`, with `previous` the buffered turn when `with_buffered`.
    fn standalone_acknowledgment(&self, fragment: &Fragment, with_buffered: bool) -> bool {
        let previous = self.buffered.as_ref().filter(|_| with_buffered);
        let start = previous.map_or(fragment.start_ms, |p| p.start_ms);
        let text = format!(
            "{}{}",
            previous.map_or("", |p| p.text.as_str()),
            fragment.text
        );
        diff(fragment.end_ms, start) < i128::from(self.options.backchannel_max_duration_ms)
            && self.acknowledgments.contains(&normalize(&text))
    }

    fn possible_acknowledgment(&self, fragment: &Fragment) -> bool {
        let buffered = self.buffered.as_ref();
        let text = normalize(&format!(
            "{}{}",
            buffered.map_or("", |b| b.text.as_str()),
            fragment.text
        ));
        let start = buffered.map_or(fragment.start_ms, |b| b.start_ms);
        diff(fragment.end_ms, start) < i128::from(self.options.backchannel_max_duration_ms)
            && !text.is_empty()
            && self.acknowledgments.iter().any(|a| a.starts_with(&text))
    }
}

/// `_append`: a space between fragments only when `separate` and both sides are letters/numbers.
fn append(turn: &mut Turn, fragment: &Fragment, separate: bool) {
    let joins = |a: Option<char>, b: Option<char>| {
        a.is_some_and(char::is_alphanumeric) && b.is_some_and(char::is_alphanumeric)
    };
    if separate && joins(turn.text.chars().last(), fragment.text.chars().next()) {
        turn.text.push(' ');
    }
    turn.text.push_str(&fragment.text);
    turn.end_ms = turn.end_ms.max(fragment.end_ms);
}

fn snapshot(turn: &Turn) -> Segment {
    Segment {
        id: turn.id.clone(),
        previous_id: turn.previous_id.clone(),
        speaker: turn.speaker,
        text: turn.text.clone(),
        start_ms: turn.start_ms,
        end_ms: turn.end_ms,
    }
}
