//! Conversation items: `conversation.item.create` acknowledgements and `conversation.item.truncate`
//! checked against the audio generated for the item (the real API rejects a truncate past it).

use std::borrow::Cow;

use super::session::{invalid, Conn};
use crate::audio::BYTES_PER_MS;
use crate::realtime::client::{ContentPart, Item};
use crate::realtime::ServerEvent;

impl Conn {
    /// Acknowledge an item (`conversation.item.added` + `.done`); a message's text becomes the
    /// pending greeting instruction for the next `response.create`.
    pub(super) fn create_item(&mut self, item: Item) {
        if let Item::Message { content, .. } = &item {
            let text: Vec<&str> = content
                .iter()
                .map(|part| match part {
                    ContentPart::InputText { text } | ContentPart::OutputText { text } => {
                        text.as_str()
                    }
                })
                .collect();
            self.pending_text = Some(text.join(" "));
        }
        if let Item::FunctionCallOutput { output, .. } = &item {
            self.tool_output = Some(output.clone());
        }
        let item_id = self.new_item_id();
        let mut value = serde_json::to_value(&item).expect("items serialize");
        if let Some(object) = value.as_object_mut() {
            object.insert("id".into(), item_id.clone().into());
            object.insert("status".into(), "completed".into());
        }
        let previous = self.last_item.replace(item_id);
        let added = serde_json::json!({"type": "conversation.item.added", "previous_item_id": previous, "item": value});
        self.emit_json(added);
        let done = serde_json::json!({"type": "conversation.item.done", "previous_item_id": previous, "item": value});
        self.emit_json(done);
    }

    /// Accept a truncate within the audio generated for the item, else refuse with `invalid_value`.
    pub(super) fn truncate(
        &mut self,
        item_id: &str,
        content_index: u32,
        audio_end_ms: u64,
        event_id: Option<String>,
    ) {
        self.record(|log| log.truncates.push((item_id.to_string(), audio_end_ms)));
        let Some(&bytes) = self.item_audio_bytes.get(item_id) else {
            let msg =
                format!("Invalid value: item '{item_id}' has no assistant audio to truncate.");
            return self.reject(invalid("item_id", msg), event_id);
        };
        if content_index != 0 {
            let msg = format!(
                "Invalid value: content_index {content_index}; the item has one audio part (0)."
            );
            return self.reject(invalid("content_index", msg), event_id);
        }
        let generated_ms = bytes.div_ceil(BYTES_PER_MS) as u64;
        if audio_end_ms > generated_ms {
            let msg = format!("audio_end_ms {audio_end_ms} exceeds the audio length of item '{item_id}' ({generated_ms} ms).");
            return self.reject(invalid("audio_end_ms", msg), event_id);
        }
        let in_flight = self.response.as_ref().is_some_and(|r| r.item_id == item_id);
        if !in_flight {
            // The cut audio is gone: a later truncate may not reach past it.
            let kept = usize::try_from(audio_end_ms)
                .unwrap_or(usize::MAX)
                .saturating_mul(BYTES_PER_MS);
            self.item_audio_bytes
                .insert(item_id.to_string(), kept.min(bytes));
        }
        self.emit(&ServerEvent::ItemTruncated {
            item_id: Cow::Borrowed(item_id),
            content_index,
            audio_end_ms,
        });
    }
}
