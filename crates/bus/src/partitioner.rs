//! Kafka's default partitioner (murmur2 of the key, as the Java client computes it), so that
//! onlychat and any Java or librdkafka `murmur2` producer put a room on the same partition.

/// Kafka's murmur2 hash of `data`.
fn murmur2(data: &[u8]) -> u32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h = SEED ^ u32::try_from(data.len()).unwrap_or(u32::MAX);
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if let Some(&first) = tail.first() {
        h ^= u32::from(first);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

/// The partition of `key` among `partitions` (Java: `toPositive(murmur2(key)) % partitions`).
pub fn partition_for(key: &str, partitions: i32) -> i32 {
    let positive = murmur2(key.as_bytes()) & 0x7fff_ffff;
    let n = u32::try_from(partitions.max(1)).unwrap_or(1);
    i32::try_from(positive % n).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_the_java_client() {
        // Vectors from Kafka's UtilsTest.testMurmur2 (signed ints there).
        assert_eq!(murmur2(b"21") as i32, -973_932_308);
        assert_eq!(murmur2(b"foobar") as i32, -790_332_482);
        assert_eq!(murmur2(b"a-little-bit-long-string") as i32, -985_981_536);
        assert_eq!(
            murmur2(b"a-little-bit-longer-string") as i32,
            -1_486_304_829
        );
        assert_eq!(
            murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8") as i32,
            -58_897_971
        );
    }

    #[test]
    fn a_room_always_maps_to_the_same_partition() {
        assert_eq!(partition_for("lobby", 12), partition_for("lobby", 12));
        assert!((0..12).contains(&partition_for("lobby", 12)));
        assert_eq!(partition_for("anything", 1), 0);
    }
}
