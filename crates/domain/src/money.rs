//! Exact money. Amounts travel as JSON numbers (never strings, never binary
//! floats): with serde_json's `arbitrary_precision`, `10000.00` is read digit for
//! digit into a [`Decimal`] and written back as `10000.00`.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The largest amount accepted anywhere: far beyond any real budget, far below
/// where `Decimal` arithmetic could overflow when millions of amounts are summed.
pub const MAX_AMOUNT: Decimal = Decimal::from_parts(2_764_472_320, 232_830, 0, false, 0); // 10^15

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(value_type = f64, example = 10000.00))]
pub struct Money(#[serde(with = "rust_decimal::serde::arbitrary_precision")] pub Decimal);

impl Money {
    pub const ZERO: Money = Money(Decimal::ZERO);

    pub fn amount(self) -> Decimal {
        self.0
    }

    /// An error message when the amount is negative or absurdly large.
    pub fn check(self) -> Result<(), &'static str> {
        if self.0.is_sign_negative() && !self.0.is_zero() {
            Err("must not be negative")
        } else if self.0 > MAX_AMOUNT {
            Err("must be at most 1000000000000000")
        } else {
            Ok(())
        }
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    #[test]
    fn max_amount_is_ten_to_the_fifteen() {
        assert_eq!(MAX_AMOUNT, Decimal::from_str("1000000000000000").unwrap());
    }

    #[test]
    fn round_trips_json_numbers_exactly() {
        let m: Money = serde_json::from_str("10000.00").unwrap();
        assert_eq!(m.0, Decimal::from_str("10000.00").unwrap());
        assert_eq!(serde_json::to_string(&m).unwrap(), "10000.00");
        let tiny: Money = serde_json::from_str("0.1").unwrap();
        let sum = (0..10).fold(Decimal::ZERO, |acc, _| acc + tiny.0);
        assert_eq!(sum, Decimal::ONE);
        assert!(Money(Decimal::from(-1)).check().is_err());
        assert!(Money(Decimal::ZERO).check().is_ok());
    }
}
