//! Purge request signatures: `X-Mizan-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(k_purge,
//! t + "." + body)>`, accepted within ±300 s, compared in constant time, each signature
//! accepted once.

use super::{CacheError, Keys};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::collections::HashMap;
use std::sync::Mutex;

/// How far a signature's time may be from ours, in seconds.
pub const WINDOW_S: u64 = 300;

fn mac(keys: &Keys, t: u64, body: &[u8]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(keys.purge_key()).expect("HMAC takes keys of any length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The `X-Mizan-Signature` value for `body` at unix time `t`.
pub fn sign(keys: &Keys, t: u64, body: &[u8]) -> String {
    format!("t={t},v1={}", hex::encode(mac(keys, t, body).finalize().into_bytes()))
}

/// Checks purge signatures and remembers the accepted ones until they leave the window.
pub struct Verifier {
    keys: Keys,
    seen: Mutex<HashMap<[u8; 32], u64>>,
}

impl Verifier {
    /// A verifier for signatures made with `keys`' purge key.
    pub fn new(keys: Keys) -> Self {
        Self { keys, seen: Mutex::new(HashMap::new()) }
    }

    /// Accepts `header` for `body` at unix time `now`, or says why not. Nothing about the
    /// expected signature leaks through the error or the timing.
    pub fn verify(&self, header: Option<&str>, body: &[u8], now: u64) -> Result<(), CacheError> {
        let header = header.ok_or(CacheError::Signature("missing X-Mizan-Signature"))?;
        let (mut t, mut v1) = (None, None);
        for part in header.split(',') {
            match part.trim().split_once('=') {
                Some(("t", value)) if value.bytes().all(|b| b.is_ascii_digit()) => t = value.parse::<u64>().ok(),
                Some(("v1", value)) => v1 = hex::decode(value).ok().filter(|v| v.len() == 32),
                _ => {}
            }
        }
        let (Some(t), Some(v1)) = (t, v1) else { return Err(CacheError::Signature("malformed X-Mizan-Signature")) };
        if now.abs_diff(t) > WINDOW_S {
            return Err(CacheError::Signature("timestamp outside the ±300 s window"));
        }
        mac(&self.keys, t, body).verify_slice(&v1).map_err(|_| CacheError::Signature("signature does not match"))?;
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.retain(|_, at| now.abs_diff(*at) <= WINDOW_S);
        let id: [u8; 32] = v1.try_into().map_err(|_| CacheError::Signature("malformed X-Mizan-Signature"))?;
        if seen.insert(id, t).is_some() {
            return Err(CacheError::Signature("signature already used (replay)"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Keys {
        Keys::from_secret(&[9; 32], false).unwrap()
    }

    #[test]
    fn accepts_a_fresh_signature_once() {
        let v = Verifier::new(keys());
        let body = br#"{"purge":[{"context":"product_list","params":{}}]}"#;
        let header = sign(&keys(), 1_000, body);
        v.verify(Some(&header), body, 1_100).unwrap();
        assert_eq!(
            v.verify(Some(&header), body, 1_100).unwrap_err().to_string(),
            "signature refused: signature already used (replay)"
        );
    }

    #[test]
    fn refuses_forged_stale_and_malformed_signatures() {
        let v = Verifier::new(keys());
        let body = b"{}";
        let good = sign(&keys(), 1_000, body);
        let other = Keys::from_secret(&[8; 32], false).unwrap();
        let cases = [
            (None, "missing X-Mizan-Signature"),
            (Some("t=1000".to_string()), "malformed X-Mizan-Signature"),
            (Some("v1=00".to_string()), "malformed X-Mizan-Signature"),
            (Some(sign(&other, 1_000, body)), "signature does not match"),
            (Some(sign(&keys(), 1_000, b"{ }")), "signature does not match"),
            (Some(good.replace("t=1000", "t=1001")), "signature does not match"),
            (Some(sign(&keys(), 1_301, body)), "timestamp outside the ±300 s window"),
            (Some(sign(&keys(), 699, body)), "timestamp outside the ±300 s window"),
        ];
        for (header, why) in cases {
            let err = v.verify(header.as_deref(), body, 1_000).unwrap_err();
            assert_eq!(err.to_string(), format!("signature refused: {why}"), "{header:?}");
        }
        v.verify(Some(&sign(&keys(), 1_300, body)), body, 1_000).unwrap();
        v.verify(Some(&sign(&keys(), 700, body)), body, 1_000).unwrap();
    }
}
