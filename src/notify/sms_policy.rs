//! The SMS policy: which numbers may be texted and how many texts may go out, so that an
//! anonymous client cannot run up the SMS bill (SMS pumping: accounts registered on
//! premium or foreign numbers, then codes asked for them).
//!
//! Three budgets, all GCRA rules on the shared rate limiter (so Redis makes them hold
//! across instances): the whole deployment per hour and per day, and per number range
//! (the first `SMS_PREFIX_DIGITS` digits, where pumping concentrates). Numbers outside
//! `SMS_ALLOWED_COUNTRIES` are never texted. A refusal is silent to the client — the code
//! goes by email instead and the API answers the same — and loud to the operator: a
//! warning in the log and `gatehouse_sms_refused_total{reason}`.

use crate::config::SmsPolicy;
use crate::limit::RateLimiter;

/// Why a text was not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Country,
    Prefix,
    Hour,
    Day,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Country => "country",
            Refusal::Prefix => "prefix",
            Refusal::Hour => "hourly_budget",
            Refusal::Day => "daily_budget",
        }
    }
}

/// Whether `phone` (E.164, `+digits`) is in one of the allowed countries. Calling codes
/// are prefix-free, so a prefix match is exact.
pub fn country_allowed(policy: &SmsPolicy, phone: &str) -> bool {
    let digits = phone.trim_start_matches('+');
    let mut allowed = policy
        .sms_allowed_countries
        .iter()
        .filter(|c| !c.is_empty())
        .peekable();
    allowed.peek().is_none() || allowed.any(|code| digits.starts_with(code.as_str()))
}

/// Takes one text from every budget that applies to `phone`, or says which refused.
/// The budgets are checked narrowest first, so a flood at one number range spends only
/// that range's budget, not the deployment's.
pub async fn take(
    policy: &SmsPolicy,
    limiter: &dyn RateLimiter,
    phone: &str,
) -> Result<(), Refusal> {
    if !country_allowed(policy, phone) {
        return refused(Refusal::Country, phone);
    }
    let digits = phone.trim_start_matches('+');
    let prefix: String = digits
        .chars()
        .take(usize::from(policy.sms_prefix_digits))
        .collect();
    let budgets = [
        (
            Refusal::Prefix,
            &policy.sms_budget_per_prefix,
            format!("sms:prefix:{prefix}"),
        ),
        (
            Refusal::Hour,
            &policy.sms_budget_per_hour,
            "sms:all:hour".to_owned(),
        ),
        (
            Refusal::Day,
            &policy.sms_budget_per_day,
            "sms:all:day".to_owned(),
        ),
    ];
    for (refusal, rule, key) in budgets {
        if limiter.check(rule, &key).await.is_err() {
            return refused(refusal, phone);
        }
    }
    Ok(())
}

fn refused(refusal: Refusal, phone: &str) -> Result<(), Refusal> {
    metrics::counter!("gatehouse_sms_refused_total", "reason" => refusal.as_str()).increment(1);
    // The number range, never the whole number: enough to see where pumping comes from.
    let range: String = phone.chars().take(5).collect();
    tracing::warn!(
        reason = refusal.as_str(),
        range = %format!("{range}…"),
        "SMS not sent: outside the SMS policy; the code goes by email"
    );
    Err(refusal)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limit::memory::MemoryLimiter;

    fn policy(countries: &[&str], hour: &str, prefix: &str) -> SmsPolicy {
        SmsPolicy {
            sms_budget_per_hour: hour.parse().unwrap(),
            sms_budget_per_day: "1000/1d".parse().unwrap(),
            sms_budget_per_prefix: prefix.parse().unwrap(),
            sms_prefix_digits: 6,
            sms_allowed_countries: countries.iter().map(|c| c.to_string()).collect(),
        }
    }

    #[test]
    fn an_empty_allowlist_allows_every_country() {
        assert!(country_allowed(&policy(&[], "1/1h", "1/1h"), "+8821234567"));
        assert!(country_allowed(
            &policy(&[""], "1/1h", "1/1h"),
            "+8821234567"
        ));
    }

    #[test]
    fn the_allowlist_matches_calling_codes() {
        let p = policy(&["1", "44"], "1/1h", "1/1h");
        assert!(country_allowed(&p, "+14155550100"));
        assert!(country_allowed(&p, "+447700900123"));
        assert!(!country_allowed(&p, "+8821234567"));
        assert!(!country_allowed(&p, "+4915112345678"));
    }

    #[tokio::test]
    async fn a_number_range_runs_out_before_the_deployment_does() {
        let p = policy(&[], "10/1h", "2/1h");
        let limiter = MemoryLimiter::default();
        assert!(take(&p, &limiter, "+447700900001").await.is_ok());
        assert!(take(&p, &limiter, "+447700900002").await.is_ok());
        assert_eq!(
            take(&p, &limiter, "+447700900003").await,
            Err(Refusal::Prefix)
        );
        assert!(take(&p, &limiter, "+14155550100").await.is_ok());
    }

    #[tokio::test]
    async fn the_hourly_budget_covers_every_range() {
        let p = policy(&[], "3/1h", "10/1h");
        let limiter = MemoryLimiter::default();
        for n in ["+14155550100", "+447700900001", "+33612345678"] {
            assert!(take(&p, &limiter, n).await.is_ok());
        }
        assert_eq!(
            take(&p, &limiter, "+4915112345678").await,
            Err(Refusal::Hour)
        );
    }
}
