//! OpenTrain webhook signatures: `X-OpenTrain-Signature: t=<unix seconds>,v1=<hex>`, where each
//! `v1` is HMAC-SHA256(secret, "<t>.<raw body>"). Pure and total: any header, any body, any
//! clock gives an answer, never a panic.
//!
//! Checked on the raw bytes before anything parses them; compared in constant time (the `hmac`
//! crate's `verify_slice`); accepted if any `v1` matches any configured secret (rotation); the
//! timestamp must lie within the tolerance on either side of now.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// OpenTrain's suggested tolerance, applied both ways (a sender's clock may run ahead).
pub const TOLERANCE_SECS: i64 = 300;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the X-OpenTrain-Signature header is missing")]
    Missing,
    #[error("the X-OpenTrain-Signature header has no valid t=<unix seconds>")]
    NoTimestamp,
    #[error("the X-OpenTrain-Signature header has no v1=<64 hex digits>")]
    NoSignature,
    #[error("the signature's timestamp is {0} s away from now (more than {TOLERANCE_SECS} s)")]
    Stale(i64),
    #[error("no v1 signature matches the body")]
    Mismatch,
}

/// The parts of a signature header: the timestamp as sent (the signed text uses it verbatim)
/// and every well-formed `v1` digest.
#[derive(Debug, PartialEq, Eq)]
pub struct Header<'a> {
    pub t_text: &'a str,
    pub t: i64,
    pub v1: Vec<[u8; 32]>,
}

pub fn parse(header: &str) -> Result<Header<'_>, SignatureError> {
    let mut t = None;
    let mut v1 = Vec::new();
    for part in header.split(',') {
        let Some((key, value)) = part.trim().split_once('=') else {
            continue;
        };
        match key.trim() {
            "t" => {
                let text = value.trim();
                let parsed = (!text.is_empty()
                    && text.len() <= 12
                    && text.bytes().all(|b| b.is_ascii_digit()))
                .then(|| text.parse::<i64>().ok())
                .flatten();
                match (t, parsed) {
                    // Two different timestamps: ambiguous, refuse.
                    (Some((_, old)), Some(new)) if old != new => {
                        return Err(SignatureError::NoTimestamp);
                    }
                    (_, Some(n)) => t = Some((text, n)),
                    (_, None) => return Err(SignatureError::NoTimestamp),
                }
            }
            "v1" => {
                let mut digest = [0u8; 32];
                if hex::decode_to_slice(value.trim(), &mut digest).is_ok() {
                    v1.push(digest);
                }
            }
            // Unknown schemes (a future v2, say) are ignored, as with Stripe-style headers.
            _ => {}
        }
    }
    let (t_text, t) = t.ok_or(SignatureError::NoTimestamp)?;
    if v1.is_empty() {
        return Err(SignatureError::NoSignature);
    }
    Ok(Header { t_text, t, v1 })
}

/// Verifies `header` for `body` against any of `secrets` at `now` (unix seconds).
pub fn verify(
    secrets: &[&[u8]],
    header: Option<&str>,
    body: &[u8],
    now: i64,
) -> Result<(), SignatureError> {
    let header = parse(header.ok_or(SignatureError::Missing)?)?;
    let age = now.saturating_sub(header.t);
    if age.saturating_abs() > TOLERANCE_SECS {
        return Err(SignatureError::Stale(age));
    }
    for secret in secrets {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
            continue;
        };
        mac.update(header.t_text.as_bytes());
        mac.update(b".");
        mac.update(body);
        for digest in &header.v1 {
            if mac.clone().verify_slice(digest).is_ok() {
                return Ok(());
            }
        }
    }
    Err(SignatureError::Mismatch)
}

/// Signs like OpenTrain does (for tests and tools).
pub fn sign(secret: &[u8], t: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"whsec_test";
    const BODY: &[u8] = br#"{"id":"1043","type":"approval.confirmed"}"#;

    #[test]
    fn a_fresh_correct_signature_verifies() {
        let h = sign(SECRET, 1_000_000, BODY);
        assert_eq!(verify(&[SECRET], Some(&h), BODY, 1_000_100), Ok(()));
        // Clock skew both ways within the tolerance.
        assert_eq!(verify(&[SECRET], Some(&h), BODY, 1_000_000 - 300), Ok(()));
    }

    #[test]
    fn a_stale_or_future_signature_is_refused() {
        let h = sign(SECRET, 1_000_000, BODY);
        assert_eq!(
            verify(&[SECRET], Some(&h), BODY, 1_000_301),
            Err(SignatureError::Stale(301))
        );
        assert_eq!(
            verify(&[SECRET], Some(&h), BODY, 999_699),
            Err(SignatureError::Stale(-301))
        );
    }

    #[test]
    fn any_v1_and_any_secret_may_match() {
        let good = sign(SECRET, 10, BODY);
        let v1 = good.split("v1=").nth(1).unwrap();
        let h = format!("t=10,v1={},v1={v1}", "0".repeat(64));
        assert_eq!(verify(&[b"old-secret", SECRET], Some(&h), BODY, 10), Ok(()));
    }

    #[test]
    fn a_changed_body_or_wrong_secret_is_refused() {
        let h = sign(SECRET, 10, BODY);
        assert_eq!(
            verify(&[SECRET], Some(&h), b"{}", 10),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(&[b"other"], Some(&h), BODY, 10),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn malformed_headers_say_what_is_wrong() {
        assert_eq!(
            verify(&[SECRET], None, BODY, 0),
            Err(SignatureError::Missing)
        );
        assert_eq!(parse("v1=00").unwrap_err(), SignatureError::NoTimestamp);
        assert_eq!(
            parse("t=abc,v1=00").unwrap_err(),
            SignatureError::NoTimestamp
        );
        assert_eq!(
            parse("t=1,t=2,v1=00").unwrap_err(),
            SignatureError::NoTimestamp
        );
        assert_eq!(parse("t=1,v1=zz").unwrap_err(), SignatureError::NoSignature);
        assert_eq!(parse("t=1").unwrap_err(), SignatureError::NoSignature);
        assert_eq!(
            parse("t=99999999999999999999,v1=00").unwrap_err(),
            SignatureError::NoTimestamp
        );
    }
}
