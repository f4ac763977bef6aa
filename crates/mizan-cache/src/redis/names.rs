//! The Redis names of one site's keys, and which hash slot each lands in.
//!
//! A Redis Cluster runs a script only on keys of one hash slot, so every key carries a hash
//! tag (`{…}`: only the text inside it picks the slot) that groups the keys one script
//! touches. Two kinds of slot per site:
//!
//! - the site's own, `{<site>}`: the canonical generations `mz1:{<site>}:g:<tag>` (read by
//!   every render in one `MGET`, moved by a purge's first call) and the purge log
//!   ([`super::log`]);
//! - one per bucket, `{<site>/<b>}` for `b` in `0..`[`BUCKETS`]: every key of the entries of
//!   that bucket (entry, soft mark, tag list, render lock, last fence, a put's staged value)
//!   and the bucket's own tag
//!   sets and generations, so that a put, a remove and each call of a purge's walk touch one
//!   slot.
//!
//! The same names on one server: one layout, whatever the URL.

/// How many buckets a site's entries are spread over: enough that the buckets' slots spread
/// over the masters of a cluster of a few shards (16 tags land on all three masters of a
/// 3-master cluster for most site names), few enough that a purge's 16 walks, one per bucket,
/// cost little more than one. Changing it moves every entry to other keys: all nodes of a
/// site must agree on it.
pub const BUCKETS: usize = 16;

/// The bucket of a protocol key: for the node's keys, `mz1:p:<hex>` and `mz1:d:<hex>` (an
/// HMAC, uniform), its first four hex digits modulo [`BUCKETS`]; any other key (tests and tools
/// write them) by the FNV-1a hash of the whole key.
pub fn bucket(key: &str) -> usize {
    let local = key.strip_prefix("mz1:").unwrap_or(key);
    let digest = local.strip_prefix("p:").or_else(|| local.strip_prefix("d:"));
    if let Some(hex) = digest.and_then(|d| d.get(..4))
        && let Ok(n) = u16::from_str_radix(hex, 16)
        && hex.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return n as usize % BUCKETS;
    }
    let fnv = key.bytes().fold(0x811c_9dc5_u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193));
    fnv as usize % BUCKETS
}

/// The Redis names of one site's keys.
pub(super) struct Names {
    /// `mz1:{<site>}:`, the site slot's prefix.
    site: String,
    /// `mz1:{<site>/<b>}:` for each bucket `b`.
    buckets: Vec<String>,
}

impl Names {
    /// The names of `site` (already checked: `[A-Za-z0-9_.-]+`, so it holds no `{`, `}`, `/`
    /// or `:` and no two sites' prefixes overlap).
    pub(super) fn new(site: &str) -> Self {
        Self {
            site: format!("mz1:{{{site}}}:"),
            buckets: (0..BUCKETS).map(|b| format!("mz1:{{{site}/{b}}}:")).collect(),
        }
    }

    /// A tag's canonical generation, in the site slot.
    pub(super) fn generation(&self, tag: &str) -> String {
        format!("{}g:{tag}", self.site)
    }

    /// Bucket `b`'s prefix `mz1:{<site>/<b>}:`.
    pub(super) fn prefix(&self, b: usize) -> &str {
        &self.buckets[b % BUCKETS]
    }

    /// Bucket `b`'s generation of a tag: at least that of the last purge whose walk reached
    /// the bucket.
    pub(super) fn bucket_generation(&self, b: usize, tag: &str) -> String {
        format!("{}g:{tag}", self.prefix(b))
    }

    /// Bucket `b`'s set of the entries carrying a tag.
    pub(super) fn tag(&self, b: usize, tag: &str) -> String {
        format!("{}t:{tag}", self.prefix(b))
    }

    /// Bucket `b`'s fence counter.
    pub(super) fn fence_counter(&self, b: usize) -> String {
        format!("{}f", self.prefix(b))
    }

    /// `<kind><k>` in the key's bucket, `<k>` the key without its `mz1:` (`p:<hex>`).
    fn of(&self, kind: &str, key: &str) -> String {
        let local = key.strip_prefix("mz1:").unwrap_or(key);
        format!("{}{kind}{local}", self.prefix(bucket(key)))
    }

    /// The entry.
    pub(super) fn entry(&self, key: &str) -> String {
        self.of("", key)
    }

    /// The entry's soft-purge mark.
    pub(super) fn stale(&self, key: &str) -> String {
        self.of("s:", key)
    }

    /// The entry's tag list.
    pub(super) fn tag_list(&self, key: &str) -> String {
        self.of("k:", key)
    }

    /// The page's render lock.
    pub(super) fn lock(&self, key: &str) -> String {
        self.of("l:", key)
    }

    /// The fence of the last fenced write of the key.
    pub(super) fn written(&self, key: &str) -> String {
        self.of("w:", key)
    }

    /// Where one put stages the entry before its script renames it into place (`nonce`:
    /// unique per put, so two puts of one key never share it).
    pub(super) fn staged(&self, key: &str, nonce: &str) -> String {
        format!("{}:{nonce}", self.of("u:", key))
    }
}

#[cfg(test)]
mod tests {
    use super::{BUCKETS, bucket};

    #[test]
    fn keys_of_any_form_have_a_bucket_and_digests_spread_over_all() {
        // Short, non-hex and foreign keys still get a stable bucket.
        for key in ["k1", "mz1:p:", "mz1:p:zz99", "mz1:p:12", "page"] {
            assert!(bucket(key) < BUCKETS);
            assert_eq!(bucket(key), bucket(key));
        }
        let seen: std::collections::BTreeSet<usize> = (0..BUCKETS).map(|i| bucket(&format!("mz1:p:{i:04x}"))).collect();
        assert_eq!(seen.len(), BUCKETS);
    }

    /// Redis Cluster's key slot: CRC16 (XMODEM) of the hash tag, modulo 16384.
    fn slot(tag: &str) -> u16 {
        let crc = tag.bytes().fold(0u16, |mut crc, b| {
            crc ^= u16::from(b) << 8;
            for _ in 0..8 {
                crc = if crc & 0x8000 != 0 { (crc << 1) ^ 0x1021 } else { crc << 1 };
            }
            crc
        });
        crc % 16384
    }

    /// The buckets' slots of a few sites spread over the three masters `redis-cli --cluster
    /// create` makes of three nodes (slots 0–5460, 5461–10922, 10923–16383).
    #[test]
    fn the_buckets_of_a_site_spread_over_three_masters() {
        assert_eq!(slot("123456789"), 0x31c3, "CRC16/XMODEM's check value");
        for site in ["shop", "blog", "conformance", "cluster"] {
            let mut per_master = [0; 3];
            for b in 0..BUCKETS {
                per_master[match slot(&format!("{site}/{b}")) {
                    0..=5460 => 0,
                    5461..=10922 => 1,
                    _ => 2,
                }] += 1;
            }
            assert!(per_master.iter().all(|n| *n >= 3), "{site}: {per_master:?}");
        }
    }
}
