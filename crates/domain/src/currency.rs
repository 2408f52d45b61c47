//! Currencies: ISO 4217 codes and their minor units.
//!
//! Money in this API is an exact decimal in a campaign's currency; the
//! currency's *minor units* (2 for EUR and USD, 0 for JPY, 3 for KWD) say how
//! many decimals a payment in it has. Amounts here may carry more (ad
//! platforms report spend in micro-units, Google Ads' `cost_micros`): they are
//! kept exact and never rounded to the minor unit, which is the client's
//! choice when it pays or displays.

use serde::{Deserialize, Deserializer, Serialize};
use std::fmt;

/// Every active ISO 4217 currency with its minor units: the codes of the
/// iso-codes 4.15 list (Debian's `iso-codes`, `iso_4217.json`), less the
/// precious metals, the bond-market units, SDRs and the test and "no
/// currency" codes, which have no minor units and no place in ad spend.
/// Sorted by code (looked up by binary search).
const ISO_4217: &[(&str, u8)] = &[
    ("AED", 2),
    ("AFN", 2),
    ("ALL", 2),
    ("AMD", 2),
    ("ANG", 2),
    ("AOA", 2),
    ("ARS", 2),
    ("AUD", 2),
    ("AWG", 2),
    ("AZN", 2),
    ("BAM", 2),
    ("BBD", 2),
    ("BDT", 2),
    ("BGN", 2),
    ("BHD", 3),
    ("BIF", 0),
    ("BMD", 2),
    ("BND", 2),
    ("BOB", 2),
    ("BOV", 2),
    ("BRL", 2),
    ("BSD", 2),
    ("BTN", 2),
    ("BWP", 2),
    ("BYN", 2),
    ("BZD", 2),
    ("CAD", 2),
    ("CDF", 2),
    ("CHE", 2),
    ("CHF", 2),
    ("CHW", 2),
    ("CLF", 4),
    ("CLP", 0),
    ("CNY", 2),
    ("COP", 2),
    ("COU", 2),
    ("CRC", 2),
    ("CUC", 2),
    ("CUP", 2),
    ("CVE", 2),
    ("CZK", 2),
    ("DJF", 0),
    ("DKK", 2),
    ("DOP", 2),
    ("DZD", 2),
    ("EGP", 2),
    ("ERN", 2),
    ("ETB", 2),
    ("EUR", 2),
    ("FJD", 2),
    ("FKP", 2),
    ("GBP", 2),
    ("GEL", 2),
    ("GHS", 2),
    ("GIP", 2),
    ("GMD", 2),
    ("GNF", 0),
    ("GTQ", 2),
    ("GYD", 2),
    ("HKD", 2),
    ("HNL", 2),
    ("HRK", 2),
    ("HTG", 2),
    ("HUF", 2),
    ("IDR", 2),
    ("ILS", 2),
    ("INR", 2),
    ("IQD", 3),
    ("IRR", 2),
    ("ISK", 0),
    ("JMD", 2),
    ("JOD", 3),
    ("JPY", 0),
    ("KES", 2),
    ("KGS", 2),
    ("KHR", 2),
    ("KMF", 0),
    ("KPW", 2),
    ("KRW", 0),
    ("KWD", 3),
    ("KYD", 2),
    ("KZT", 2),
    ("LAK", 2),
    ("LBP", 2),
    ("LKR", 2),
    ("LRD", 2),
    ("LSL", 2),
    ("LYD", 3),
    ("MAD", 2),
    ("MDL", 2),
    ("MGA", 2),
    ("MKD", 2),
    ("MMK", 2),
    ("MNT", 2),
    ("MOP", 2),
    ("MRU", 2),
    ("MUR", 2),
    ("MVR", 2),
    ("MWK", 2),
    ("MXN", 2),
    ("MXV", 2),
    ("MYR", 2),
    ("MZN", 2),
    ("NAD", 2),
    ("NGN", 2),
    ("NIO", 2),
    ("NOK", 2),
    ("NPR", 2),
    ("NZD", 2),
    ("OMR", 3),
    ("PAB", 2),
    ("PEN", 2),
    ("PGK", 2),
    ("PHP", 2),
    ("PKR", 2),
    ("PLN", 2),
    ("PYG", 0),
    ("QAR", 2),
    ("RON", 2),
    ("RSD", 2),
    ("RUB", 2),
    ("RWF", 0),
    ("SAR", 2),
    ("SBD", 2),
    ("SCR", 2),
    ("SDG", 2),
    ("SEK", 2),
    ("SGD", 2),
    ("SHP", 2),
    ("SLE", 2),
    ("SLL", 2),
    ("SOS", 2),
    ("SRD", 2),
    ("SSP", 2),
    ("STN", 2),
    ("SVC", 2),
    ("SYP", 2),
    ("SZL", 2),
    ("THB", 2),
    ("TJS", 2),
    ("TMT", 2),
    ("TND", 3),
    ("TOP", 2),
    ("TRY", 2),
    ("TTD", 2),
    ("TWD", 2),
    ("TZS", 2),
    ("UAH", 2),
    ("UGX", 0),
    ("USD", 2),
    ("USN", 2),
    ("UYI", 0),
    ("UYU", 2),
    ("UYW", 4),
    ("UZS", 2),
    ("VED", 2),
    ("VES", 2),
    ("VND", 0),
    ("VUV", 0),
    ("WST", 2),
    ("XAF", 0),
    ("XCD", 2),
    ("XOF", 0),
    ("XPF", 0),
    ("YER", 2),
    ("ZAR", 2),
    ("ZMW", 2),
    ("ZWL", 2),
];

/// A campaign's currency: an active ISO 4217 code, upper-case. Travels as
/// its code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(value_type = String, example = "USD"))]
pub struct Currency(
    /// Index into [`ISO_4217`].
    u16,
);

impl Currency {
    /// What a campaign created before currencies existed is in, and the
    /// default when none is configured.
    pub const USD: Currency = Currency(usd_index());

    /// Parses an ISO 4217 code, exactly three upper-case letters (`eur` is
    /// refused rather than guessed at). The message names `field`.
    pub fn parse(field: &str, raw: &str) -> Result<Self, String> {
        ISO_4217
            .binary_search_by(|(code, _)| (*code).cmp(raw))
            .map(|index| Currency(index as u16))
            .map_err(|_| {
                format!("{field} must be an ISO 4217 currency code in upper case, such as USD or EUR, not {raw:?}")
            })
    }

    /// Every code [`Currency::parse`] takes, sorted: what a form offers.
    pub fn codes() -> impl Iterator<Item = &'static str> {
        ISO_4217.iter().map(|(code, _)| *code)
    }

    pub fn code(self) -> &'static str {
        ISO_4217[usize::from(self.0)].0
    }

    /// Decimals of the currency's minor unit (2 for EUR, 0 for JPY).
    pub fn minor_units(self) -> u8 {
        ISO_4217[usize::from(self.0)].1
    }

    /// The default when a value was stored without one: [`Currency::USD`].
    pub fn legacy() -> Self {
        Self::USD
    }
}

const fn usd_index() -> u16 {
    let mut i = 0;
    while i < ISO_4217.len() {
        let code = ISO_4217[i].0.as_bytes();
        if code[0] == b'U' && code[1] == b'S' && code[2] == b'D' {
            return i as u16;
        }
        i += 1;
    }
    panic!("USD is in the table")
}

impl Default for Currency {
    fn default() -> Self {
        Self::USD
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl Serialize for Currency {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.code())
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        Currency::parse("currency", &raw).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_sorted_unique_and_three_letters() {
        assert!(ISO_4217.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(ISO_4217
            .iter()
            .all(|(c, u)| c.len() == 3 && c.bytes().all(|b| b.is_ascii_uppercase()) && *u <= 4));
    }

    #[test]
    fn codes_parse_with_their_minor_units() {
        for (code, units) in [("USD", 2), ("EUR", 2), ("JPY", 0), ("KWD", 3), ("CLF", 4)] {
            let c = Currency::parse("currency", code).unwrap();
            assert_eq!((c.code(), c.minor_units()), (code, units));
        }
        assert_eq!(Currency::USD.code(), "USD");
        for bad in ["usd", "US", "USDX", "XAU", "ABC", ""] {
            assert!(
                Currency::parse("currency", bad)
                    .unwrap_err()
                    .starts_with("currency must"),
                "{bad}"
            );
        }
        let c: Currency = serde_json::from_str("\"EUR\"").unwrap();
        assert_eq!(serde_json::to_string(&c).unwrap(), "\"EUR\"");
        assert!(serde_json::from_str::<Currency>("\"eur\"").is_err());
    }
}
