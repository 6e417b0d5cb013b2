//! The maildrop as one POP3 session sees it: messages numbered from 1, deletion marks that take effect at QUIT.

use std::fmt;

use thiserror::Error;

/// One message as the store lists it when the session opens the maildrop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaildropEntry {
    /// The store's UID, stable across sessions for as long as the UIDVALIDITY is.
    pub uid: u32,
    /// Octets the message takes on the wire with CRLF line endings, before byte-stuffing.
    pub size: u64,
}

/// Why a message number cannot be used; the `Display` text is what follows `-ERR `.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub(crate) enum MessageError {
    #[error("no such message")]
    NoSuchMessage,
    #[error("message {0} already deleted")]
    Deleted(u32),
}

/// A message of the session's snapshot, with its deletion mark.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Slot {
    pub(crate) uid: u32,
    pub(crate) size: u64,
    deleted: bool,
}

/// The session's snapshot of the maildrop: RFC 1939 numbers never change during a session, whatever the store does.
#[derive(Debug)]
pub(crate) struct Maildrop {
    uid_validity: u32,
    slots: Vec<Slot>,
}

/// A UIDL unique-id: UIDVALIDITY and UID together, so a rebuilt store with a new UIDVALIDITY never makes a client
/// think it already has a message it has not seen.
pub(crate) struct UniqueId {
    uid_validity: u32,
    uid: u32,
}

impl fmt::Display for UniqueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.uid_validity, self.uid)
    }
}

impl Maildrop {
    /// Numbers `entries` 1..n in the order the store listed them.
    pub(crate) fn new(uid_validity: u32, entries: Vec<MaildropEntry>) -> Self {
        let mut slots: Vec<Slot> =
            entries.into_iter().map(|e| Slot { uid: e.uid, size: e.size, deleted: false }).collect();
        // Message numbers are u32 on the wire; a larger maildrop cannot be addressed, so it is cut, not wrapped.
        slots.truncate(u32::MAX as usize);
        Maildrop { uid_validity, slots }
    }

    /// The live message numbered `number`.
    pub(crate) fn get(&self, number: u32) -> Result<&Slot, MessageError> {
        let slot = self.slot(number)?;
        if slot.deleted { Err(MessageError::Deleted(number)) } else { Ok(slot) }
    }

    /// Marks message `number` for deletion at QUIT.
    pub(crate) fn delete(&mut self, number: u32) -> Result<(), MessageError> {
        let index = self.index(number)?;
        match self.slots.get_mut(index) {
            Some(slot) if slot.deleted => Err(MessageError::Deleted(number)),
            Some(slot) => {
                slot.deleted = true;
                Ok(())
            }
            None => Err(MessageError::NoSuchMessage),
        }
    }

    /// Clears every deletion mark (RSET).
    pub(crate) fn reset(&mut self) {
        self.slots.iter_mut().for_each(|slot| slot.deleted = false);
    }

    /// Count and total size of the messages not marked for deletion.
    pub(crate) fn stat(&self) -> (usize, u64) {
        self.live().fold((0, 0), |(count, octets), (_, slot)| (count + 1, octets.saturating_add(slot.size)))
    }

    /// The messages not marked for deletion, with their numbers.
    pub(crate) fn live(&self) -> impl Iterator<Item = (usize, &Slot)> {
        self.slots.iter().enumerate().filter(|(_, slot)| !slot.deleted).map(|(index, slot)| (index + 1, slot))
    }

    /// The UIDs to expunge at QUIT, in message-number order.
    pub(crate) fn deleted_uids(&self) -> Vec<u32> {
        self.slots.iter().filter(|slot| slot.deleted).map(|slot| slot.uid).collect()
    }

    /// The UIDL unique-id of a message.
    pub(crate) fn unique_id(&self, slot: &Slot) -> UniqueId {
        UniqueId { uid_validity: self.uid_validity, uid: slot.uid }
    }

    fn index(&self, number: u32) -> Result<usize, MessageError> {
        let index = usize::try_from(number).ok().and_then(|n| n.checked_sub(1));
        index.filter(|&i| i < self.slots.len()).ok_or(MessageError::NoSuchMessage)
    }

    fn slot(&self, number: u32) -> Result<&Slot, MessageError> {
        self.slots.get(self.index(number)?).ok_or(MessageError::NoSuchMessage)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drop3() -> Maildrop {
        Maildrop::new(
            7,
            vec![
                MaildropEntry { uid: 10, size: 100 },
                MaildropEntry { uid: 11, size: 200 },
                MaildropEntry { uid: 15, size: 300 },
            ],
        )
    }

    #[test]
    fn numbers_follow_store_order() {
        let drop = drop3();
        assert_eq!(drop.get(1).map(|s| s.uid), Ok(10));
        assert_eq!(drop.get(3).map(|s| s.uid), Ok(15));
        assert_eq!(drop.stat(), (3, 600));
    }

    #[test]
    fn out_of_range_numbers() {
        let drop = drop3();
        assert_eq!(drop.get(0).map(|s| s.uid), Err(MessageError::NoSuchMessage));
        assert_eq!(drop.get(4).map(|s| s.uid), Err(MessageError::NoSuchMessage));
        assert_eq!(drop.get(u32::MAX).map(|s| s.uid), Err(MessageError::NoSuchMessage));
    }

    #[test]
    fn delete_hides_and_reset_restores() {
        let mut drop = drop3();
        assert_eq!(drop.delete(2), Ok(()));
        assert_eq!(drop.delete(2), Err(MessageError::Deleted(2)));
        assert_eq!(drop.get(2).map(|s| s.uid), Err(MessageError::Deleted(2)));
        assert_eq!(drop.stat(), (2, 400));
        assert_eq!(drop.live().map(|(n, _)| n).collect::<Vec<_>>(), [1, 3]);
        assert_eq!(drop.deleted_uids(), [11]);
        drop.reset();
        assert_eq!(drop.stat(), (3, 600));
        assert!(drop.deleted_uids().is_empty());
    }

    #[test]
    fn unique_ids_include_uid_validity() {
        let drop = drop3();
        let slot = drop.get(3).copied();
        assert_eq!(slot.map(|s| drop.unique_id(&s).to_string()), Ok("7.15".to_owned()));
    }

    #[test]
    fn sizes_saturate() {
        let drop = Maildrop::new(1, vec![MaildropEntry { uid: 1, size: u64::MAX }, MaildropEntry { uid: 2, size: 5 }]);
        assert_eq!(drop.stat(), (2, u64::MAX));
    }

    #[test]
    fn empty_maildrop() {
        let mut drop = Maildrop::new(1, Vec::new());
        assert_eq!(drop.stat(), (0, 0));
        assert_eq!(drop.delete(1), Err(MessageError::NoSuchMessage));
    }
}
