//! Names of nodes and node groups, and the state a node is in for routing purposes.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

/// Longest node or group name accepted; names end up in logs, table listings and sled keys.
pub const MAX_NAME_LEN: usize = 64;

/// Why a string is not a valid node or group name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name is empty.
    #[error("name is empty")]
    Empty,
    /// The name is longer than [`MAX_NAME_LEN`] bytes.
    #[error("name is longer than {MAX_NAME_LEN} bytes")]
    TooLong,
    /// The name contains a character outside `[A-Za-z0-9._-]`.
    #[error("name contains {0:?}; only letters, digits, '.', '_' and '-' are allowed")]
    BadChar(char),
}

fn validate(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong);
    }
    // A narrow alphabet keeps names safe to print unquoted and leaves ':' free for the `group:` prefix.
    match name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
        Some(c) => Err(NameError::BadChar(c)),
        None => Ok(()),
    }
}

macro_rules! name_type {
    ($(#[$doc:meta])* $ty:ident) => {
        $(#[$doc])*
        // Arc<str>: ids are cloned into every routing decision and snapshot, so clones must be cheap.
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $ty(Arc<str>);

        impl $ty {
            /// Validates and wraps a name.
            pub fn new(name: &str) -> Result<Self, NameError> {
                validate(name)?;
                Ok(Self(Arc::from(name)))
            }

            /// The name as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $ty {
            type Err = NameError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::new(s)
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

name_type!(
    /// The name of a mail node, e.g. `node1`.
    NodeId
);

name_type!(
    /// The name of a group of nodes that a routing-table entry can point at.
    GroupName
);

/// Whether a node may take new connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NodeState {
    /// Passing health checks and accepting new connections.
    Healthy,
    /// Failing health checks or refusing connections; used only as a last resort.
    Down,
    /// Taken out by the admin: no new connections, existing sessions finish.
    Drained,
}

impl NodeState {
    /// Combines the admin's drain flag with the health checker's verdict; draining wins.
    pub fn new(drained: bool, healthy: bool) -> Self {
        match (drained, healthy) {
            (true, _) => Self::Drained,
            (false, true) => Self::Healthy,
            (false, false) => Self::Down,
        }
    }
}

impl fmt::Display for NodeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Healthy => "healthy",
            Self::Down => "down",
            Self::Drained => "drained",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names() {
        for name in ["node1", "mx-2.example", "store_a", "N"] {
            assert_eq!(NodeId::new(name).map(|id| id.to_string()), Ok(name.to_owned()));
        }
    }

    #[test]
    fn rejects_bad_names() {
        assert_eq!(NodeId::new(""), Err(NameError::Empty));
        assert_eq!(NodeId::new(&"a".repeat(MAX_NAME_LEN + 1)), Err(NameError::TooLong));
        assert_eq!(NodeId::new("group:x"), Err(NameError::BadChar(':')));
        assert_eq!(GroupName::new("a b"), Err(NameError::BadChar(' ')));
        assert_eq!(GroupName::new("né"), Err(NameError::BadChar('é')));
    }

    #[test]
    fn drain_wins_over_health() {
        assert_eq!(NodeState::new(true, true), NodeState::Drained);
        assert_eq!(NodeState::new(true, false), NodeState::Drained);
        assert_eq!(NodeState::new(false, true), NodeState::Healthy);
        assert_eq!(NodeState::new(false, false), NodeState::Down);
    }
}
