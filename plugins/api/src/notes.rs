//! Typed notes: per-connection and per-transaction state a plugin keeps under its own type.
//!
//! qpsmtpd's `notes('name')` is a string-keyed hash; here the key is a Rust type, so two
//! plugins cannot collide by accident and a reader gets the type it expects. State that several
//! plugins share (naughty, whitelisted, karma...) is a public type in this crate's [`shared`]
//! module.
//!
//! [`shared`]: crate::shared

use std::any::{Any, TypeId};

/// A small map from type to value. Linear search: a session holds a handful of notes, and a
/// `Vec` that is cleared (not dropped) between transactions keeps its allocation.
#[derive(Default)]
pub struct Notes {
    items: Vec<(TypeId, Box<dyn Any>)>,
}

impl Notes {
    pub fn new() -> Notes {
        Notes::default()
    }

    /// The note of type `T`, if set.
    pub fn get<T: Any>(&self) -> Option<&T> {
        let id = TypeId::of::<T>();
        self.items
            .iter()
            .find(|(k, _)| *k == id)
            .and_then(|(_, v)| v.downcast_ref())
    }

    /// The note of type `T`, mutably, if set.
    pub fn get_mut<T: Any>(&mut self) -> Option<&mut T> {
        let id = TypeId::of::<T>();
        self.items
            .iter_mut()
            .find(|(k, _)| *k == id)
            .and_then(|(_, v)| v.downcast_mut())
    }

    /// Sets the note of type `T`, replacing any previous one.
    pub fn set<T: Any>(&mut self, value: T) {
        match self.get_mut::<T>() {
            Some(slot) => *slot = value,
            None => self.items.push((TypeId::of::<T>(), Box::new(value))),
        }
    }

    /// The note of type `T`, inserted with `f` if missing.
    pub fn get_or_insert_with<T: Any>(&mut self, f: impl FnOnce() -> T) -> &mut T {
        let id = TypeId::of::<T>();
        let pos = match self.items.iter().position(|(k, _)| *k == id) {
            Some(pos) => pos,
            None => {
                self.items.push((id, Box::new(f())));
                self.items.len() - 1
            }
        };
        self.items[pos]
            .1
            .downcast_mut()
            .expect("TypeId matched, so the downcast cannot fail")
    }

    /// Removes and returns the note of type `T`.
    pub fn take<T: Any>(&mut self) -> Option<T> {
        let id = TypeId::of::<T>();
        let pos = self.items.iter().position(|(k, _)| *k == id)?;
        self.items.swap_remove(pos).1.downcast().ok().map(|b| *b)
    }

    pub fn contains<T: Any>(&self) -> bool {
        self.get::<T>().is_some()
    }

    /// Drops every note, keeping the allocation.
    pub fn clear(&mut self) {
        self.items.clear();
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

impl std::fmt::Debug for Notes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Notes({} items)", self.items.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    struct Counter(u32);
    #[derive(Debug, PartialEq)]
    struct Flag;

    #[test]
    fn set_get_take() {
        let mut n = Notes::new();
        assert!(n.get::<Counter>().is_none());
        n.set(Counter(1));
        n.set(Flag);
        n.get_or_insert_with(|| Counter(9)).0 += 1;
        assert_eq!(n.get::<Counter>(), Some(&Counter(2)));
        n.set(Counter(5));
        assert_eq!(n.take::<Counter>(), Some(Counter(5)));
        assert!(!n.contains::<Counter>());
        assert!(n.contains::<Flag>());
        n.clear();
        assert!(n.is_empty());
    }
}
