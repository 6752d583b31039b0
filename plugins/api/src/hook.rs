//! The hooks, with qpsmtpd's names (`lib/Qpsmtpd/Plugin.pm` `@hooks`), from the list in
//! `hook_list.rs`, and the set of hooks a plugin implements.

/// `Hook`, `Hook::ALL` and `Hook::name` from the hook list.
macro_rules! hook_enum {
    (hooks: [$($(#[$doc:meta])* $hook:ident $name:literal;)*] chained: [$($chained:tt)*]) => {
        /// One hook of the SMTP conversation. The discriminant is the bit in a [`HookSet`].
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u8)]
        pub enum Hook {
            $($(#[$doc])* $hook,)*
        }

        impl Hook {
            /// Every hook, in the order of the SMTP conversation.
            pub const ALL: [Hook; [$($name),*].len()] = [$(Hook::$hook),*];

            /// qpsmtpd's name for the hook (`pre-connection`, `data_post`, ...).
            pub fn name(self) -> &'static str {
                match self {
                    $(Hook::$hook => $name,)*
                }
            }
        }
    };
}

crate::for_each_hook!(hook_enum);

impl Hook {
    /// Looks a hook up by its qpsmtpd name; `_` and `-` are interchangeable.
    pub fn from_name(name: &str) -> Option<Hook> {
        Hook::ALL
            .into_iter()
            .find(|h| h.name().replace('-', "_") == name.replace('-', "_"))
    }
}

impl std::fmt::Display for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The set of hooks a plugin implements. The engine builds one chain per hook from it, so a
/// hook nobody implements costs nothing, and `ringsmtpd --check` prints the chains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HookSet(u32);

impl HookSet {
    pub const EMPTY: HookSet = HookSet(0);

    /// A set of the given hooks (usable in `const`).
    pub const fn of(hooks: &[Hook]) -> HookSet {
        let mut bits = 0u32;
        let mut i = 0;
        while i < hooks.len() {
            bits |= 1 << hooks[i] as u8;
            i += 1;
        }
        HookSet(bits)
    }

    pub const fn contains(self, hook: Hook) -> bool {
        self.0 & (1 << hook as u8) != 0
    }

    pub const fn with(self, hook: Hook) -> HookSet {
        HookSet(self.0 | (1 << hook as u8))
    }

    pub fn iter(self) -> impl Iterator<Item = Hook> {
        Hook::ALL.into_iter().filter(move |h| self.contains(*h))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for h in Hook::ALL {
            assert_eq!(Hook::from_name(h.name()), Some(h));
        }
        assert_eq!(Hook::from_name("pre_connection"), Some(Hook::PreConnection));
        assert_eq!(Hook::from_name("nope"), None);
    }

    #[test]
    fn hookset() {
        let s = HookSet::of(&[Hook::Rcpt, Hook::Queue]);
        assert!(s.contains(Hook::Rcpt) && s.contains(Hook::Queue));
        assert!(!s.contains(Hook::Mail));
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![Hook::Rcpt, Hook::Queue]);
        assert!(s.with(Hook::Mail).contains(Hook::Mail));
    }
}
