//! Internet checksums: the one's-complement sum of RFC 1071 and its incremental update
//! (RFC 1624, equation 3), so a rewritten address or port costs a few additions instead of
//! a pass over the packet.
//!
//! A checksum field holds the complement of the folded sum over what it covers, the field
//! itself counted as zero; a packet is intact when the sum over everything, field included,
//! folds to `0xffff`.

/// The unfolded one's-complement sum of `data` as big-endian 16-bit words (an odd last
/// byte is padded with zero), added to `initial`.
///
/// A `u64` accumulator cannot overflow for any packet: 2^48 words would be needed.
pub fn sum(data: &[u8], initial: u64) -> u64 {
    let mut acc = initial;
    let mut words = data.chunks_exact(2);
    for word in &mut words {
        acc += u64::from(u16::from_be_bytes([word[0], word[1]]));
    }
    if let [last] = words.remainder() {
        acc += u64::from(*last) << 8;
    }
    acc
}

/// Folds a sum into 16 bits with end-around carry.
pub fn fold(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// The checksum of `data`: the complement of its folded sum.
pub fn checksum(data: &[u8]) -> u16 {
    !fold(sum(data, 0))
}

/// The sum of the IPv4 pseudo-header TCP and UDP checksums start from.
pub fn pseudo_header(src: [u8; 4], dst: [u8; 4], protocol: u8, length: u16) -> u64 {
    sum(&src, 0) + sum(&dst, 0) + u64::from(protocol) + u64::from(length)
}

/// RFC 1624 eqn. 3: the checksum after one 16-bit word it covers changed from `old` to `new`,
/// `HC' = ~(~HC + ~m + m')`.
pub fn update16(check: u16, old: u16, new: u16) -> u16 {
    !fold(u64::from(!check) + u64::from(!old) + u64::from(new))
}

/// The same for a 32-bit value (an IPv4 address): two words.
pub fn update32(check: u16, old: u32, new: u32) -> u16 {
    let check = update16(check, (old >> 16) as u16, (new >> 16) as u16);
    update16(check, old as u16, new as u16)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hashing::SplitMix64;

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3: the words 0001 f203 f4f5 f6f7 sum to ddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum(&data, 0)), 0xddf2);
        assert_eq!(checksum(&data), !0xddf2);
        // An odd length pads with a zero byte.
        assert_eq!(fold(sum(&[0x12], 0)), 0x1200);
    }

    #[test]
    fn a_known_ipv4_header_verifies() {
        // A header captured from the wire (checksum b1e6), from the Wikipedia example.
        let header = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8,
            0x00, 0xc7,
        ];
        assert_eq!(fold(sum(&header, 0)), 0xffff);
        let mut zeroed = header;
        zeroed[10..12].fill(0);
        assert_eq!(checksum(&zeroed), 0xb861);
    }

    /// An incremental update agrees with recomputing the checksum, for random data and changes.
    #[test]
    fn incremental_update_matches_recomputation() {
        let mut rng = SplitMix64::new(1624);
        for _ in 0..20_000 {
            let len = (4 + (rng.next_u64() % 60) as usize) & !1;
            let mut data: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
            // Edge values matter most: all-zero and all-one words.
            if rng.next_u64().is_multiple_of(8) {
                data.iter_mut().for_each(|b| *b = 0);
            } else if rng.next_u64().is_multiple_of(8) {
                data.iter_mut().for_each(|b| *b = 0xff);
            }
            let check = checksum(&data);
            let at = (rng.next_u64() as usize % (len / 2)) * 2;
            let old = u16::from_be_bytes([data[at], data[at + 1]]);
            let new = match rng.next_u64() % 4 {
                0 => 0,
                1 => 0xffff,
                _ => rng.next_u64() as u16,
            };
            data[at..at + 2].copy_from_slice(&new.to_be_bytes());
            let updated = update16(check, old, new);
            let recomputed = checksum(&data);
            // 0x0000 and 0xffff are the same one's-complement value (+0 and -0); either verifies.
            let canonical = |c: u16| if c == 0xffff { 0 } else { c };
            assert_eq!(canonical(updated), canonical(recomputed), "{data:?}");
            // What matters on the wire: the data with the updated field verifies. (All-zero data
            // sums to +0, which no real packet does: its pseudo-header alone is non-zero.)
            if data.iter().all(|b| *b == 0) {
                continue;
            }
            let mut with_field = data.clone();
            with_field.extend_from_slice(&updated.to_be_bytes());
            assert_eq!(fold(sum(&with_field, 0)), 0xffff, "{data:?}");
        }
    }

    #[test]
    fn update32_is_two_word_updates() {
        let mut data = [10, 0, 0, 1, 198, 18, 0, 7, 0x12, 0x34];
        let check = checksum(&data);
        let old = u32::from_be_bytes([data[0], data[1], data[2], data[3]]);
        let new = u32::from_be_bytes([198, 19, 0, 11]);
        data[..4].copy_from_slice(&new.to_be_bytes());
        let mut with_field = data.to_vec();
        with_field.extend_from_slice(&update32(check, old, new).to_be_bytes());
        assert_eq!(fold(sum(&with_field, 0)), 0xffff);
    }
}
