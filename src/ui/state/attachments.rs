//! Files attached to the question being written: read off the UI thread
//! (a button's file dialog or files dropped on the window), kept as text with
//! the engine's count of their tokens, sent with the question. A file that is
//! not text, larger than a text attachment may be, or longer than the whole
//! room for a prompt is refused with the numbers; nothing is cut silently.

use super::{AppState, Background};
use crate::engine::Prompt;
use crate::store::conversations::Attachment;
use std::path::{Path, PathBuf};

/// The largest file read as an attachment.
pub const MAX_ATTACHMENT_BYTES: u64 = 4 << 20;

/// The draft's attachments and the token counts asked for them.
#[derive(Default)]
pub struct Attachments {
    pub list: Vec<Attachment>,
    /// Count requests in flight: (request id, attachment name).
    counting: Vec<(u64, String)>,
}

impl AppState {
    /// Asks for files (off the UI thread) to attach to the question.
    pub fn pick_attachments(&mut self) {
        let fut = rfd::AsyncFileDialog::new().pick_files();
        self.jobs.spawn(move || {
            let paths: Vec<PathBuf> = pollster::block_on(fut).map(|v| v.into_iter().map(|h| h.path().to_path_buf()).collect()).unwrap_or_default();
            Background::AttachmentsRead(paths.iter().map(|p| read_attachment(p)).collect::<Vec<_>>())
        });
    }

    /// Reads `paths` (dropped on the window) off the UI thread and attaches them.
    pub fn attach_paths(&mut self, paths: Vec<PathBuf>) {
        if paths.is_empty() {
            return;
        }
        self.jobs.spawn(move || Background::AttachmentsRead(paths.iter().map(|p| read_attachment(p)).collect::<Vec<_>>()));
    }

    /// Files read: each attached and counted by the engine, or refused with why.
    pub(super) fn on_attachments_read(&mut self, read: Vec<Result<Attachment, String>>) {
        for r in read {
            match r {
                Ok(a) => {
                    let id = self.engine.handle.count_tokens(Prompt::Raw(a.text.clone()), None);
                    self.chat.attachments.counting.push((id, a.name.clone()));
                    self.chat.attachments.list.retain(|b| b.name != a.name);
                    self.chat.attachments.list.push(a);
                }
                Err(e) => self.error(e),
            }
        }
    }

    /// The engine's count for an attachment (`PromptReady` of a count request):
    /// one longer than the whole room for a prompt is taken off again.
    pub(super) fn on_attachment_counted(&mut self, id: u64, tokens: usize) -> bool {
        let Some(pos) = self.chat.attachments.counting.iter().position(|(r, _)| *r == id) else { return false };
        let (_, name) = self.chat.attachments.counting.remove(pos);
        let budget = self.chat.meter.fit.map(|f| f.budget);
        if let Some(room) = budget.filter(|&room| tokens > room) {
            self.chat.attachments.list.retain(|a| a.name != name);
            self.error(format!(
                "{name} was not attached: it is {} tokens, and the whole context has room for {} (of {} minus the answer's share). \
                 Raise the context length in Settings or attach a part of it.",
                crate::units::count(tokens),
                crate::units::count(room),
                crate::units::count(self.chat.meter.fit.map(|f| f.context_length).unwrap_or(0)),
            ));
        } else if let Some(a) = self.chat.attachments.list.iter_mut().find(|a| a.name == name) {
            a.tokens = Some(tokens);
        }
        true
    }

    /// A count request that failed (no model yet): the chip stays uncounted.
    pub(super) fn on_attachment_count_failed(&mut self, id: u64) -> bool {
        let before = self.chat.attachments.counting.len();
        self.chat.attachments.counting.retain(|(r, _)| *r != id);
        before != self.chat.attachments.counting.len()
    }

    pub fn remove_attachment(&mut self, name: &str) {
        self.chat.attachments.list.retain(|a| a.name != name);
    }
}

/// A file as an attachment: a regular file (no link, no device), at most
/// `MAX_ATTACHMENT_BYTES`, in UTF-8 text.
pub fn read_attachment(path: &Path) -> Result<Attachment, String> {
    let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_else(|| path.display().to_string());
    let meta = std::fs::symlink_metadata(path).map_err(|e| format!("{name} was not attached: {e}"))?;
    if !meta.file_type().is_file() {
        return Err(format!("{name} was not attached: not a regular file (a folder, a link or a device)"));
    }
    if meta.len() > MAX_ATTACHMENT_BYTES {
        return Err(format!(
            "{name} was not attached: it is {}, more than the {} a text attachment may be",
            crate::units::bytes(meta.len()),
            crate::units::bytes(MAX_ATTACHMENT_BYTES)
        ));
    }
    let bytes = crate::files::read_small(path, MAX_ATTACHMENT_BYTES).map_err(|e| format!("{name} was not attached: {e}"))?.unwrap_or_default();
    if bytes.starts_with(b"%PDF") {
        return Err(format!("{name} was not attached: PDF text is not read yet (attach it as text, or paste the part you need)"));
    }
    let text = String::from_utf8(bytes).map_err(|_| format!("{name} was not attached: it is not text (UTF-8); images and other binary files are not read"))?;
    if text.contains('\0') {
        return Err(format!("{name} was not attached: it holds NUL bytes, so it is not text"));
    }
    Ok(Attachment { name, text, tokens: None })
}
