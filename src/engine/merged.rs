//! The decoding rows' caches merged into one per layer (`KvCache::merge`),
//! for models whose attention then runs once for all rows
//! (`LanguageModel::merges_caches`): built when two or more rows decode, kept
//! while they do, rows leaving through `LayerCache::filter` and joining
//! through `extend` (`batch::Batch::sync_merged`).

use super::protocol::RequestId;
use super::sequence::Sequence;
use crate::error::{Error, Result};
use crate::models::cache::{Cache, KvCache};

pub(super) struct Merged {
    /// The rows, in order.
    pub(super) ids: Vec<RequestId>,
    pub(super) layers: Vec<Cache>,
}

/// Merges the caches of `rows`, in order (each layer's `KvCache::merge`).
/// On an error every row keeps its own caches; on success the rows' own
/// are emptied (the merged copy holds their keys; the buffers are freed).
pub(super) fn merge_rows(rows: &mut [&mut Sequence]) -> Result<Merged> {
    let layers = rows.first().map_or(0, |s| s.cache.layers.len());
    let mergeable = |c: &Cache| matches!(c, Cache::Kv(kv) if kv.window().is_none() && kv.rows() == 1 && kv.offset() > 0);
    if rows.iter().any(|s| s.cache.layers.len() != layers || !s.cache.layers.iter().all(mergeable)) {
        return Err(Error::Config("these caches cannot be merged".into()));
    }
    let ids = rows.iter().map(|s| s.id).collect();
    let mut merged = Vec::with_capacity(layers);
    for i in 0..layers {
        let parts = rows
            .iter()
            .map(|s| match &s.cache.layers[i] {
                Cache::Kv(kv) => kv.clone(),
                Cache::State(_) => unreachable!("checked above"),
            })
            .collect();
        merged.push(Cache::Kv(KvCache::merge(parts)?));
    }
    for s in rows.iter_mut() {
        s.cache.layers.iter_mut().for_each(|c| *c = Cache::kv());
    }
    Ok(Merged { ids, layers: merged })
}

impl Merged {
    /// Row `r`'s caches back into its sequence.
    pub(super) fn give_back(&self, r: usize, s: &mut Sequence) {
        for (i, layer) in self.layers.iter().enumerate() {
            if let (Cache::Kv(kv), Some(slot)) = (layer, s.cache.layers.get_mut(i)) {
                if let Some(part) = kv.extract(r) {
                    *slot = Cache::Kv(part);
                }
            }
        }
    }

    /// Every row's caches back into its sequence (rows that left without a
    /// sequence, having failed, are dropped).
    pub(super) fn unmerge<'a>(self, seqs: impl Iterator<Item = &'a mut Sequence>) {
        for s in seqs {
            if let Some(r) = self.ids.iter().position(|id| *id == s.id) {
                self.give_back(r, s);
            }
        }
    }

    /// Gives the rows `leaving` back to their sequences (among `seqs`) and
    /// keeps the others merged (`LayerCache::filter`: one copy of what
    /// stays, where splitting all and merging again cost two); None once
    /// fewer than two rows stay, those given back too.
    pub(super) fn release<'a>(self, leaving: &[RequestId], seqs: impl Iterator<Item = &'a mut Sequence>) -> Option<Merged> {
        let mut seqs: Vec<&'a mut Sequence> = seqs.collect();
        let keep: Vec<usize> = (0..self.ids.len()).filter(|&r| !leaving.contains(&self.ids[r])).collect();
        if keep.len() < 2 {
            self.unmerge(seqs.into_iter());
            return None;
        }
        let filtered: Result<Vec<Cache>> = self
            .layers
            .iter()
            .map(|l| match l {
                Cache::Kv(kv) => kv.filtered(&keep).map(Cache::Kv),
                Cache::State(_) => Err(Error::Config("a state cache in merged rows".into())),
            })
            .collect();
        match filtered {
            Ok(layers) => {
                for s in seqs.iter_mut() {
                    if let Some(r) = self.ids.iter().position(|id| *id == s.id && leaving.contains(id)) {
                        self.give_back(r, s);
                    }
                }
                Some(Merged { ids: keep.iter().map(|&r| self.ids[r]).collect(), layers })
            }
            Err(_) => {
                // Every row back to its own cache: always possible (views).
                self.unmerge(seqs.into_iter());
                None
            }
        }
    }

    /// Appends `rows`' caches after the merged ones (`LayerCache::extend`);
    /// on an error the merged rows are as they were and the joining rows
    /// have their own caches back.
    pub(super) fn extend(&mut self, mut rows: Vec<&mut Sequence>) -> Result<()> {
        let mut add = merge_rows(&mut rows)?;
        let joined: Result<Vec<Cache>> = self
            .layers
            .iter()
            .zip(&add.layers)
            .map(|(a, b)| match (a, b) {
                (Cache::Kv(a), Cache::Kv(b)) => KvCache::merge(vec![a.clone(), b.clone()]).map(Cache::Kv),
                _ => Err(Error::Config("a state cache in merged rows".into())),
            })
            .collect();
        match joined {
            Ok(layers) => {
                self.layers = layers;
                self.ids.append(&mut add.ids);
                Ok(())
            }
            Err(e) => {
                add.unmerge(rows.into_iter());
                Err(e)
            }
        }
    }
}

