//! The domain: what an approval is, what the owner is asked, and what money is at stake.
//!
//! OpenTrain's enums are only partly documented, so unknown status values are kept and shown raw
//! rather than rejected; unknown approval *types* are refused at intake, because countersign could
//! not say in words what the owner is being asked to sign.

use std::fmt;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// An OpenTrain approval id. Opaque upstream; countersign accepts only ids that are safe as one
/// URL path segment, so a hostile id can never reshape the link or the API path.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct ApprovalId(String);

impl ApprovalId {
    pub const MAX_LEN: usize = 128;

    pub fn parse(s: &str) -> Result<ApprovalId, String> {
        if s.is_empty() || s.len() > Self::MAX_LEN {
            return Err(format!(
                "approval id must be 1 to {} characters",
                Self::MAX_LEN
            ));
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err("approval id may contain only letters, digits, '_' and '-'".into());
        }
        Ok(ApprovalId(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ApprovalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What the owner is asked to sign.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    ProposalHire,
    MilestoneFund,
    MilestoneApprove,
    ContractEnd,
}

impl Kind {
    pub fn parse(s: &str) -> Option<Kind> {
        Some(match s {
            "proposal_hire" => Kind::ProposalHire,
            "milestone_fund" => Kind::MilestoneFund,
            "milestone_approve" => Kind::MilestoneApprove,
            "contract_end" => Kind::ContractEnd,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::ProposalHire => "proposal_hire",
            Kind::MilestoneFund => "milestone_fund",
            Kind::MilestoneApprove => "milestone_approve",
            Kind::ContractEnd => "contract_end",
        }
    }

    /// The request in words, as the owner reads it.
    pub fn headline(self) -> &'static str {
        match self {
            Kind::ProposalHire => "Hire",
            Kind::MilestoneFund => "Fund milestone",
            Kind::MilestoneApprove => "Release milestone payment",
            Kind::ContractEnd => "End contract",
        }
    }
}

/// countersign's view of an approval's life. `Verifying` and `Rejected` are countersign's own
/// (before and instead of OpenTrain's answer); `Superseded` is set when a newer hire request for
/// the same proposal arrives; the rest mirror OpenTrain, with unknown values kept raw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Verifying,
    Pending,
    Confirmed,
    Declined,
    Expired,
    Superseded,
    Rejected,
    Other(String),
}

impl Status {
    pub fn parse(s: &str) -> Status {
        match s {
            "verifying" => Status::Verifying,
            "pending" => Status::Pending,
            "confirmed" => Status::Confirmed,
            "declined" => Status::Declined,
            "expired" => Status::Expired,
            "superseded" => Status::Superseded,
            "rejected" => Status::Rejected,
            other => Status::Other(other.to_string()),
        }
    }

    /// A status as OpenTrain reported it. countersign's own words (`verifying`, `rejected`) are
    /// not OpenTrain's to use, so they are kept raw if it ever sends them.
    pub fn from_upstream(s: Option<&str>) -> Status {
        match s {
            None => Status::Pending,
            Some(raw @ ("verifying" | "rejected")) => Status::Other(raw.to_string()),
            Some(s) => Status::parse(s),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Status::Verifying => "verifying",
            Status::Pending => "pending",
            Status::Confirmed => "confirmed",
            Status::Declined => "declined",
            Status::Expired => "expired",
            Status::Superseded => "superseded",
            Status::Rejected => "rejected",
            Status::Other(s) => s,
        }
    }

    /// Whether nothing more will happen to the approval. An unknown status counts as terminal
    /// only when OpenTrain also says it was resolved (`resolvedAt` set).
    pub fn is_terminal(&self, resolved: bool) -> bool {
        match self {
            Status::Verifying | Status::Pending => false,
            Status::Confirmed
            | Status::Declined
            | Status::Expired
            | Status::Superseded
            | Status::Rejected => true,
            Status::Other(_) => resolved,
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// US dollars, exact. OpenTrain sends amounts as JSON numbers (`300`, `0.06`); they are kept as
/// decimals, never as floats, and shown as `$300.00`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Usd(Decimal);

impl Usd {
    /// From a JSON number as OpenTrain or an agent wrote it.
    pub fn from_json(v: &serde_json::Value) -> Option<Usd> {
        let n = v.as_number()?;
        let text = n.to_string();
        let d = Decimal::from_str_exact(&text)
            .or_else(|_| Decimal::from_scientific(&text))
            .ok()?;
        Some(Usd(d))
    }

    pub fn from_cents(cents: i64) -> Usd {
        Usd(Decimal::new(cents, 2))
    }

    pub fn is_negative(self) -> bool {
        self.0.is_sign_negative() && !self.0.is_zero()
    }

    pub fn checked_add(self, other: Usd) -> Option<Usd> {
        self.0.checked_add(other.0).map(Usd)
    }

    /// `percent`% of this amount.
    pub fn percent(self, percent: u32) -> Option<Usd> {
        self.0
            .checked_mul(Decimal::from(percent))
            .and_then(|d| d.checked_div(Decimal::from(100)))
            .map(Usd)
    }

    pub fn as_decimal(self) -> Decimal {
        self.0
    }
}

impl fmt::Display for Usd {
    /// `$450.00`; amounts below a cent keep their digits (`$0.065`), since per-label rates are
    /// that small and rounding them would misstate the price.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0.normalize();
        let sign = if d.is_sign_negative() && !d.is_zero() {
            "-"
        } else {
            ""
        };
        let abs = d.abs();
        let text = if abs.scale() <= 2 {
            let mut r = abs;
            r.rescale(2);
            r.to_string()
        } else {
            abs.to_string()
        };
        // Group thousands in the integer part: $12,500.00.
        let (int, frac) = text.split_once('.').unwrap_or((&text, ""));
        let mut grouped = String::new();
        for (i, c) in int.chars().enumerate() {
            if i > 0 && (int.len() - i) % 3 == 0 {
                grouped.push(',');
            }
            grouped.push(c);
        }
        if frac.is_empty() {
            write!(f, "{sign}${grouped}")
        } else {
            write!(f, "{sign}${grouped}.{frac}")
        }
    }
}

/// The approval object as OpenTrain serialises it (`GET /approvals/{id}` and the 202 bodies).
/// Every field but `id` and `type` is optional here: what matters is validated explicitly, and
/// an approval is always read back from OpenTrain before anything is shown.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WireApproval {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub contract_id: Option<String>,
    #[serde(default)]
    pub milestone_id: Option<String>,
    #[serde(default)]
    pub job_id: Option<String>,
    #[serde(default)]
    pub proposal_id: Option<String>,
    #[serde(default)]
    pub approval_url: Option<String>,
    #[serde(default)]
    pub expires_at: Option<String>,
    #[serde(default)]
    pub resolved_at: Option<String>,
    #[serde(default)]
    pub result: Option<serde_json::Value>,
    #[serde(default)]
    pub created_at: Option<String>,
}

impl WireApproval {
    pub fn expires_at(&self) -> Option<DateTime<Utc>> {
        parse_time(self.expires_at.as_deref()?)
    }
    pub fn resolved_at(&self) -> Option<DateTime<Utc>> {
        parse_time(self.resolved_at.as_deref()?)
    }
    pub fn created_at(&self) -> Option<DateTime<Utc>> {
        parse_time(self.created_at.as_deref()?)
    }
}

pub fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// The milestone terms an agent says it requested when hiring: no OpenTrain read endpoint returns
/// them, so they are shown as the agent's request, never as OpenTrain's.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RequestedMilestone {
    pub name: Option<String>,
    pub description: Option<String>,
    /// Exact decimal text of the amount the agent sent, e.g. "450" or "0.06".
    pub amount: Option<String>,
    pub due_date: Option<String>,
}

/// What the agent said alongside the approval. All of it is untrusted text.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct AgentContext {
    pub agent: Option<String>,
    pub note: Option<String>,
    pub milestone: Option<RequestedMilestone>,
}

/// The money context fetched from OpenTrain after verification (contract or proposal).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct MoneyContext {
    /// Exact decimal text of the amount at stake according to OpenTrain, when it says.
    pub amount: Option<String>,
    pub contract_title: Option<String>,
    pub job_title: Option<String>,
    pub milestone_name: Option<String>,
    pub milestone_due: Option<String>,
    pub trainer: Option<String>,
    /// e.g. "$0.06 per label" for a hire's bid.
    pub bid: Option<String>,
    /// For contract_end: how many funded milestones are at stake.
    pub funded_milestones: Option<u32>,
    /// Something OpenTrain did not have (a milestone missing from the contract, say).
    pub missing: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usd(v: serde_json::Value) -> String {
        Usd::from_json(&v).unwrap().to_string()
    }

    #[test]
    fn money_is_shown_with_two_decimals_and_exactly() {
        assert_eq!(usd(serde_json::json!(450)), "$450.00");
        assert_eq!(usd(serde_json::json!(300.5)), "$300.50");
        assert_eq!(usd(serde_json::json!(0.06)), "$0.06");
        assert_eq!(usd(serde_json::json!(0.065)), "$0.065");
        assert_eq!(usd(serde_json::json!(12500)), "$12,500.00");
        assert_eq!(usd(serde_json::json!(1234567.891)), "$1,234,567.891");
        assert_eq!(Usd::from_cents(-995).to_string(), "-$9.95");
    }

    #[test]
    fn approval_ids_are_single_safe_path_segments() {
        assert!(ApprovalId::parse("apr_12-AB").is_ok());
        for bad in ["", "a/b", "..", "a b", "a?b", "a%2F", "é"] {
            assert!(ApprovalId::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(ApprovalId::parse(&"a".repeat(129)).is_err());
    }

    #[test]
    fn unknown_statuses_are_kept_raw_and_terminal_only_when_resolved() {
        let s = Status::parse("on_hold");
        assert_eq!(s.as_str(), "on_hold");
        assert!(!s.is_terminal(false));
        assert!(s.is_terminal(true));
        assert!(Status::parse("declined").is_terminal(false));
    }
}
