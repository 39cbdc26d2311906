//! The sidebar's order: pinned chats first, then each folder (by name), then
//! the chats in none, each group newest first as the list is kept; pinning,
//! filing, and moving through that order from the keyboard.

use super::AppState;

/// The longest folder name kept (longer ones are cut).
const MAX_FOLDER: usize = 60;

/// One group of the sidebar: its heading (None: the chats in no folder) and
/// the indices of its conversations in `ChatState::conversations`.
pub struct Group {
    pub heading: Option<String>,
    pub folder: Option<String>,
    pub items: Vec<usize>,
}

impl AppState {
    /// The sidebar's groups, filtered by the search box.
    pub fn sidebar_groups(&self) -> Vec<Group> {
        let query = self.chat.search.trim();
        let shown: Vec<usize> = (0..self.chat.conversations.len()).filter(|&i| query.is_empty() || self.chat.conversations[i].matches(query)).collect();
        let conv = |i: &usize| &self.chat.conversations[*i];
        let mut groups = Vec::new();
        let pinned: Vec<usize> = shown.iter().copied().filter(|i| conv(i).pinned).collect();
        if !pinned.is_empty() {
            groups.push(Group { heading: Some("Pinned".into()), folder: None, items: pinned });
        }
        let mut folders: Vec<String> = shown.iter().filter(|i| !conv(i).pinned).filter_map(|i| conv(i).folder.clone()).collect();
        folders.sort_by_key(|f| f.to_lowercase());
        folders.dedup();
        for f in folders {
            let items = shown.iter().copied().filter(|i| !conv(i).pinned && conv(i).folder.as_deref() == Some(f.as_str())).collect();
            groups.push(Group { heading: Some(f.clone()), folder: Some(f), items });
        }
        let rest: Vec<usize> = shown.iter().copied().filter(|i| !conv(i).pinned && conv(i).folder.is_none()).collect();
        groups.push(Group { heading: None, folder: None, items: rest });
        groups
    }

    /// Every folder some chat is filed in, by name.
    pub fn folders(&self) -> Vec<String> {
        let mut v: Vec<String> = self.chat.conversations.iter().filter_map(|c| c.folder.clone()).collect();
        v.sort_by_key(|f| f.to_lowercase());
        v.dedup();
        v
    }

    pub fn set_pinned(&mut self, id: &str, on: bool) {
        if let Some(c) = self.chat.conversation_mut(id) {
            c.pinned = on;
        }
        self.persist(id);
    }

    /// Files chat `id` in `folder` (trimmed and cut to a sane length; empty or None: no folder).
    pub fn move_to_folder(&mut self, id: &str, folder: Option<String>) {
        let folder = folder.map(|f| f.trim().chars().take(MAX_FOLDER).collect::<String>()).filter(|f| !f.is_empty());
        if let Some(c) = self.chat.conversation_mut(id) {
            c.folder = folder;
        }
        self.persist(id);
    }

    /// Opens the chat after (`step` 1) or before (-1) the current one in the
    /// sidebar's order (Alt+Down / Alt+Up).
    pub fn select_neighbour(&mut self, step: isize) {
        let order: Vec<String> = self.sidebar_groups().into_iter().flat_map(|g| g.items).map(|i| self.chat.conversations[i].id.clone()).collect();
        if order.is_empty() {
            return;
        }
        let at = self.chat.current.as_ref().and_then(|c| order.iter().position(|o| o == c));
        let next = match at {
            Some(i) => (i as isize + step).clamp(0, order.len() as isize - 1) as usize,
            None => 0,
        };
        let id = order[next].clone();
        self.select(&id);
    }
}
